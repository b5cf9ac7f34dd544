//! `berth-agent init -- CMD [ARGS...]`: a tiny init for PID 1 of an instance, like tini
//! or docker-init, for runtimes without Docker's `--init` (Kubernetes).
//!
//! * CMD runs as this process's child with the same stdin, stdout, stderr and
//!   environment: PID 1's stdout stays the container's, `/proc/1/environ` the
//!   container's environment.
//! * SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH sent to init are
//!   passed on to CMD (init itself never dies of them).
//! * Every child that ends is reaped: CMD, and every orphan re-parented to init — to
//!   PID 1 by the kernel, and when init is not PID 1, because it makes itself a child
//!   subreaper (`PR_SET_CHILD_SUBREAPER`).
//! * As soon as CMD is gone, init exits with its exit code (128 + N when signal N killed
//!   it); orphans still running die with the container.
//! * When CMD cannot start, init says why on stderr (`berth-agent init: CMD: error`)
//!   and exits 127 when it does not exist, 126 for any other failure, like a shell.
//!
//! How, without unsafe code or signal handlers: those signals and SIGCHLD are blocked
//! before CMD is spawned, so they wait as pending, and one thread takes them one at a
//! time with `sigwait(3)`. Blocked signals are queued even for PID 1, which the kernel
//! otherwise spares the signals it has no handler for. This only works single-threaded
//! — a thread with the signals unblocked would take them — so `main` runs init before
//! anything starts a thread.
//!
//! CMD must not start with them blocked (SIGTERM would never reach a program that does
//! not unblock it), and Rust's `std::process::Command` passes the parent's signal mask
//! on (since Rust 1.66; only `pre_exec`, which is unsafe, could change it in the child).
//! So init's child is first this same binary again, `/proc/self/exe init
//! --exec-unblocking SIGNALS -- CMD...` (see [`exec_unblocking`]): it unblocks the
//! signals init blocked (those that were not blocked when init started: an inherited
//! mask, `nohup`'s say, is kept), then replaces itself with CMD — same pid, stdio and
//! environment. A signal that arrives in that instant acts on the helper as it would
//! on a CMD without handlers.
//!
//! Limit: started with SIGCHLD *ignored* (a disposition exec keeps; no container runtime
//! does this), the kernel reaps children itself and sends no SIGCHLD, so init could not
//! see CMD end. Changing a disposition needs `sigaction`, which is unsafe in `nix`, so
//! init only warns (it reads its ignored signals in `/proc/self/status`).

use nix::errno::Errno;
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::ffi::{OsStr, OsString};
use std::io::ErrorKind;
use std::os::unix::process::CommandExt;

/// The signals init passes on to its command.
pub const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];
/// Exit code when the command does not exist (as a shell does).
const NOT_FOUND: i32 = 127;
/// Exit code for every other failure to start the command (as a shell does).
const CANNOT_RUN: i32 = 126;

/// Runs `command` (program and arguments) as init's child until it is gone, forwarding
/// signals to it and reaping every child that ends; answers the exit code to exit with.
/// Must be called while the process has a single thread.
pub fn run(command: &[OsString]) -> i32 {
    let Some(program) = command.first() else {
        eprintln!("berth-agent init: no command given");
        return CANNOT_RUN;
    };
    let mut waited = SigSet::empty();
    for sig in FORWARDED {
        waited.add(sig);
    }
    waited.add(Signal::SIGCHLD);
    if sigchld_ignored() {
        eprintln!("berth-agent init: started with SIGCHLD ignored: the command's end cannot be seen");
    }
    let mut before = SigSet::empty();
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&waited), Some(&mut before)) {
        eprintln!("berth-agent init: cannot block signals: {e}");
        return CANNOT_RUN;
    }
    // What the helper unblocks: what init blocked that was not blocked already.
    let unblock: Vec<String> =
        waited.iter().filter(|sig| !before.contains(*sig)).map(|sig| (sig as i32).to_string()).collect();
    // Orphans come to init even when it is not PID 1 (tests, `docker run` without a
    // PID namespace of its own). Harmless as PID 1, where the kernel does it anyway.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("berth-agent init: cannot become a child subreaper: {e}");
    }
    let child = match std::process::Command::new("/proc/self/exe")
        .args(["init", "--exec-unblocking", &unblock.join(","), "--"])
        .args(command)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("berth-agent init: {}: cannot start berth-agent again (/proc/self/exe): {e}", name(program));
            return CANNOT_RUN;
        }
    };
    // The `Child` is not waited for: reaping with pid -1 below takes its status.
    let main = Pid::from_raw(child.id() as i32);
    drop(child);
    loop {
        let sig = match waited.wait() {
            Ok(sig) => sig,
            Err(e) => {
                eprintln!("berth-agent init: waiting for signals: {e}");
                return 1;
            }
        };
        if sig != Signal::SIGCHLD {
            // ESRCH: the command has just ended; its SIGCHLD is pending.
            let _ = kill(main, sig);
            continue;
        }
        if let Some(code) = reap(main) {
            return code;
        }
    }
}

/// The helper init runs as its child (`init --exec-unblocking SIGNALS -- CMD...`):
/// unblocks `signals` (comma-separated numbers) and replaces itself with `command`.
/// Returns only when that fails: the exit code (127 when CMD does not exist, else 126),
/// having said why on stderr.
pub fn exec_unblocking(signals: &str, command: &[OsString]) -> i32 {
    let Some((program, args)) = command.split_first() else {
        eprintln!("berth-agent init: no command given");
        return CANNOT_RUN;
    };
    let mut unblock = SigSet::empty();
    for number in signals.split(',').filter(|n| !n.is_empty()) {
        match number.parse::<i32>().map_err(|_| Errno::EINVAL).and_then(Signal::try_from) {
            Ok(sig) => unblock.add(sig),
            Err(_) => {
                eprintln!("berth-agent init: bad signal number {number:?}");
                return CANNOT_RUN;
            }
        }
    }
    if let Err(e) = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&unblock), None) {
        eprintln!("berth-agent init: cannot unblock signals: {e}");
        return CANNOT_RUN;
    }
    let e = std::process::Command::new(program).args(args).exec();
    eprintln!("berth-agent init: {}: {e}", name(program));
    if e.kind() == ErrorKind::NotFound {
        NOT_FOUND
    } else {
        CANNOT_RUN
    }
}

fn name(program: &OsStr) -> std::borrow::Cow<'_, str> {
    program.to_string_lossy()
}

/// Reaps every child that has ended (one SIGCHLD may stand for several); answers the
/// exit code the main child's end calls for once it is among them.
fn reap(main: Pid) -> Option<i32> {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == main => return Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == main => return Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) => return None,
            Ok(_) | Err(Errno::EINTR) => {}
            // No child left, yet the main one was never seen: the kernel reaped it itself
            // (SIGCHLD inherited as ignored, see the module's doc) and its status is lost.
            Err(Errno::ECHILD) => {
                eprintln!("berth-agent init: the command is gone but its exit status is lost");
                return Some(1);
            }
            Err(e) => {
                eprintln!("berth-agent init: waitpid: {e}");
                return Some(1);
            }
        }
    }
}

/// Whether this process ignores SIGCHLD (`SigIgn` in `/proc/self/status`, a hex mask
/// whose bit N-1 is signal N).
fn sigchld_ignored() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (Signal::SIGCHLD as i32 - 1)) != 0)
}
