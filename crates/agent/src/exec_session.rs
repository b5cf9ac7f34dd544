//! Commands the control plane runs in an instance (exec, shell) go through the
//! agent binary, so they can be killed whole from inside the instance:
//!
//! * `berth-agent exec-session --token T [--cwd DIR] [--env KEY=VALUE]... -- CMD...`
//!   makes the command the leader of a session of its own (when it is not one
//!   already), marks it and everything it starts with `BERTH_EXEC=T` in the
//!   environment, and becomes the command. `--cwd` changes to DIR first (a missing DIR
//!   is a failure naming it); each `--env` adds KEY=VALUE to the command's environment
//!   (an entry without `=`, or with an empty KEY, is refused; the mark always wins over
//!   an `--env BERTH_EXEC=...`).
//! * `berth-agent exec-session --stdin-framed ...` (same flags) is for runtimes whose
//!   exec API cannot half-close stdin (Kubernetes' WebSocket exec: closing stdin closes
//!   the whole stream, losing the rest of the output and the exit status). Its own
//!   stdin carries *frames* (see below); it runs the command as a child — a second
//!   `exec-session` of this same binary, so the command still leads its own marked
//!   session exactly as above — with a pipe as stdin, copies the frames' bytes into the
//!   pipe and closes it at the end frame, waits for the command and exits with its
//!   exit code (128 + N when killed by signal N). The command's stdout and stderr are
//!   this process's own.
//! * `berth-agent exec-kill T` SIGKILLs every process of those sessions and every
//!   process still marked, round after round until none is left, so a forking loop
//!   dies too.
//!
//! When exec-session cannot start the command it prints why on stderr and exits 127
//! when the command does not exist, 126 for any other failure (bad `--env`, missing
//! `--cwd`, ...), like a shell.
//!
//! # Frame format (`--stdin-framed`)
//!
//! A frame is a 4-byte length, an unsigned 32-bit integer in big-endian (network) byte
//! order, followed by exactly that many bytes of input. Frames split across reads, or
//! several in one read, are fine: only the byte stream matters. A frame of length 0
//! (the four bytes `00 00 00 00`) is the *end frame*: the command's stdin is closed
//! there, and anything after it is ignored. If exec-session's own stdin ends (EOF or
//! a read error) at a frame boundary before any end frame, input ends the same way.
//! If it ends inside a frame (a truncated length or payload), the payload bytes that
//! did arrive have already been passed on; the input ends there too, and a warning
//! goes to stderr. See [`encode_frame`] and [`FrameDecoder`].
//!
//! All of it happens in the instance's own PID namespace: nothing on the host is
//! looked at or signalled. PID 1 and the killer itself are never targets.

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The environment variable that marks an exec's processes.
pub const EXEC_MARK: &str = "BERTH_EXEC";
/// Rounds of killing before giving up on processes that keep appearing.
const ROUNDS: usize = 200;
/// Exit code when the command does not exist (as a shell does).
const NOT_FOUND: i32 = 127;
/// Exit code for every other failure to start the command (as a shell does).
const CANNOT_RUN: i32 = 126;

/// How an exec session runs its command, besides the command itself and its token.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Directory to change to before starting the command (`--cwd`).
    pub cwd: Option<PathBuf>,
    /// `KEY=VALUE` entries added to the command's environment (`--env`), as given;
    /// checked with [`parse_env`].
    pub env: Vec<String>,
}

/// Why an exec session could not start its command: the message for stderr and the
/// exit code to exit with (127 when the command does not exist, else 126).
#[derive(Debug, PartialEq, Eq)]
pub struct SessionError {
    pub message: String,
    pub code: i32,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SessionError {}

fn cannot_run(message: String) -> SessionError {
    SessionError { message, code: CANNOT_RUN }
}

/// Splits an `--env` entry at its first `=`: `A=b=c` sets `A` to `b=c`, `A=` sets it
/// empty. An entry without `=` or with an empty key is refused.
pub fn parse_env(entry: &str) -> Result<(&str, &str), SessionError> {
    match entry.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key, value)),
        Some(_) => Err(cannot_run(format!("exec-session: --env {entry:?}: the variable name is empty"))),
        None => Err(cannot_run(format!("exec-session: --env {entry:?}: expected KEY=VALUE (no `=` in it)"))),
    }
}

/// Checks the options and applies the working directory to this process; answers the
/// environment entries.
fn prepare(opts: &SessionOptions) -> Result<Vec<(&str, &str)>, SessionError> {
    let env = opts.env.iter().map(|e| parse_env(e)).collect::<Result<Vec<_>, _>>()?;
    if let Some(dir) = &opts.cwd {
        std::env::set_current_dir(dir)
            .map_err(|e| cannot_run(format!("exec-session: cannot change to directory {}: {e}", dir.display())))?;
    }
    Ok(env)
}

/// Becomes `cmd` in a session of its own, marked with `token`, in `opts.cwd` and with
/// `opts.env` added. Returns only on failure.
pub fn run_session(token: &str, opts: &SessionOptions, cmd: &[String]) -> SessionError {
    let Some((program, args)) = cmd.split_first() else {
        return cannot_run("exec-session: no command given".into());
    };
    let env = match prepare(opts) {
        Ok(env) => env,
        Err(e) => return e,
    };
    // Fails when this process already leads a session (a TTY exec): fine either way.
    let _ = nix::unistd::setsid();
    let err = std::process::Command::new(program).args(args).envs(env).env(EXEC_MARK, token).exec();
    let code = if err.kind() == std::io::ErrorKind::NotFound { NOT_FOUND } else { CANNOT_RUN };
    SessionError { message: format!("{program}: {err}"), code }
}

/// `--stdin-framed`: runs `cmd` as [`run_session`] would, but as a child whose stdin is
/// a pipe fed with the frames read from this process's stdin (see the module docs);
/// waits for it and answers the exit code to exit with: the command's, or 128 + N when
/// signal N killed it.
///
/// The child is this same binary's plain `exec-session` (`/proc/self/exe`, else
/// [`std::env::current_exe`]), so the command leads a marked session of its own, as
/// without the flag; this process leaves the caller's session too (`setsid`) but is
/// not marked, so `exec-kill` kills the command and this process then exits 137.
pub fn run_framed_session(token: &str, opts: &SessionOptions, cmd: &[String]) -> Result<i32, SessionError> {
    if cmd.is_empty() {
        return Err(cannot_run("exec-session: no command given".into()));
    }
    // The working directory is inherited; the entries go on as flags, so that they
    // reach the command only (not the inner agent's own flag parsing).
    prepare(opts)?;
    let _ = nix::unistd::setsid();
    let mut inner = std::process::Command::new(self_exe());
    inner.arg("exec-session").arg(format!("--token={token}"));
    for entry in &opts.env {
        inner.arg(format!("--env={entry}"));
    }
    let mut child = inner
        .arg("--")
        .args(cmd)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| cannot_run(format!("exec-session: starting {}: {e}", cmd[0])))?;
    let pipe = child.stdin.take().expect("stdin is piped");
    // Detached: it may sit in a read of our stdin after the command is gone; exiting
    // ends it. The wait below never depends on it.
    std::thread::spawn(move || {
        if let Err(e) = pump_frames(std::io::stdin().lock(), pipe) {
            eprintln!("exec-session: {e}");
        }
    });
    let status = child.wait().map_err(|e| cannot_run(format!("exec-session: waiting for {}: {e}", cmd[0])))?;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(Signal::SIGKILL as i32)))
}

/// This binary: `/proc/self/exe` (still there if the file was replaced), else what
/// [`std::env::current_exe`] answers.
pub fn self_exe() -> PathBuf {
    let proc = Path::new("/proc/self/exe");
    if proc.exists() {
        return proc.to_path_buf();
    }
    std::env::current_exe().unwrap_or_else(|_| proc.to_path_buf())
}

/// Copies the payload of the frames read from `input` into `pipe` and closes the pipe
/// (drops it) at the end frame or when `input` ends or fails. When the reader of the
/// pipe has gone (EPIPE: the command exited or closed its stdin) the rest of the
/// input is still read, up to its end, and dropped. Answers an error only when the
/// input ended inside a frame.
pub fn pump_frames(mut input: impl Read, mut pipe: impl Write) -> Result<(), FrameError> {
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0; 64 * 1024];
    let mut payload = Vec::with_capacity(buf.len());
    let mut writable = true;
    while !decoder.is_done() {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        payload.clear();
        decoder.feed(&buf[..n], &mut payload);
        if writable && !payload.is_empty() && pipe.write_all(&payload).and_then(|()| pipe.flush()).is_err() {
            writable = false;
        }
    }
    drop(pipe);
    decoder.finish()
}

/// Encodes `buf` as one frame: its length as a big-endian u32, then the bytes. An
/// empty slice encodes the end frame (`00 00 00 00`), so split empty writes out
/// rather than sending them.
///
/// Panics if `buf` is longer than `u32::MAX` bytes; send such input as several frames.
pub fn encode_frame(buf: &[u8]) -> Vec<u8> {
    let len = u32::try_from(buf.len()).expect("a frame holds at most u32::MAX bytes");
    let mut frame = Vec::with_capacity(4 + buf.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(buf);
    frame
}

/// Input that ended inside a frame (see [`FrameDecoder::finish`]).
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Only this many of a length's 4 bytes arrived.
    Length { have: usize },
    /// A frame's payload lacked this many bytes.
    Payload { missing: u32 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Length { have } => {
                write!(f, "stdin ended inside a frame's length ({have} of 4 bytes); input ends there")
            }
            FrameError::Payload { missing } => {
                write!(f, "stdin ended inside a frame ({missing} bytes missing); input ends there")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Decodes the frame stream of `--stdin-framed` incrementally, whatever the reads'
/// boundaries: payload bytes come out as soon as they arrive (a frame is never
/// buffered whole), and nothing comes out after the end frame.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// The length being read, and how many of its bytes arrived.
    length: [u8; 4],
    have: usize,
    /// Payload bytes still to come in the current frame.
    left: u32,
    done: bool,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the payload bytes in `input` to `out`; answers how many bytes of
    /// `input` it used: all of them, unless the end frame came, after which the rest
    /// is not looked at.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let mut used = 0;
        while used < input.len() && !self.done {
            let rest = &input[used..];
            if self.left > 0 {
                let n = rest.len().min(self.left as usize);
                out.extend_from_slice(&rest[..n]);
                self.left -= n as u32;
                used += n;
            } else {
                let n = rest.len().min(4 - self.have);
                self.length[self.have..self.have + n].copy_from_slice(&rest[..n]);
                self.have += n;
                used += n;
                if self.have == 4 {
                    self.have = 0;
                    self.left = u32::from_be_bytes(self.length);
                    self.done = self.left == 0;
                }
            }
        }
        used
    }

    /// Whether the end frame came.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// At the end of the input: fine after the end frame or between frames, an error
    /// inside one (whose payload so far was already given out by [`Self::feed`]).
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.done || self.left == 0 && self.have == 0 {
            Ok(())
        } else if self.left > 0 {
            Err(FrameError::Payload { missing: self.left })
        } else {
            Err(FrameError::Length { have: self.have })
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_chunks(stream: &[u8], chunk: usize) -> (Vec<u8>, FrameDecoder) {
        let mut decoder = FrameDecoder::new();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            decoder.feed(piece, &mut out);
        }
        (out, decoder)
    }

    #[test]
    fn encode_frame_is_a_big_endian_length_then_the_bytes() {
        assert_eq!(encode_frame(b"hi"), [0, 0, 0, 2, b'h', b'i']);
        assert_eq!(encode_frame(&[7; 300])[..4], [0, 0, 1, 44]);
        assert_eq!(encode_frame(&[7; 300]).len(), 304);
        assert_eq!(encode_frame(b""), [0, 0, 0, 0], "an empty slice is the end frame");
    }

    #[test]
    fn frames_split_anywhere_across_reads_decode_the_same() {
        let stream =
            [encode_frame(b"hello "), encode_frame(b"world\n"), encode_frame(&[0xff; 1000]), encode_frame(b"")]
                .concat();
        let expected = [&b"hello world\n"[..], &[0xff; 1000]].concat();
        for chunk in [1, 2, 3, 4, 5, 7, 1024, stream.len()] {
            let (out, decoder) = decode_in_chunks(&stream, chunk);
            assert_eq!(out, expected, "chunks of {chunk}");
            assert!(decoder.is_done());
            assert_eq!(decoder.finish(), Ok(()));
        }
    }

    #[test]
    fn several_frames_in_one_read_and_nothing_after_the_end_frame() {
        let stream = [encode_frame(b"a"), encode_frame(b"bc"), encode_frame(b""), encode_frame(b"ignored")].concat();
        let mut decoder = FrameDecoder::new();
        let mut out = Vec::new();
        let used = decoder.feed(&stream, &mut out);
        assert_eq!(out, b"abc");
        assert_eq!(used, 4 + 1 + 4 + 2 + 4, "stops right after the end frame");
        assert!(decoder.is_done());
        assert_eq!(decoder.feed(b"more", &mut out), 0);
        assert_eq!(out, b"abc");
    }

    #[test]
    fn input_ending_between_frames_is_fine_and_inside_one_is_an_error() {
        let (out, decoder) = decode_in_chunks(&encode_frame(b"abc"), 2);
        assert_eq!((out.as_slice(), decoder.is_done(), decoder.finish()), (&b"abc"[..], false, Ok(())));

        let (out, decoder) = decode_in_chunks(&encode_frame(b"abcdef")[..7], 3);
        assert_eq!(out, b"abc", "the payload that arrived is given out");
        assert_eq!(decoder.finish(), Err(FrameError::Payload { missing: 3 }));

        let (out, decoder) = decode_in_chunks(&[encode_frame(b"x"), vec![0, 0]].concat(), 1);
        assert_eq!(out, b"x");
        assert_eq!(decoder.finish(), Err(FrameError::Length { have: 2 }));
    }

    #[test]
    fn the_pump_closes_the_pipe_at_the_end_frame_and_survives_a_closed_reader() {
        let input = [encode_frame(b"one "), encode_frame(b"two"), encode_frame(b""), encode_frame(b"late")].concat();
        let mut written = Vec::new();
        assert_eq!(pump_frames(&input[..], &mut written), Ok(()));
        assert_eq!(written, b"one two");

        struct Gone;
        impl Write for Gone {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert_eq!(pump_frames(&input[..], Gone), Ok(()));
        assert_eq!(pump_frames(&encode_frame(b"cut")[..5], Vec::new()), Err(FrameError::Payload { missing: 2 }));
    }

    #[test]
    fn env_entries_need_a_key_and_an_equals_sign() {
        assert_eq!(parse_env("A=b").unwrap(), ("A", "b"));
        assert_eq!(parse_env("A=b=c").unwrap(), ("A", "b=c"));
        assert_eq!(parse_env("A=").unwrap(), ("A", ""));
        let err = parse_env("NOEQUALS").unwrap_err();
        assert_eq!(err.code, 126);
        assert!(err.message.contains("NOEQUALS") && err.message.contains("KEY=VALUE"), "{err}");
        assert_eq!(parse_env("=x").unwrap_err().code, 126);
    }
}
