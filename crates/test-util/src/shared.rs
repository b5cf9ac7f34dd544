//! The server behind [`crate::TestServer::shared`]: one `berth server` per test
//! binary, run and options, used by every test of that binary that asks for it.
//!
//! nextest runs each test in a process of its own, so the sharing is between
//! processes, not a `static` (under `cargo test`, where the tests of a binary share
//! one process, the same mechanism works within it):
//!
//! * The server lives in `$TMPDIR/berth-test-shared/{binary}-{options hash}-{run}`,
//!   `{run}` being `$NEXTEST_RUN_ID`, or the process id without nextest.
//! * `start.lock` (exclusive) serialises attaching: the first test to take it finds
//!   no `state.json`, starts the server (through the supervisor below) and writes
//!   the state; later tests read the state.
//! * `users.lock` is held shared by every process that attached, until it exits
//!   (the kernel drops the lock with the process: nothing to forget on a panic).
//! * The supervisor, `shared_server.sh` run by bash in a process group of its own,
//!   is the server's parent. Once a second it checks, under `start.lock`, whether any
//!   process still holds `users.lock`; after [`GRACE_SECS`] idle checks (or when the
//!   server died, or on SIGTERM) it stops the server, removes the containers and
//!   volumes of its installation (label `berth.install`) and the directory. A
//!   process that opened `start.lock` before that sees a removed file once it has the
//!   lock and starts over.
//! * A supervisor that did not get to clean up (SIGKILL, a reboot of Docker...) is
//!   found by the next attach of any binary: a directory whose supervisor is gone
//!   has its server killed, its installation's containers and volumes removed, and
//!   is deleted.
//!
//! Nothing here holds a runtime-bound object across tests: the state is plain data,
//! each test builds its own HTTP client.

use crate::server::{agent_bin, berth_bin, free_port, server_args, ServerOptions};
use nix::fcntl::{Flock, FlockArg};
use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Idle seconds (no test process attached) before a shared server is removed. Long
/// enough to bridge the gap between two tests of one binary that nextest schedules
/// apart; short enough that nothing lingers long after a run.
pub(crate) const GRACE_SECS: u32 = 4;

const SUPERVISOR: &str = include_str!("shared_server.sh");
/// The supervisor's `$0`: how the sweep recognises one in /proc.
const SUPERVISOR_NAME: &str = "berth-shared-server";

/// What a test needs to reach the shared server.
#[derive(Debug, Clone)]
pub(crate) struct SharedState {
    pub port: u16,
    pub edge_port: u16,
    pub admin_key: String,
    pub install_id: String,
    pub data: PathBuf,
    pub server_pid: u32,
}

impl SharedState {
    fn to_json(&self, supervisor_pid: u32) -> Value {
        json!({"port": self.port, "edge_port": self.edge_port, "admin_key": self.admin_key,
            "install_id": self.install_id, "data": self.data, "server_pid": self.server_pid,
            "supervisor_pid": supervisor_pid})
    }

    fn from_json(v: &Value) -> Option<Self> {
        Some(SharedState {
            port: u16::try_from(v["port"].as_u64()?).ok()?,
            edge_port: u16::try_from(v["edge_port"].as_u64()?).ok()?,
            admin_key: v["admin_key"].as_str()?.to_string(),
            install_id: v["install_id"].as_str()?.to_string(),
            data: PathBuf::from(v["data"].as_str()?),
            server_pid: u32::try_from(v["server_pid"].as_u64()?).ok()?,
        })
    }
}

fn base_dir() -> PathBuf {
    std::env::temp_dir().join("berth-test-shared")
}

/// `{binary}-{hash of options and binaries}-{run}`.
fn key(opts: &ServerOptions) -> String {
    let exe = std::env::current_exe().expect("test exe");
    let binary = exe.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "tests".into());
    let mut h = std::hash::DefaultHasher::new();
    format!("{opts:?}").hash(&mut h);
    berth_bin().hash(&mut h);
    agent_bin().hash(&mut h);
    let run = std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| format!("pid{}", std::process::id()));
    format!("{binary}-{:016x}-{run}", h.finish())
}

fn open_lock(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Whether `path` still names the file `f` (not removed by a teardown meanwhile).
fn same_file(f: &File, path: &Path) -> bool {
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Per shared server (key), the `users.lock` this process holds until it exits.
type Held = Mutex<Vec<(String, Flock<File>)>>;

fn held() -> &'static Held {
    static HELD: OnceLock<Held> = OnceLock::new();
    HELD.get_or_init(|| Mutex::new(Vec::new()))
}

/// Attaches this process to the shared server for `opts`, starting it if needed.
pub(crate) async fn attach(opts: &ServerOptions) -> SharedState {
    let base = base_dir();
    std::fs::create_dir_all(&base).expect("shared server dir");
    let key = key(opts);
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| sweep(&base, &key));
    let dir = base.join(&key);
    loop {
        std::fs::create_dir_all(dir.join("data")).expect("shared server dir");
        let start_path = dir.join("start.lock");
        let Ok(file) = open_lock(&start_path) else { continue };
        // Blocks only while another test attaches or the supervisor checks (a second
        // at most, or the few seconds of a teardown).
        let start = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| e).expect("flock start.lock");
        if !same_file(&start, &start_path) {
            continue; // torn down meanwhile: start over in a new directory
        }
        let state = match std::fs::read_to_string(dir.join("state.json")) {
            Ok(text) => {
                let v: Value = serde_json::from_str(&text).expect("state.json");
                let state = SharedState::from_json(&v).expect("state.json fields");
                assert!(
                    healthy(state.port, opts).await,
                    "the shared berth server (pid {}) no longer answers:\n{}",
                    state.server_pid,
                    std::fs::read_to_string(state.data.join("server.log")).unwrap_or_default()
                );
                state
            }
            Err(_) => start_server(&dir, opts).await,
        };
        let mut held = held().lock().unwrap();
        if !held.iter().any(|(k, _)| *k == key) {
            let users = open_lock(&dir.join("users.lock")).expect("users.lock");
            let users = Flock::lock(users, FlockArg::LockShared).map_err(|(_, e)| e).expect("flock users.lock");
            held.push((key.clone(), users));
        }
        drop(start);
        return state;
    }
}

/// Starts the supervisor and its server; called holding `start.lock`.
// The supervisor is waited for only while the server starts: it outlives the test
// that started it by design, and init reaps it.
#[allow(clippy::zombie_processes)]
async fn start_server(dir: &Path, opts: &ServerOptions) -> SharedState {
    let data = dir.join("data");
    let (port, edge_port) = (free_port(), free_port());
    let admin_key = format!("sk_test{}", berth_core::ids::random_label(32));
    let install_id = format!("test-shared-{}", berth_core::ids::random_label(10));
    let log = File::create(dir.join("supervisor.log")).expect("supervisor log");
    let mut supervisor = Command::new("bash")
        .args(["-c", SUPERVISOR, SUPERVISOR_NAME])
        .arg(dir)
        .arg(&install_id)
        .arg(GRACE_SECS.to_string())
        .arg(berth_bin())
        .args(server_args(&data, port, edge_port, opts))
        .env("BERTH_ADMIN_KEY", &admin_key)
        .env("BERTH_INSTALL_ID", &install_id)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        // Its own process group: signals for this test's group (a runner's timeout)
        // must not take the server away from the other tests.
        .process_group(0)
        .spawn()
        .expect("bash runs the shared server's supervisor");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthy(port, opts).await {
        if let Ok(Some(status)) = supervisor.try_wait() {
            panic!(
                "the shared berth server's supervisor exited ({status}):\n{}\n{}",
                std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default(),
                std::fs::read_to_string(data.join("server.log")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the shared berth server did not become healthy:\n{}",
            std::fs::read_to_string(data.join("server.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server_pid =
        std::fs::read_to_string(dir.join("server.pid")).ok().and_then(|p| p.trim().parse().ok()).unwrap_or(0);
    let state = SharedState { port, edge_port, admin_key, install_id, data, server_pid };
    let tmp = dir.join("state.json.tmp");
    std::fs::write(&tmp, state.to_json(supervisor.id()).to_string()).expect("write state");
    std::fs::rename(&tmp, dir.join("state.json")).expect("write state");
    // `supervisor` is dropped, not waited: it outlives this test (an orphan reaped by init).
    state
}

/// `GET /healthz` answers 200 (a client of its own: no runtime is shared).
async fn healthy(port: u16, opts: &ServerOptions) -> bool {
    let scheme = if opts.api_ca.is_some() { "https" } else { "http" };
    let mut b = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5));
    if let Some(pem) = &opts.api_ca {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("CA PEM"));
    }
    let Ok(http) = b.build() else { return false };
    http.get(format!("{scheme}://127.0.0.1:{port}/healthz")).send().await.is_ok_and(|r| r.status().is_success())
}

/// Removes what shared servers whose supervisor is gone left behind (not `ours`).
fn sweep(base: &Path, ours: &str) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let dir = entry.path();
        if entry.file_name().to_string_lossy() == ours || !dir.is_dir() {
            continue;
        }
        let Ok(file) = std::fs::File::open(dir.join("start.lock")) else {
            // Not even a lock file: an attach that never got far, or a removed one.
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(3600));
            if old {
                let _ = std::fs::remove_dir_all(&dir);
            }
            continue;
        };
        // Busy (attaching, checking, tearing down): alive.
        let Ok(_lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else { continue };
        let Some(v) =
            std::fs::read_to_string(dir.join("state.json")).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok())
        else {
            continue; // no server was ever started here; its attach failed or is gone
        };
        let supervisor = v["supervisor_pid"].as_u64().unwrap_or(0) as u32;
        if supervisor != 0 && cmdline(supervisor).contains(SUPERVISOR_NAME) {
            continue; // alive: it cleans up after itself
        }
        let Some(state) = SharedState::from_json(&v) else { continue };
        if state.server_pid != 0 && cmdline(state.server_pid).contains(&state.data.display().to_string()) {
            let _ = Command::new("kill").args(["-KILL", &state.server_pid.to_string()]).status();
        }
        crate::docker::remove_install(&state.install_id);
        crate::docker::release_loop_disks(&state.data);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
