//! Images pulled for a template's first instance, from a registry this test runs on
//! loopback (the Docker daemon trusts 127.0.0.0/8 over plain HTTP): the pull's
//! progress shows on the template while it runs (the registry holds the end of the
//! layer back until the test has seen it), and an image no registry has is refused,
//! naming it, with nothing created.

use axum::body::Body;
use axum::http::{header, HeaderMap, Method as HttpMethod, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use berth_test_util::docker::{containers_with_label, docker};
use berth_test_util::TestServer;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

fn busybox() -> String {
    std::env::var("BERTH_TEST_IMAGE").unwrap_or_else(|_| "berth-test/busybox:latest".into())
}

const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A registry serving one image (as `docker save` gives it) under any name and tag.
struct Registry {
    manifest: Vec<u8>,
    blobs: HashMap<String, Vec<u8>>,
    /// Layers whose end is held back until this turns true.
    layers: Vec<String>,
    gate: watch::Receiver<bool>,
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Registry {
    /// `nonce` makes the image and its layer blob new to the daemon (it skips an
    /// image whose config it has, and a blob whose digest it has seen).
    fn of(image: &str, nonce: u32, gate: watch::Receiver<bool>) -> Registry {
        let out = std::process::Command::new("docker").args(["save", image]).output().expect("docker save runs");
        assert!(out.status.success(), "docker save {image}");
        let mut files: HashMap<String, Vec<u8>> = HashMap::new();
        let mut archive = tar::Archive::new(out.stdout.as_slice());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            files.insert(path, data);
        }
        let saved: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        let mut config: Value = serde_json::from_slice(&files[saved[0]["Config"].as_str().unwrap()]).unwrap();
        config["config"]["Labels"] = json!({"berth.pulltest": nonce.to_string()});
        let config = serde_json::to_vec(&config).unwrap();
        let mut blobs = HashMap::new();
        let mut layers = Vec::new();
        let mut described = Vec::new();
        for layer in saved[0]["Layers"].as_array().unwrap() {
            // Stored, not compressed: big enough for the daemon to report progress
            // (every 512 KiB) before the held-back end.
            let gz = flate2::GzBuilder::new().mtime(nonce);
            let mut gz = gz.write(Vec::new(), flate2::Compression::none());
            std::io::Write::write_all(&mut gz, &files[layer.as_str().unwrap()]).unwrap();
            let gz = gz.finish().unwrap();
            let d = digest(&gz);
            described.push(json!({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": gz.len(), "digest": d}));
            layers.push(d.clone());
            blobs.insert(d, gz);
        }
        let config_digest = digest(&config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": config_digest},
            "layers": described,
        });
        blobs.insert(config_digest, config);
        Registry { manifest: serde_json::to_vec(&manifest).unwrap(), blobs, layers, gate }
    }

    /// Serves on a free loopback port: the port.
    async fn serve(self) -> u16 {
        let me = Arc::new(self);
        let app = axum::Router::new().fallback(move |method: HttpMethod, uri: Uri, headers: HeaderMap| {
            let me = me.clone();
            async move { me.answer(&method, &uri, &headers) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        port
    }

    fn answer(&self, method: &HttpMethod, uri: &Uri, _headers: &HeaderMap) -> Response {
        let path = uri.path();
        let api = [("Docker-Distribution-API-Version", "registry/2.0")];
        if path == "/v2/" || path == "/v2" {
            return (StatusCode::OK, api, "{}").into_response();
        }
        let Some(rest) = path.strip_prefix("/v2/") else { return StatusCode::NOT_FOUND.into_response() };
        if let Some((name, _tag)) = rest.rsplit_once("/manifests/") {
            // Only the image the test names exists; anything else is unknown.
            if !name.starts_with("berth-pulltest/") {
                let body = json!({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]});
                return (StatusCode::NOT_FOUND, api, body.to_string()).into_response();
            }
            let headers = [
                (header::CONTENT_TYPE.as_str(), MANIFEST_TYPE.to_string()),
                ("Docker-Content-Digest", digest(&self.manifest)),
            ];
            let body = if method == HttpMethod::HEAD { Body::empty() } else { Body::from(self.manifest.clone()) };
            return (StatusCode::OK, headers, [(header::CONTENT_LENGTH, self.manifest.len())], body).into_response();
        }
        if let Some((_, d)) = rest.rsplit_once("/blobs/") {
            let Some(blob) = self.blobs.get(d).cloned() else { return StatusCode::NOT_FOUND.into_response() };
            let len = blob.len();
            let body = if method == HttpMethod::HEAD {
                Body::empty()
            } else if self.layers.iter().any(|l| l == d) {
                // All but the last 64 KiB at once; the rest once the gate opens.
                let cut = len.saturating_sub(64 << 10);
                let (head, tail) = (blob[..cut].to_vec(), blob[cut..].to_vec());
                let mut gate = self.gate.clone();
                let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(
                    futures_util::stream::once(async move {
                        let _ = gate.wait_for(|open| *open).await;
                        Ok(tail)
                    }),
                );
                Body::from_stream(stream)
            } else {
                Body::from(blob)
            };
            let headers = [
                (header::CONTENT_TYPE.as_str(), "application/octet-stream".to_string()),
                ("Docker-Content-Digest", d.to_string()),
                (header::CONTENT_LENGTH.as_str(), len.to_string()),
            ];
            return (StatusCode::OK, headers, body).into_response();
        }
        StatusCode::NOT_FOUND.into_response()
    }
}

use futures_util::StreamExt;

#[tokio::test]
async fn a_missing_image_is_pulled_with_its_progress_on_the_template() {
    let s = TestServer::shared().await;
    let (open, gate) = watch::channel(false);
    let nonce = run_nonce();
    let port = Registry::of(&busybox(), nonce, gate).serve().await;
    let image = format!("127.0.0.1:{port}/berth-pulltest/busybox:{nonce:x}");
    let body = json!({"name": format!("pulled-{nonce:x}"), "image": image, "agent": false, "ports": [],
        "command": ["sleep", "100000"]});
    let (status, t) = s.post("/v1/templates", body).await;
    assert_eq!(status, 201, "{t}");
    let tid = t["id"].as_str().unwrap().to_string();
    assert_eq!(t["pull"], Value::Null, "nothing is pulled before an instance needs it");

    // The create waits for the pull; meanwhile the template shows how far it got.
    let create = s.post("/v1/instances", json!({"template": tid}));
    let watch_pull = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let seen = loop {
            let (_, t) = s.get(&format!("/v1/templates/{tid}")).await;
            if t["pull"]["current_bytes"].as_u64().unwrap_or(0) > 0 {
                break t["pull"].clone();
            }
            assert!(Instant::now() < deadline, "no pull progress on the template: {t}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        open.send_replace(true);
        seen
    };
    let ((status, inst), seen) = tokio::join!(create, watch_pull);
    assert_eq!((status, inst["status"].as_str()), (201, Some("running")), "{inst}");
    assert_eq!((seen["status"].as_str(), seen["image"].as_str()), (Some("pulling"), Some(image.as_str())), "{seen}");
    let (current, total) = (seen["current_bytes"].as_u64().unwrap(), seen["total_bytes"].as_u64().unwrap());
    assert!(current < total, "held back before its end: {seen}");
    assert!(seen["layers_total"].as_u64().unwrap() >= 1 && seen["layers_done"].as_u64() == Some(0), "{seen}");
    let (_, t) = s.get(&format!("/v1/templates/{tid}")).await;
    assert_eq!(t["pull"], Value::Null, "the pull has ended: {t}");
    let id = inst["id"].as_str().unwrap();
    let out = s.exec(id, json!(["echo", "pulled"]), None).await;
    assert_eq!(out["stdout"].as_str(), Some("pulled\n"), "{out}");

    s.call(Method::DELETE, &format!("/v1/instances/{id}?purge=true"), Some(&s.key), None).await;
    s.call(Method::DELETE, &format!("/v1/templates/{tid}"), Some(&s.key), None).await;
    docker(&["rmi", &image]);
}

#[tokio::test]
async fn an_image_no_registry_has_is_refused_naming_it_and_nothing_is_made() {
    let s = TestServer::shared().await;
    let (_open, gate) = watch::channel(false);
    let port = Registry::of(&busybox(), 1, gate).serve().await;
    let image = format!("127.0.0.1:{port}/nobody/has-this:1");
    let (status, t) = s.post("/v1/templates", json!({"name": "unpullable", "image": image})).await;
    assert_eq!(status, 201, "{t}");
    let tid = t["id"].as_str().unwrap();
    let (status, err) = s.post("/v1/instances", json!({"template": tid})).await;
    assert_eq!((status, err["error"]["code"].as_str()), (422, Some("image_unavailable")), "{err}");
    assert_eq!(err["error"]["details"]["image"].as_str(), Some(image.as_str()), "{err}");
    let (_, list) = s.get("/v1/instances").await;
    assert!(list["data"].as_array().unwrap().iter().all(|i| i["template"]["id"] != tid), "{list}");
    assert!(containers_with_label("berth.workspace", s.workspace_id().unwrap()).iter().all(|c| !docker(&[
        "inspect",
        "-f",
        "{{.Config.Image}}",
        c
    ])
    .1
    .contains("has-this")));
    s.call(Method::DELETE, &format!("/v1/templates/{tid}"), Some(&s.key), None).await;
}

/// A number new to every run, so reruns never find the image or its layer pulled.
fn run_nonce() -> u32 {
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 0xffff_ffff) as u32
}
