//! [`TestServer`]: a real `berth server` process with its own data dir, port and
//! installation id, removed with everything it created when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to start a test server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Base image; default `$BERTH_TEST_IMAGE` or `berth-test/busybox:latest`.
    pub base_image: String,
    /// Extra flags for `berth server`.
    pub extra_args: Vec<String>,
    /// Host both listeners bind to (default `127.0.0.1`).
    pub listen_host: String,
    /// PEM of the CA behind `--tls-cert`: the hosting API is then https and the
    /// test client trusts this CA.
    pub api_ca: Option<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            base_image: std::env::var("BERTH_TEST_IMAGE").unwrap_or_else(|_| "berth-test/busybox:latest".into()),
            extra_args: vec![],
            listen_host: "127.0.0.1".into(),
            api_ca: None,
        }
    }
}

/// A running `berth server` for one test.
pub struct TestServer {
    child: Option<Child>,
    data: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    port: u16,
    /// `http://127.0.0.1:EDGE_PORT`: the edge; send `Host: {label}.localhost`.
    pub edge_base: String,
    edge_port: u16,
    /// The admin key of workspace `default`.
    pub admin_key: String,
    /// The installation id (label `berth.install` of its containers).
    pub install_id: String,
    opts: ServerOptions,
    http: reqwest::Client,
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
    let p = workspace_root().join("target/x86_64-unknown-linux-gnu/debug/berth-agent");
    assert!(p.is_file(), "{} missing: run scripts/build-agent.sh first (scripts/test.sh does)", p.display());
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
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
        let mut http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(180));
        if let Some(pem) = &opts.api_ca {
            http = http.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("CA PEM"));
        }
        let mut s = TestServer {
            child: None,
            data,
            base: format!("{scheme}://127.0.0.1:{port}"),
            port,
            edge_base: format!("{scheme}://127.0.0.1:{edge_port}"),
            edge_port,
            admin_key: format!("sk_test{}", berth_core::ids::random_label(24)),
            install_id: format!("test-{}", berth_core::ids::random_label(10)),
            opts,
            http: http.build().expect("client"),
        };
        s.spawn().await;
        s
    }

    /// The edge's port (instance URLs are `http://{label}.localhost:PORT`).
    pub fn edge_port(&self) -> u16 {
        self.edge_port
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("server.log"))
            .expect("log file");
        let child = Command::new(berth_bin())
            .arg("server")
            .args(["--data", &self.data.path().display().to_string()])
            .args(["--listen", &format!("{}:{}", self.opts.listen_host, self.port)])
            .args(["--edge-listen", &format!("{}:{}", self.opts.listen_host, self.edge_port)])
            .args(["--base-image", &self.opts.base_image])
            .args(["--agent-bin", &agent_bin().display().to_string()])
            .args(["--network", "berth-test"])
            .args(["--reconcile-interval-ms", "300"])
            .args(&self.opts.extra_args)
            .env("BERTH_ADMIN_KEY", &self.admin_key)
            .env("BERTH_INSTALL_ID", &self.install_id)
            .env("RUST_LOG", "info")
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
        self.child.as_ref().map(|c| c.id())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default()
    }

    /// SIGKILLs the server (instances keep running).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs the server and returns its exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        c.wait().ok()
    }

    /// Starts the server again on the same data dir and port.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
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

    /// GET with the admin key.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::GET, path, Some(&self.admin_key.clone()), None).await
    }

    /// POST with the admin key.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::POST, path, Some(&self.admin_key.clone()), Some(body)).await
    }

    /// Creates an instance with the admin key and asserts 201.
    pub async fn create_instance(&self, body: serde_json::Value) -> serde_json::Value {
        let (status, inst) = self.post("/v1/instances", body).await;
        assert_eq!(status, 201, "create failed: {inst}\n{}", self.log());
        inst
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        crate::docker::remove_install(&self.install_id);
    }
}
