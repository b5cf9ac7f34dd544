//! Commands the control plane runs in an instance (exec, shell) go through the
//! agent binary, so they can be killed whole from inside the instance:
//!
//! * `berth-agent exec-session --token T -- CMD...` makes the command the leader of
//!   a session of its own (when it is not one already), marks it and everything it
//!   starts with `BERTH_EXEC=T` in the environment, and becomes the command.
//! * `berth-agent exec-kill T` SIGKILLs every process of those sessions and every
//!   process still marked, round after round until none is left, so a forking loop
//!   dies too.
//!
//! All of it happens in the instance's own PID namespace: nothing on the host is
//! looked at or signalled. PID 1 and the killer itself are never targets.

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::time::Duration;

/// The environment variable that marks an exec's processes.
pub const EXEC_MARK: &str = "BERTH_EXEC";
/// Rounds of killing before giving up on processes that keep appearing.
const ROUNDS: usize = 200;

/// Becomes `cmd` in a session of its own, marked with `token`. Returns only on failure.
pub fn run_session(token: &str, cmd: &[String]) -> std::io::Error {
    let Some((program, args)) = cmd.split_first() else {
        return std::io::Error::new(std::io::ErrorKind::InvalidInput, "exec-session: no command given");
    };
    // Fails when this process already leads a session (a TTY exec): fine either way.
    let _ = nix::unistd::setsid();
    std::process::Command::new(program).args(args).env(EXEC_MARK, token).exec()
}

struct Proc {
    pid: i32,
    sid: i32,
    marked: bool,
}

fn scan(mark: &[u8]) -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the command name (in parentheses, may hold spaces): state ppid pgrp session.
            let after = &stat[stat.rfind(')')? + 1..];
            let sid = after.split_whitespace().nth(3)?.parse().ok()?;
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let marked = environ.split(|b| *b == 0).any(|kv| kv == mark);
            Some(Proc { pid, sid, marked })
        })
        .collect()
}

/// Kills every process of the exec marked `token`; answers how many were signalled.
pub fn kill_session(token: &str) -> Result<usize, String> {
    let mark = format!("{EXEC_MARK}={token}").into_bytes();
    let me = std::process::id() as i32;
    // Sessions led by a marked process: their members die even if they dropped the mark.
    let mut sessions = HashSet::new();
    let mut signalled = 0;
    let mut refused = Vec::new();
    for _ in 0..ROUNDS {
        let procs = scan(&mark);
        sessions.extend(procs.iter().filter(|p| p.marked && p.sid == p.pid).map(|p| p.sid));
        let targets: Vec<i32> = procs
            .iter()
            .filter(|p| p.pid != 1 && p.pid != me && (p.marked || sessions.contains(&p.sid)))
            .map(|p| p.pid)
            .collect();
        if targets.is_empty() {
            return if refused.is_empty() { Ok(signalled) } else { Err(refused.join("; ")) };
        }
        for pid in targets {
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) => signalled += 1,
                Err(Errno::ESRCH) => {}
                Err(e) => refused.push(format!("pid {pid}: {e}")),
            }
        }
        if !refused.is_empty() {
            return Err(refused.join("; "));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(format!("processes of exec {token} kept appearing after {ROUNDS} rounds of SIGKILL"))
}
