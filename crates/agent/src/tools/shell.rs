//! The `shell` tool: `sh -c` in its own process group, with a working
//! directory, a timeout and an output cap. A timed-out or cancelled command is
//! killed with its whole group, so nothing it started outlives the turn.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::{sleep_until, Instant};

/// How long to keep reading after the shell exits, while something it put in
/// the background still holds the output pipe.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// Kills a process group when dropped, unless disarmed.
struct GroupKiller(Option<i32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // ESRCH (group already gone) is fine.
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

/// Runs `command` and describes the outcome for the model.
pub async fn run(command: &str, cwd: &Path, timeout: Duration, cap: usize, user: Option<super::ToolUser>) -> String {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    super::confine::confine(&mut cmd, user);
    // Merge stderr into stdout so the model sees both in order.
    cmd.arg("-c")
        .arg(format!("exec 2>&1\n{command}"))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return format!("error: could not start /bin/sh in {}: {e}", cwd.display()),
    };
    let mut killer = GroupKiller(child.id().map(|id| id as i32));
    let Some(mut stdout) = child.stdout.take() else {
        return "error: no output pipe".into();
    };

    let mut out = Vec::new();
    let mut total = 0usize;
    let mut chunk = [0u8; 8192];
    let mut deadline = Instant::now() + timeout;
    let (mut status, mut eof, mut timed_out) = (None, false, false);
    while !(eof && status.is_some()) {
        tokio::select! {
            n = stdout.read(&mut chunk), if !eof => match n {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => {
                    total += n;
                    let room = cap.saturating_sub(out.len());
                    out.extend_from_slice(&chunk[..n.min(room)]);
                }
            },
            s = child.wait(), if status.is_none() => {
                status = Some(s);
                deadline = deadline.min(Instant::now() + DRAIN_AFTER_EXIT);
            },
            _ = sleep_until(deadline) => {
                timed_out = status.is_none();
                break;
            }
        }
    }
    if timed_out {
        drop(killer); // kill the group now, and reap the shell
        let _ = child.wait().await;
    } else {
        // Finished normally: whatever it deliberately left running may stay.
        killer.0 = None;
    }

    let mut report = String::new();
    match (&status, timed_out) {
        (_, true) => report.push_str(&format!(
            "timed out after {}s; the command and everything it started were killed\n",
            timeout.as_secs()
        )),
        (Some(Ok(s)), _) => match s.code() {
            Some(code) => report.push_str(&format!("exit code: {code}\n")),
            None => report.push_str(&format!("terminated by a signal ({s})\n")),
        },
        (Some(Err(e)), _) => report.push_str(&format!("error waiting for the command: {e}\n")),
        (None, false) => {}
    }
    report.push_str(&String::from_utf8_lossy(&out));
    if total > out.len() {
        report.push_str(&format!("\n[output truncated: showed the first {} of {total} bytes]", out.len()));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_code_output_and_stderr() {
        let r = run("echo out; echo err >&2; exit 3", Path::new("/"), Duration::from_secs(5), 1000, None).await;
        assert!(r.starts_with("exit code: 3\n"), "{r}");
        assert!(r.contains("out\nerr\n"), "{r}");
    }

    #[tokio::test]
    async fn output_is_capped() {
        let r = run("yes | head -c 100000", Path::new("/"), Duration::from_secs(5), 100, None).await;
        assert!(r.contains("[output truncated: showed the first 100 of 100000 bytes]"), "{r}");
    }

    #[tokio::test]
    async fn timeout_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let r = run("(sleep 3; touch late) & sleep 30", dir.path(), Duration::from_millis(300), 1000, None).await;
        assert!(r.starts_with("timed out"), "{r}");
        assert!(started.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert!(!dir.path().join("late").exists(), "background child survived");
    }
}
