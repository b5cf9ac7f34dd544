//! [`TestServer`]: a real `berth server` process with its own data dir, port and
//! installation id, removed with everything it created when dropped; or, from
//! [`TestServer::shared`], a test's own workspace on a server the tests of one
//! binary share.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to start a test server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Base image; default `$BERTH_TEST_IMAGE` or `berth-test/busybox:latest`; `None`:
    /// the server's own default (`debian:bookworm-slim` or `berth/base:bookworm`).
    pub base_image: Option<String>,
    /// Start without `--agent-bin`, so the server picks its agent itself.
    pub server_picks_agent: bool,
    /// Extra flags for `berth server`.
    pub extra_args: Vec<String>,
    /// Host both listeners bind to (default `127.0.0.1`).
    pub listen_host: String,
    /// PEM of the CA behind `--tls-cert`: the hosting API is then https and the
    /// test client trusts this CA.
    pub api_ca: Option<String>,
    /// `--network`: [`crate::docker::TEST_NETWORK`] by default. Servers with other
    /// egress flags need a network of their own (one bridge, one policy).
    pub network: String,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            base_image: Some(std::env::var("BERTH_TEST_IMAGE").unwrap_or_else(|_| "berth-test/busybox:latest".into())),
            server_picks_agent: false,
            extra_args: vec![],
            listen_host: "127.0.0.1".into(),
            api_ca: None,
            network: crate::docker::TEST_NETWORK.into(),
        }
    }
}

/// A running `berth server` for one test ([`TestServer::start`]), or one test's
/// workspace on a server shared with the other tests of its binary
/// ([`TestServer::shared`]).
pub struct TestServer {
    child: Option<Child>,
    data: DataDir,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    port: u16,
    /// `http://127.0.0.1:EDGE_PORT`: the edge; send `Host: {label}.localhost`.
    pub edge_base: String,
    edge_port: u16,
    /// The admin key of workspace `default`.
    pub admin_key: String,
    /// The key this test acts with, used by [`TestServer::get`], [`TestServer::post`]
    /// and [`TestServer::create_instance`]: the admin key on a server of its own; on a
    /// shared server the (non-admin) key of this test's own workspace.
    pub key: String,
    /// The installation id (label `berth.install` of its containers).
    pub install_id: String,
    opts: ServerOptions,
    http: reqwest::Client,
    /// On a shared server: the server's pid; this handle owns only its workspace.
    shared_pid: Option<u32>,
    /// On a shared server: the id of this test's workspace.
    workspace_id: Option<String>,
}

enum DataDir {
    Own(tempfile::TempDir),
    Shared(PathBuf),
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// The `berth` binary: `$BERTH_BIN`, or `target/debug/berth` beside the test executable.
pub fn berth_bin() -> PathBuf {
    if let Ok(p) = std::env::var("BERTH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test exe");
    let candidate = exe.parent().and_then(Path::parent).map(|d| d.join("berth")).expect("target dir");
    assert!(
        candidate.is_file(),
        "{} missing: run `cargo build -p berth-cli` first (scripts/test.sh does)",
        candidate.display()
    );
    candidate
}

/// The static agent: `$BERTH_AGENT_BIN`, or the debug build of scripts/build-agent.sh.
pub fn agent_bin() -> PathBuf {
    if let Ok(p) = std::env::var("BERTH_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let p = workspace_root().join("target/static-agent/x86_64-unknown-linux-gnu/debug/berth-agent");
    assert!(p.is_file(), "{} missing: run scripts/build-agent.sh first (scripts/test.sh does)", p.display());
    p
}

/// A port nothing listens on now, never one this process handed out before (the kernel
/// may offer a just-released port again: a server's API and edge once got the same one).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The arguments after `berth` for a test server.
pub(crate) fn server_args(data: &Path, port: u16, edge_port: u16, opts: &ServerOptions) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "server".into(),
        "--data".into(),
        data.display().to_string(),
        "--listen".into(),
        format!("{}:{port}", opts.listen_host),
        "--edge-listen".into(),
        format!("{}:{edge_port}", opts.listen_host),
        "--network".into(),
        opts.network.clone(),
        "--reconcile-interval-ms".into(),
        "300".into(),
    ];
    // Agent templates' images take minutes to build: only the tests of them ask.
    if !opts.extra_args.iter().any(|a| a == "--agent-templates") {
        args.extend(["--agent-templates".into(), "none".into()]);
    }
    if let Some(image) = &opts.base_image {
        args.extend(["--base-image".into(), image.clone()]);
    }
    if !opts.server_picks_agent {
        args.extend(["--agent-bin".into(), agent_bin().display().to_string()]);
    }
    if crate::kubernetes::enabled() {
        args.extend(crate::kubernetes::server_args());
        // The cluster's node cannot be asked which images it has: name the one the
        // Docker runtime would pick (the testbed's node runs on the local Docker).
        if opts.base_image.is_none() {
            let present = ["debian:bookworm-slim", "berth/base:bookworm"]
                .into_iter()
                .find(|i| crate::docker::docker(&["image", "inspect", i]).0)
                .unwrap_or("debian:bookworm-slim");
            args.extend(["--base-image".into(), present.into()]);
        }
    }
    args.extend(opts.extra_args.iter().cloned());
    args
}

fn client(opts: &ServerOptions) -> reqwest::Client {
    let mut http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(180));
    if let Some(pem) = &opts.api_ca {
        http = http.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("CA PEM"));
    }
    http.build().expect("client")
}

impl TestServer {
    /// Starts a server with default options and waits for `/healthz`.
    pub async fn start() -> Self {
        Self::start_with(ServerOptions::default()).await
    }

    /// Starts a server with `opts` and waits for `/healthz`.
    pub async fn start_with(opts: ServerOptions) -> Self {
        let data = tempfile::Builder::new().prefix("berth-test-").tempdir().expect("tempdir");
        let port = free_port();
        let edge_port = free_port();
        let scheme = if opts.api_ca.is_some() { "https" } else { "http" };
        let admin_key = format!("sk_test{}", berth_core::ids::random_label(32));
        let mut s = TestServer {
            child: None,
            data: DataDir::Own(data),
            base: format!("{scheme}://127.0.0.1:{port}"),
            port,
            edge_base: format!("{scheme}://127.0.0.1:{edge_port}"),
            edge_port,
            key: admin_key.clone(),
            admin_key,
            install_id: format!("test-{}", berth_core::ids::random_label(10)),
            http: client(&opts),
            opts,
            shared_pid: None,
            workspace_id: None,
        };
        s.spawn().await;
        s
    }

    /// Another replica of `of`'s installation: a server of its own (ports, data dir)
    /// with `of`'s flags — its `--database-url` among them, which must name a
    /// PostgreSQL database — and `of`'s secret key, admin key, installation id and
    /// disk images (`--disk-dir`). Drop it before `of` (declared after it), which
    /// removes what the installation made.
    pub async fn start_replica(of: &TestServer) -> Self {
        of.assert_own("start a replica of");
        let data = tempfile::Builder::new().prefix("berth-test-").tempdir().expect("tempdir");
        std::fs::copy(of.data_dir().join("secret.key"), data.path().join("secret.key")).expect("copy secret.key");
        let (port, edge_port) = (free_port(), free_port());
        let scheme = if of.opts.api_ca.is_some() { "https" } else { "http" };
        // One Docker host: the homes' disk images are the first replica's.
        let mut opts = of.opts.clone();
        opts.extra_args.extend(["--disk-dir".into(), of.data_dir().join("disks").display().to_string()]);
        let mut s = TestServer {
            child: None,
            data: DataDir::Own(data),
            base: format!("{scheme}://127.0.0.1:{port}"),
            port,
            edge_base: format!("{scheme}://127.0.0.1:{edge_port}"),
            edge_port,
            key: of.key.clone(),
            admin_key: of.admin_key.clone(),
            install_id: of.install_id.clone(),
            http: client(&of.opts),
            opts,
            shared_pid: None,
            workspace_id: None,
        };
        s.spawn().await;
        s
    }

    /// This test's own workspace on the server shared by the tests of this test
    /// binary that ask for one (default options), started by the first of them.
    ///
    /// For tests that depend on nothing server-wide: no counts or metrics totals
    /// across workspaces, no restart or kill of the server, no special flags (those
    /// use [`TestServer::start`]). [`TestServer::key`] is the key of a workspace
    /// created for this test, which `get`, `post` and `create_instance` use; the
    /// admin key is still [`TestServer::admin_key`]. Dropping the handle purges the
    /// workspace's instances; the server itself, its containers and its data are
    /// removed a few seconds after the last test process using it has exited.
    /// [`TestServer::kill`], [`TestServer::terminate`] and [`TestServer::restart`]
    /// panic on a shared server.
    pub async fn shared() -> Self {
        Self::shared_with(ServerOptions::default()).await
    }

    /// Like [`TestServer::shared`], on the shared server started with `opts` (tests
    /// asking for other options get another server).
    pub async fn shared_with(opts: ServerOptions) -> Self {
        let state = crate::shared::attach(&opts).await;
        let scheme = if opts.api_ca.is_some() { "https" } else { "http" };
        let mut s = TestServer {
            child: None,
            data: DataDir::Shared(state.data.clone()),
            base: format!("{scheme}://127.0.0.1:{}", state.port),
            port: state.port,
            edge_base: format!("{scheme}://127.0.0.1:{}", state.edge_port),
            edge_port: state.edge_port,
            key: String::new(),
            admin_key: state.admin_key.clone(),
            install_id: state.install_id.clone(),
            http: client(&opts),
            opts,
            shared_pid: Some(state.server_pid),
            workspace_id: None,
        };
        let test = std::thread::current().name().unwrap_or("test").chars().take(100).collect::<String>();
        let ws = s.new_workspace(&test).await;
        s.key = ws["key"].as_str().expect("workspace key").to_string();
        s.workspace_id = ws["id"].as_str().map(str::to_string);
        s
    }

    /// On a shared server, the id of this test's workspace (label `berth.workspace`
    /// of its containers); `None` on a server of its own.
    pub fn workspace_id(&self) -> Option<&str> {
        self.workspace_id.as_deref()
    }

    /// Whether this is a workspace on a shared server ([`TestServer::shared`]).
    pub fn is_shared(&self) -> bool {
        self.shared_pid.is_some()
    }

    /// Creates another workspace with the admin key; answers its key.
    pub async fn create_workspace(&self, name: &str) -> String {
        self.new_workspace(name).await["key"].as_str().expect("workspace key").to_string()
    }

    /// Creates a workspace with the admin key; answers the workspace (with its key).
    async fn new_workspace(&self, name: &str) -> serde_json::Value {
        let (status, ws) = self
            .call(
                reqwest::Method::POST,
                "/v1/workspaces",
                Some(&self.admin_key),
                Some(serde_json::json!({"name": name})),
            )
            .await;
        assert_eq!(status, 201, "creating workspace {name} failed: {ws}\n{}", self.log());
        ws
    }

    /// The edge's port (instance URLs are `http://{label}.localhost:PORT`).
    pub fn edge_port(&self) -> u16 {
        self.edge_port
    }

    /// The data directory (of the whole server, when shared).
    pub fn data_dir(&self) -> &Path {
        match &self.data {
            DataDir::Own(d) => d.path(),
            DataDir::Shared(p) => p,
        }
    }

    fn assert_own(&self, what: &str) {
        assert!(
            self.shared_pid.is_none(),
            "a shared server cannot be {what}: other tests use it (use TestServer::start for this test)"
        );
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir().join("server.log"))
            .expect("log file");
        let child = Command::new(berth_bin())
            .args(server_args(self.data_dir(), self.port, self.edge_port, &self.opts))
            .env("BERTH_ADMIN_KEY", &self.admin_key)
            .env("BERTH_INSTALL_ID", &self.install_id)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("berth server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("berth server exited ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "berth server did not become healthy:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Process id of the server.
    pub fn pid(&self) -> Option<u32> {
        self.shared_pid.or_else(|| self.child.as_ref().map(|c| c.id()))
    }

    /// The server's log so far (of every test using it, when shared).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("server.log")).unwrap_or_default()
    }

    /// SIGKILLs the server (instances keep running).
    pub fn kill(&mut self) {
        self.assert_own("killed");
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs the server and returns its exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.assert_own("terminated");
        let mut c = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        c.wait().ok()
    }

    /// SIGTERMs the server and waits up to `grace` for it to exit (then leaves it
    /// to [`TestServer::kill`]).
    fn terminate_within(&mut self, grace: Duration) {
        let Some(c) = self.child.as_mut() else { return };
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !matches!(c.try_wait(), Ok(None)) {
                self.child = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again on the same data dir and port.
    pub async fn restart(&mut self) {
        self.assert_own("restarted");
        self.kill();
        self.spawn().await;
    }

    /// Starts the server again on the same data dir and port with `extra_args` in
    /// place of the ones it was started with.
    pub async fn restart_with(&mut self, extra_args: Vec<String>) {
        self.opts.extra_args = extra_args;
        self.restart().await;
    }

    /// An HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a request with `key`; returns status and JSON body (Null when not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// GET with [`TestServer::key`] (the admin key unless shared).
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::GET, path, Some(&self.key), None).await
    }

    /// POST with [`TestServer::key`] (the admin key unless shared).
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::POST, path, Some(&self.key), Some(body)).await
    }

    /// Creates an instance with [`TestServer::key`] and asserts 201.
    pub async fn create_instance(&self, body: serde_json::Value) -> serde_json::Value {
        let (status, inst) = self.post("/v1/instances", body).await;
        assert_eq!(status, 201, "create failed: {inst}\n{}", self.log());
        inst
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.shared_pid.is_some() {
            purge_workspace(&self.base, &self.key, &self.opts);
            return;
        }
        // Listening beyond loopback, the server added iptables rules (instances may not
        // reach it), which it removes at a clean shutdown only: SIGTERM first.
        if self.opts.listen_host != "127.0.0.1" {
            self.terminate_within(Duration::from_secs(10));
        }
        self.kill();
        crate::docker::remove_install(&self.install_id);
        // A warm pool creates in the background: a create in flight in dockerd when the
        // server died completes after the pass above listed the installation (a `Created`
        // container and its home were left behind). Once more, after it landed.
        if self.opts.extra_args.iter().any(|a| a.starts_with("--warm-pool")) {
            std::thread::sleep(Duration::from_secs(1));
            crate::docker::remove_install(&self.install_id);
        }
        crate::docker::release_loop_disks(self.data_dir());
    }
}

/// Purges every instance of the workspace of `key` (so a shared server does not
/// gather the instances of every test). On a thread with a runtime of its own: a
/// `Drop` may run on a runtime that is shutting down, or on none.
fn purge_workspace(base: &str, key: &str, opts: &ServerOptions) {
    let (base, key, http) = (base.to_string(), key.to_string(), client(opts));
    let purge = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            for list in ["/v1/instances?limit=100", "/v1/instances?limit=100&status=deleted"] {
                // A few rounds: 100 a page, and one that will not go (left to the teardown).
                for _ in 0..5 {
                    let page: serde_json::Value = match http.get(format!("{base}{list}")).bearer_auth(&key).send().await
                    {
                        Ok(r) => r.json().await.unwrap_or_default(),
                        Err(_) => return, // the server is gone: its teardown removes everything
                    };
                    let ids: Vec<String> = page["data"]
                        .as_array()
                        .map(|d| d.iter().filter_map(|i| i["id"].as_str().map(str::to_string)).collect())
                        .unwrap_or_default();
                    if ids.is_empty() {
                        break;
                    }
                    for id in ids {
                        let url = format!("{base}/v1/instances/{id}?purge=true");
                        let _ = http.delete(url).bearer_auth(&key).send().await;
                    }
                }
            }
        });
    });
    let _ = purge.join();
}
