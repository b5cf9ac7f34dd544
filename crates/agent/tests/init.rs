//! `berth-agent init -- CMD...`, run as the real binary (not as PID 1: it makes itself a
//! child subreaper, so orphans come to it all the same).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_berth-agent");
/// Longest any one step of these tests may take before it counts as hung.
const PATIENCE: Duration = Duration::from_secs(10);

/// Starts `berth-agent init -- sh -c SCRIPT` with piped stdio.
fn start(script: &str) -> Child {
    Command::new(AGENT)
        .args(["init", "--", "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth-agent init")
}

/// Reads lines until one equals `want`; the lines before it. Fails (see [`next_line`])
/// when it does not come.
fn read_until(lines: &mpsc::Receiver<String>, child: &mut Child, want: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = next_line(lines, child);
        if line == want {
            return seen;
        }
        seen.push(line);
    }
}

/// Waits for init to exit, killing it (and failing) if it takes too long.
fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth-agent init did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pid(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32)
}

#[test]
fn exits_with_the_commands_code_and_passes_its_output_through() {
    let out = Command::new(AGENT).args(["init", "--", "sh", "-c", "echo hi; echo oops >&2; exit 7"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    assert_eq!(out.status.code(), Some(7));

    let out = Command::new(AGENT).args(["init", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn stdin_and_environment_are_the_commands() {
    let mut child = Command::new(AGENT)
        .args(["init", "--", "sh", "-c", "read line; echo \"$line $INIT_TEST_VAR\""])
        .env("INIT_TEST_VAR", "from-env")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"from-stdin\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-stdin from-env\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_command_that_cannot_start_is_127_when_missing_and_126_otherwise() {
    let out = Command::new(AGENT).args(["init", "--", "/nonexistent/berth-cmd"]).output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("berth-agent init: /nonexistent/berth-cmd: "), "stderr: {stderr}");

    // A directory is found but cannot be executed (EACCES).
    let out = Command::new(AGENT).args(["init", "--", "/"]).output().unwrap();
    assert_eq!(out.status.code(), Some(126), "stderr: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn sigterm_is_forwarded_to_the_command() {
    // "ready" comes once the trap is set, so the signal cannot arrive before it.
    let mut child = start("trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.1; done");
    let lines = lines_with_deadlines(child.stdout.take().unwrap());
    read_until(&lines, &mut child, "ready");
    kill(pid(&child), Signal::SIGTERM).unwrap();
    assert_eq!(next_line(&lines, &mut child), "got-term");
    assert_eq!(wait(&mut child).code(), Some(3));
    // Nothing more: stdout ended with the command.
    assert_eq!(lines.recv_timeout(PATIENCE), Err(mpsc::RecvTimeoutError::Disconnected));
}

#[test]
fn a_forwarded_signal_kills_a_command_without_a_handler() {
    // The command must not inherit init's blocked signals: were SIGTERM blocked in it,
    // `sleep` would never die of it and init would not exit (`wait` fails the test).
    // Both `sh` (before its exec) and `sleep` die of SIGTERM: 128 + 15.
    let mut child = start("echo ready; exec sleep 30");
    let lines = lines_with_deadlines(child.stdout.take().unwrap());
    read_until(&lines, &mut child, "ready");
    kill(pid(&child), Signal::SIGTERM).unwrap();
    assert_eq!(wait(&mut child).code(), Some(143));
}

#[test]
fn a_command_killed_by_sigkill_is_137() {
    let out = Command::new(AGENT).args(["init", "--", "sh", "-c", "kill -9 $$"]).output().unwrap();
    assert_eq!(out.status.code(), Some(137));
}

/// Orphans re-parented to init are reaped. The command starts a middle shell that starts
/// a grandchild in the background and exits at once, orphaning it; the kernel re-parents
/// the grandchild to init (the nearest subreaper). The grandchild reports its pid and its
/// parent once re-parented, then exits, becoming a zombie until its parent reaps it. The main command
/// stays alive meanwhile (it waits on stdin), so init is still running and only its
/// reaping can remove the zombie. The test checks that the grandchild's parent was init
/// (so the subreaper took effect and the check is not vacuous), then polls /proc until
/// the grandchild is gone — no fixed sleeps: a loaded machine only makes it slower, and
/// an init that does not reap leaves the zombie there until the deadline.
///
/// The grandchild's line and the main command's "started" come in either order (the
/// grandchild may be scheduled before its grandparent wakes from waiting for the middle
/// shell), and every read has a deadline: a line that never comes fails the test.
#[test]
fn orphans_come_to_init_and_are_reaped() {
    // The grandchild waits until its parent is no longer the middle shell, whose pid it
    // is given as $MIDDLE ($PPID will not do: the middle may be gone before it starts).
    // At most 10 s, so a broken re-parenting fails the assertions below instead of hanging.
    let orphan = "n=0; while read p c s ppid rest < /proc/$$/stat; [ $ppid = $MIDDLE ] && [ $n -lt 200 ]; \
                  do n=$((n+1)); sleep 0.05; done; echo \"orphan $$ $ppid\"";
    let mut child = Command::new(AGENT)
        .args(["init", "--", "sh", "-c", "sh -c 'MIDDLE=$$ sh -c \"$ORPHAN\" &'; echo started; read x; echo done"])
        .env("ORPHAN", orphan)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let init = child.id();
    let lines = lines_with_deadlines(child.stdout.take().unwrap());
    let first_two = [next_line(&lines, &mut child), next_line(&lines, &mut child)];
    let Some(line) = first_two.iter().find(|line| line.starts_with("orphan ")) else {
        panic!("no line from the orphan: {first_two:?}");
    };
    assert!(first_two.iter().any(|line| line == "started"), "{first_two:?}");
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 3, "{line:?}");
    let (orphan_pid, parent): (u32, u32) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    assert_eq!(parent, init, "the orphan was not re-parented to init");

    let deadline = Instant::now() + PATIENCE;
    loop {
        // Gone, or its pid already taken by a process that is not init's child.
        let stat = std::fs::read_to_string(format!("/proc/{orphan_pid}/stat")).unwrap_or_default();
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid != Some(init.to_string().as_str()) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the orphan {orphan_pid} is still init's child: {stat}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    drop(child.stdin.take()); // the main command's `read` ends
    assert_eq!(next_line(&lines, &mut child), "done");
    assert_eq!(wait(&mut child).code(), Some(0));
}

/// The lines of `stdout`, read on a thread of their own so that the test can give up on
/// one that never comes (see [`next_line`]).
fn lines_with_deadlines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line from [`lines_with_deadlines`]; kills init and fails when none comes
/// within [`PATIENCE`] or stdout ends.
fn next_line(lines: &mpsc::Receiver<String>, child: &mut Child) -> String {
    match lines.recv_timeout(PATIENCE) {
        Ok(line) => line,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no line from berth-agent init within {PATIENCE:?}: {e}");
        }
    }
}
