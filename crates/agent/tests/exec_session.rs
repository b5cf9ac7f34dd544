//! The control plane's helpers, run as the real binary: `exec-session` with framed
//! stdin, `--cwd` and `--env`, and `install`.

use berth_agent::exec_session::encode_frame;
use std::io::Write;
use std::process::{Command, Output, Stdio};

const AGENT: &str = env!("CARGO_BIN_EXE_berth-agent");

/// Runs the agent with `args`, writes `stdin` and closes it, and collects the output.
fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(AGENT)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth-agent");
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    // A writer thread: the command may exit before reading everything.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[test]
fn framed_stdin_reaches_the_command_which_runs_in_cwd_with_env_and_exits_with_its_code() {
    let frames = [encode_frame(b"hello "), encode_frame(b"framed\n"), encode_frame(b"")].concat();
    let script = "cat; pwd; echo $A; echo mark=$BERTH_EXEC; exit 3";
    let args =
        ["exec-session", "--token", "t", "--stdin-framed", "--cwd", "/tmp", "--env", "A=b", "--", "sh", "-c", script];
    let out = run(&args, &frames);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "hello framed\n/tmp\nb\nmark=t\n", "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn framed_stdin_closes_at_the_end_frame_even_with_the_connection_open() {
    // The test's end of stdin stays open until the command is done: only the end
    // frame can make `cat` finish.
    let mut child = Command::new(AGENT)
        .args(["exec-session", "--token", "t", "--stdin-framed", "--", "sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&[encode_frame(b"x\n"), encode_frame(b"")].concat()).unwrap();
    stdin.flush().unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "x\ndone\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn framed_commands_that_ignore_stdin_or_die_by_signal_report_their_status() {
    // Lots of input the command never reads: no hang, no EPIPE failure.
    let frames = [encode_frame(&vec![b'z'; 1 << 20]), encode_frame(b"")].concat();
    let out = run(&["exec-session", "--token", "t", "--stdin-framed", "--", "sh", "-c", "exit 5"], &frames);
    assert_eq!(out.status.code(), Some(5));

    let out = run(&["exec-session", "--token", "t", "--stdin-framed", "--", "sh", "-c", "kill -9 $$"], b"");
    assert_eq!(out.status.code(), Some(137));
}

#[test]
fn framed_command_leads_its_own_session_and_exec_kill_ends_it_with_stdin_still_open() {
    use std::io::{BufRead, BufReader};
    let token = format!("framed-kill-{}", std::process::id());
    // Prints its pid and session id (fields 1 and 6 of /proc/PID/stat), then waits.
    let script = "read -r pid comm state ppid pgrp sid rest < /proc/$$/stat; echo $pid $sid; exec sleep 100";
    let mut child = Command::new(AGENT)
        .args(["exec-session", "--token", &token, "--stdin-framed", "--", "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap(); // open, no end frame: the pump stays in its read
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let ids: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(ids.len(), 2, "{line:?}");
    assert_eq!(ids[0], ids[1], "the command leads its session");
    assert_ne!(ids[0], child.id().to_string(), "the command is a child, not exec-session itself");

    let kill = Command::new(AGENT).args(["exec-kill", &token]).output().unwrap();
    assert!(kill.status.success(), "{kill:?}");
    assert_eq!(child.wait().unwrap().code(), Some(137));
    drop(stdin);
}

#[test]
fn bad_cwd_env_or_command_fail_like_a_shell() {
    for framed in [false, true] {
        let with = |extra: &[&str]| {
            let mut args = vec!["exec-session", "--token", "t"];
            if framed {
                args.push("--stdin-framed");
            }
            args.extend_from_slice(extra);
            run(&args, &encode_frame(b""))
        };
        let out = with(&["--cwd", "/no/such/dir", "--", "true"]);
        assert_eq!(out.status.code(), Some(126));
        assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/dir"), "{out:?}");

        let out = with(&["--env", "NOEQUALS", "--", "true"]);
        assert_eq!(out.status.code(), Some(126));
        assert!(String::from_utf8_lossy(&out.stderr).contains("NOEQUALS"), "{out:?}");

        let out = with(&["--", "/no/such/program"]);
        assert_eq!(out.status.code(), Some(127), "{out:?}");
    }
}

#[test]
fn plain_exec_session_applies_cwd_and_env() {
    let args = ["exec-session", "--token", "t", "--cwd", "/", "--env", "A=1=2", "--", "sh", "-c", "pwd; echo $A"];
    let out = run(&args, b"");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/\n1=2\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn install_copies_the_binary_which_then_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("opt/berth/bin/berth-agent");
    let out = Command::new(AGENT).arg("install").arg(&dest).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777, 0o755);
    assert_eq!(std::fs::read_dir(dest.parent().unwrap()).unwrap().count(), 1, "no temporary file left");

    let version = Command::new(&dest).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("berth-agent {}", env!("CARGO_PKG_VERSION")));

    // Installing again replaces the file; a destination that cannot be made fails.
    assert!(Command::new(AGENT).arg("install").arg(&dest).status().unwrap().success());
    let blocked = tmp.path().join("file");
    std::fs::write(&blocked, "").unwrap();
    let out = Command::new(AGENT).arg("install").arg(blocked.join("sub/berth-agent")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("berth-agent install:"), "{out:?}");
}
