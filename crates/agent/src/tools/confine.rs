//! Who the tools run as, and what they do not inherit.
//!
//! The agent holds secrets a prompt-injected tool call must not read: its gateway
//! token and its LLM credentials. Tools therefore run without them in their
//! environment and, when `BERTH_AGENT_TOOL_USER` names a user (berth sets
//! `1000:1000` in every instance), as that unprivileged user: it cannot read the
//! agent's `/proc/<pid>/environ` or memory (another user, and the agent is not
//! dumpable), nor the agent's data directory (root's, mode 0700). The file tools
//! run in a child process as that user too, so `read_file /proc/self/environ` reads
//! the child's own, scrubbed environment.

use super::files::FileOp;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Environment variables holding the agent's secrets: never passed to a tool.
pub const SECRET_VARS: &[&str] =
    &["BERTH_GATEWAY_TOKEN", "BERTH_LLM_API_KEY", "BERTH_TOOLS_TOKEN", "BERTH_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"];

/// Longest a file tool may take (a read of a FIFO, a write to a full disk).
const FILE_TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// The numeric user and group tools run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolUser {
    pub uid: u32,
    pub gid: u32,
}

impl ToolUser {
    /// Parses `UID[:GID]` (the group defaults to the user's number).
    pub fn parse(s: &str) -> Option<Self> {
        let (uid, gid) = match s.trim().split_once(':') {
            Some((u, g)) => (u.parse().ok()?, g.parse().ok()?),
            None => {
                let u = s.trim().parse().ok()?;
                (u, u)
            }
        };
        Some(ToolUser { uid, gid })
    }

    /// `BERTH_AGENT_TOOL_USER`: `Ok(None)` when unset or empty, `Err` naming a bad value.
    pub fn from_env() -> Result<Option<Self>, String> {
        match std::env::var("BERTH_AGENT_TOOL_USER").ok().filter(|u| !u.trim().is_empty()) {
            None => Ok(None),
            Some(u) => Self::parse(&u)
                .map(Some)
                .ok_or_else(|| format!("BERTH_AGENT_TOOL_USER must be UID[:GID] (numbers), not `{u}`")),
        }
    }
}

/// Makes `cmd` a tool's command: the agent's secrets removed from its environment,
/// and run as `user` when one is set.
pub fn confine(cmd: &mut tokio::process::Command, user: Option<ToolUser>) {
    for var in SECRET_VARS {
        cmd.env_remove(var);
    }
    if let Some(u) = user {
        cmd.uid(u.uid).gid(u.gid).env("USER", "agent").env("LOGNAME", "agent");
    }
}

/// Runs a file tool: in this process when tools run as the agent's own user, else in
/// a child (`berth-agent file-tool`) as the tool user, fed the operation on stdin.
pub async fn file_op(user: Option<ToolUser>, op: FileOp) -> String {
    let Some(user) = user else { return op.perform().await };
    file_op_as(user, &op).await.unwrap_or_else(|e| format!("error: the file tool could not run: {e}"))
}

async fn file_op_as(user: ToolUser, op: &FileOp) -> io::Result<String> {
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.arg("file-tool").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).kill_on_drop(true);
    confine(&mut cmd, Some(user));
    let mut child = cmd.spawn()?;
    let input = serde_json::to_vec(op).map_err(io::Error::other)?;
    let mut stdin = child.stdin.take().ok_or_else(|| io::Error::other("no stdin"))?;
    let mut stdout = child.stdout.take().ok_or_else(|| io::Error::other("no stdout"))?;
    let run = async {
        let write = async move {
            stdin.write_all(&input).await?;
            stdin.shutdown().await
        };
        let mut out = Vec::new();
        let (w, r) = tokio::join!(write, stdout.read_to_end(&mut out));
        w?;
        r?;
        child.wait().await?;
        Ok::<_, io::Error>(String::from_utf8_lossy(&out).into_owned())
    };
    tokio::time::timeout(FILE_TOOL_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Ok(format!("error: the file tool took longer than {}s", FILE_TOOL_TIMEOUT.as_secs())))
}

/// The `berth-agent file-tool` child: reads one [`FileOp`] from stdin, prints its result.
pub fn file_tool_main() -> io::Result<()> {
    let mut input = Vec::new();
    io::Read::read_to_end(&mut io::stdin(), &mut input)?;
    let op: FileOp = serde_json::from_slice(&input).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let text = tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(op.perform());
    io::Write::write_all(&mut io::stdout(), text.as_bytes())
}

/// Readies the instance for tools running as `user`: the agent's data directory is
/// root's alone (0700), and the home directory belongs to the tool user. A home still
/// owned by root (made before tools ran as another user) is handed over once,
/// everything in it but the data directory, without following links or leaving its
/// filesystem.
pub fn prepare(home: &Path, data_dir: &Path, user: ToolUser) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(data_dir)?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))?;
    let meta = std::fs::metadata(home)?;
    if meta.uid() == user.uid {
        return Ok(());
    }
    hand_over(home, data_dir, meta.dev(), user)
}

fn hand_over(dir: &Path, skip: &Path, dev: u64, user: ToolUser) -> io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(user.uid), Some(user.gid))?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path == skip {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() && meta.dev() == dev {
            hand_over(&path, skip, dev, user)?;
        } else if meta.dev() == dev {
            std::os::unix::fs::lchown(&path, Some(user.uid), Some(user.gid))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_users_parse() {
        assert_eq!(ToolUser::parse("1000:1001"), Some(ToolUser { uid: 1000, gid: 1001 }));
        assert_eq!(ToolUser::parse(" 1000 "), Some(ToolUser { uid: 1000, gid: 1000 }));
        assert_eq!(ToolUser::parse("agent"), None);
        assert_eq!(ToolUser::parse("1000:"), None);
    }

    #[tokio::test]
    async fn secrets_are_not_passed_to_tools() {
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.args(["-c", "env"]).env("BERTH_GATEWAY_TOKEN", "gw-secret").env("KEEP", "kept");
        confine(&mut cmd, None);
        let out = String::from_utf8(cmd.output().await.unwrap().stdout).unwrap();
        assert!(out.contains("KEEP=kept"), "{out}");
        assert!(!out.contains("gw-secret"), "{out}");
    }
}
