//! The test web app (`testapp.py`) inside an instance, and requests to the edge.

use crate::TestServer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Source of the test app: headers echo, a page for browsers, SSE, WebSocket echo.
pub const TEST_APP: &str = include_str!("testapp.py");

/// `host[:port]` of a URL (`http://abc.localhost:7071/x` → `abc.localhost:7071`).
pub fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or_default().to_string()
}

/// The URL of an instance's port, from its `ports` list.
pub fn port_url(instance: &Value, port: u16) -> String {
    instance["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["port"] == port))
        .and_then(|p| p["url"].as_str())
        .unwrap_or_else(|| panic!("port {port} is not in {instance}"))
        .to_string()
}

impl TestServer {
    /// Runs a command in an instance through the hosting API; answers its result.
    pub async fn exec(&self, id: &str, command: Value, stdin: Option<&str>) -> Value {
        let mut body = json!({"command": command});
        if let Some(input) = stdin {
            body["stdin"] = json!(input);
        }
        let (status, out) = self.post(&format!("/v1/instances/{id}/exec"), body).await;
        assert_eq!(status, 200, "exec failed: {out}");
        out
    }

    /// A request to the edge for `host` (as given in an instance URL).
    pub fn edge(&self, method: reqwest::Method, host: &str, path: &str) -> reqwest::RequestBuilder {
        self.http().request(method, format!("{}{path}", self.edge_base)).header("host", host)
    }

    /// Writes the test app into the instance, starts it on `port` (in the
    /// background) and waits until it answers through the edge at `host`.
    pub async fn start_app(&self, id: &str, port: u16, host: &str) {
        let out = self.exec(id, json!(["sh", "-c", "cat > /tmp/testapp.py"]), Some(TEST_APP)).await;
        assert_eq!(out["exit_code"], 0, "{out}");
        let run = format!("nohup python3 /tmp/testapp.py {port} >/tmp/testapp-{port}.out 2>&1 &");
        let out = self.exec(id, json!(["sh", "-c", run]), None).await;
        assert_eq!(out["exit_code"], 0, "{out}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.edge(reqwest::Method::GET, host, "/sub.txt").bearer_auth(&self.key).send().await;
            if r.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "the test app did not come up on port {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the test app recorded so far.
    pub async fn app_log(&self, id: &str) -> String {
        let out = self.exec(id, json!(["sh", "-c", "cat /tmp/app.log 2>/dev/null || true"]), None).await;
        out["stdout"].as_str().unwrap_or_default().to_string()
    }
}
