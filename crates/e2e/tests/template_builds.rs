//! Templates built from a Dockerfile on the real Docker daemon: a build that installs
//! a package from PyPI through the host's CA bundle (TLS here is intercepted, so it
//! only works when the build trusts that bundle), followed live, refused to instances
//! until ready; a failing build with its log; a second build as a new version; and a
//! stdin template whose interactive program answers through `POST .../stdin`.

use berth_test_util::TestServer;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The server's Debian base (python3, curl), built locally by scripts/build-images.sh.
const BASE: &str = "berth/base:bookworm";

fn busybox() -> String {
    std::env::var("BERTH_TEST_IMAGE").unwrap_or_else(|_| "berth-test/busybox:latest".into())
}

/// A base64 tar.gz of `files`.
fn context(files: &[(&str, &str)]) -> String {
    use base64::Engine;
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, data.as_bytes()).unwrap();
    }
    base64::engine::general_purpose::STANDARD.encode(b.into_inner().unwrap().finish().unwrap())
}

/// Follows a build's log (SSE) to its end: its lines, and the `end` event.
async fn follow(s: &TestServer, tid: &str, version: u64) -> (Vec<String>, Value) {
    let url = format!("{}/v1/templates/{tid}/builds/{version}/logs?follow=true", s.base);
    let mut r = reqwest::Client::new().get(url).bearer_auth(&s.key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (mut lines, mut buf) = (Vec::new(), String::new());
    let deadline = Instant::now() + Duration::from_secs(600);
    while let Some(chunk) = tokio::time::timeout_at(deadline.into(), r.chunk()).await.expect("the build ends").unwrap()
    {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find("\n\n") {
            let event: String = buf.drain(..i + 2).collect();
            let data = event.lines().find_map(|l| l.strip_prefix("data:")).unwrap_or_default().trim().to_string();
            if event.lines().any(|l| l == "event: end" || l == "event:end") {
                return (lines, serde_json::from_str(&data).unwrap());
            }
            if !data.is_empty() {
                lines.push(serde_json::from_str::<Value>(&data).unwrap()["message"].as_str().unwrap().to_string());
            }
        }
    }
    panic!("the build's log ended without an `end` event: {lines:?}");
}

const INSTALL: &str = r#"
import io, json, site, urllib.request, zipfile
meta = json.load(urllib.request.urlopen("https://pypi.org/pypi/six/json", timeout=120))
url = next(f["url"] for f in meta["urls"] if f["packagetype"] == "bdist_wheel")
wheel = urllib.request.urlopen(url, timeout=120).read()
zipfile.ZipFile(io.BytesIO(wheel)).extractall(site.getsitepackages()[0])
print("installed six", meta["info"]["version"])
"#;

#[tokio::test]
async fn a_build_installs_a_package_through_the_ca_bundle_and_its_instances_have_it() {
    let s = TestServer::shared().await;
    // A line of its own per run, so the builder's cache never skips the install.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dockerfile = format!(
        "FROM {BASE}\nRUN echo run {run}\nCOPY install.py /opt/install.py\nRUN python3 /opt/install.py\nRUN sleep 1\n"
    );
    let (status, t) = s
        .post(
            "/v1/templates",
            json!({"name": "py-six", "build": {"dockerfile": dockerfile, "context": context(&[("install.py", INSTALL)])}}),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    assert_eq!((t["status"].as_str(), t["version"].as_u64()), (Some("building"), Some(1)), "{t}");
    assert_eq!(t["build"]["status"], "building");
    let tid = t["id"].as_str().unwrap().to_string();
    assert!(t["image"].as_str().unwrap().starts_with(&format!("berth/{tid}:build-")), "{t}");

    // No instance from a build that is not ready.
    let (status, err) = s.post("/v1/instances", json!({"template": "py-six"})).await;
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("build_not_ready")), "{err}");

    let (lines, end) = follow(&s, &tid, 1).await;
    assert_eq!(end["status"], "ready", "{end} {lines:#?}");
    assert!(lines.iter().any(|l| l.starts_with("installed six")), "{lines:#?}");
    // Once ended, the same log is stored.
    let (status, logs) = s.get(&format!("/v1/templates/{tid}/builds/1/logs")).await;
    assert_eq!((status, logs["status"].as_str()), (200, Some("ready")));
    assert!(logs["logs"].as_array().unwrap().len() >= lines.len());
    let (_, t) = s.get(&format!("/v1/templates/{tid}")).await;
    assert_eq!((t["status"].as_str(), t["build"]["error"].clone()), (Some("ready"), Value::Null), "{t}");

    let inst = s.create_instance(json!({"template": "py-six"})).await;
    let id = inst["id"].as_str().unwrap();
    let out = s.exec(id, json!(["python3", "-c", "import six; print(six.__name__)"]), None).await;
    assert_eq!((out["exit_code"].as_i64(), out["stdout"].as_str()), (Some(0), Some("six\n")), "{out}");
    // Instances trust the host's CA bundle too (mounted read-only, named by the usual variables).
    let out = s.exec(id, json!(["sh", "-c", "test -s \"$SSL_CERT_FILE\" && echo $PIP_CERT"]), None).await;
    assert_eq!(out["stdout"].as_str().unwrap().trim(), "/usr/local/share/berth/ca-certificates.crt", "{out}");
    s.call(Method::DELETE, &format!("/v1/instances/{id}?purge=true"), Some(&s.key), None).await;
}

#[tokio::test]
async fn a_failing_build_fails_with_its_log_and_a_new_build_makes_the_next_version() {
    let s = TestServer::shared().await;
    let bad = format!("FROM {}\nRUN echo about-to-fail && exit 3\n", busybox());
    let t = {
        let (status, t) = s.post("/v1/templates", json!({"name": "breaks", "build": {"dockerfile": bad}})).await;
        assert_eq!(status, 201, "{t}");
        t
    };
    let tid = t["id"].as_str().unwrap().to_string();
    let (lines, end) = follow(&s, &tid, 1).await;
    assert_eq!(end["status"], "failed", "{end}");
    let error = end["error"].as_str().unwrap();
    assert!(error.contains("non-zero code: 3"), "the builder's reason: {error}");
    assert!(lines.iter().any(|l| l.contains("about-to-fail")), "{lines:#?}");
    let (_, b) = s.get(&format!("/v1/templates/{tid}/builds/1")).await;
    assert_eq!((b["status"].as_str(), b["error"].as_str()), (Some("failed"), Some(error)), "{b}");
    assert!(b["finished_at"].as_i64().is_some());
    let (status, err) = s.post("/v1/instances", json!({"template": tid})).await;
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("build_not_ready")), "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("failed"), "{err}");

    // A change that keeps the image stays failed; a new build is the next version.
    let (status, t2) =
        s.call(Method::PATCH, &format!("/v1/templates/{tid}"), Some(&s.key), Some(json!({"env": {"A": "1"}}))).await;
    assert_eq!((status, t2["version"].as_u64(), t2["status"].as_str()), (200, Some(2), Some("failed")), "{t2}");
    let good = format!("FROM {}\nRUN echo built > /built.txt\n", busybox());
    let (status, t3) = s
        .call(
            Method::PATCH,
            &format!("/v1/templates/{tid}"),
            Some(&s.key),
            Some(json!({"build": {"dockerfile": good}, "agent": false, "command": ["sleep", "100000"]})),
        )
        .await;
    assert_eq!((status, t3["version"].as_u64(), t3["status"].as_str()), (200, Some(3), Some("building")), "{t3}");
    // While it builds, a change that would share its image waits.
    let (status, err) =
        s.call(Method::PATCH, &format!("/v1/templates/{tid}"), Some(&s.key), Some(json!({"env": {"A": "2"}}))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("build_in_progress")), "{err}");
    let (_, end) = follow(&s, &tid, 3).await;
    assert_eq!(end["status"], "ready", "{end}");
    let inst = s.create_instance(json!({"template": "breaks"})).await;
    assert_eq!(inst["template"]["version"], 3);
    let id = inst["id"].as_str().unwrap();
    let out = s.exec(id, json!(["cat", "/built.txt"]), None).await;
    assert_eq!(out["stdout"].as_str(), Some("built\n"), "{out}");

    // While a rebuild runs, instances are still made from the newest ready version;
    // pinning the building one is refused.
    let slow = format!("FROM {}\nRUN sleep 3 && echo again > /built.txt\n", busybox());
    let (status, t4) = s
        .call(
            Method::PATCH,
            &format!("/v1/templates/{tid}"),
            Some(&s.key),
            Some(json!({"build": {"dockerfile": slow}})),
        )
        .await;
    assert_eq!((status, t4["status"].as_str()), (200, Some("building")), "{t4}");
    let during = s.create_instance(json!({"template": "breaks"})).await;
    assert_eq!(during["template"]["version"], 3, "{during}");
    let pinned = json!({"template": {"id": tid, "version": 4}});
    let (status, err) = s.post("/v1/instances", pinned).await;
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("build_not_ready")), "{err}");
    assert_eq!(follow(&s, &tid, 4).await.1["status"], "ready");
    let (_, got) = s.get(&format!("/v1/instances/{}", during["id"].as_str().unwrap())).await;
    assert_eq!(got["update_available"], true, "{got}");
    s.call(Method::DELETE, &format!("/v1/instances/{}?purge=true", during["id"].as_str().unwrap()), Some(&s.key), None)
        .await;

    let (_, builds) = s.get(&format!("/v1/templates/{tid}/builds")).await;
    let versions: Vec<u64> =
        builds["data"].as_array().unwrap().iter().map(|b| b["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [1, 3, 4]);

    // Deleted by force, the template's built image a deleted (restorable) instance ran
    // on stays: the instance comes back on it, and can be recreated.
    let (status, _) = s.call(Method::DELETE, &format!("/v1/instances/{id}"), Some(&s.key), None).await;
    assert_eq!(status, 200);
    let (status, _) = s.call(Method::DELETE, &format!("/v1/templates/{tid}?force=true"), Some(&s.key), None).await;
    assert_eq!(status, 200);
    let (status, got) = s.post(&format!("/v1/instances/{id}/restore"), json!({})).await;
    assert_eq!((status, got["status"].as_str()), (200, Some("running")), "{got}");
    let (status, got) =
        s.call(Method::PATCH, &format!("/v1/instances/{id}"), Some(&s.key), Some(json!({"env": {"X": "1"}}))).await;
    assert_eq!((status, got["status"].as_str()), (200, Some("running")), "{got}");
    let out = s.exec(id, json!(["sh", "-c", "cat /built.txt; echo $X"]), None).await;
    assert_eq!(out["stdout"].as_str(), Some("built\n1\n"), "{out}");
    s.call(Method::DELETE, &format!("/v1/instances/{id}?purge=true"), Some(&s.key), None).await;
}

#[tokio::test]
async fn a_stdin_templates_program_answers_what_is_written_to_it() {
    let s = TestServer::shared().await;
    let (status, t) = s
        .post(
            "/v1/templates",
            json!({"name": "repl", "image": BASE, "ports": [], "stdin": true, "command": ["python3", "-u", "-i", "-q"]}),
        )
        .await;
    assert_eq!((status, t["stdin"].as_bool()), (201, Some(true)), "{t}");
    let inst = s.create_instance(json!({"template": "repl"})).await;
    let id = inst["id"].as_str().unwrap();
    let (status, r) = s.post(&format!("/v1/instances/{id}/stdin"), json!({"input": "print(6*7)"})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["stdout"].as_str().unwrap().trim(), "42", "{r}");
    // The program keeps its state between writes, and its output is in the logs.
    let (_, r) = s.post(&format!("/v1/instances/{id}/stdin"), json!({"input": "x = 'kept'"})).await;
    assert_eq!(r["stdout"], "", "{r}");
    let (_, r) = s.post(&format!("/v1/instances/{id}/stdin"), json!({"input": "print(x)"})).await;
    assert_eq!(r["stdout"].as_str().unwrap().trim(), "kept", "{r}");
    let (_, logs) = s.get(&format!("/v1/instances/{id}/logs")).await;
    assert!(logs["logs"].as_array().unwrap().iter().any(|l| l["message"].as_str().unwrap().contains("42")), "{logs}");
    let (status, err) = s.post(&format!("/v1/instances/{id}/stdin"), json!({"input": "x", "quiet_ms": 5})).await;
    assert_eq!((status, err["error"]["details"]["field"].as_str()), (400, Some("quiet_ms")), "{err}");

    // An instance whose program does not read stdin says so.
    let plain = s.create_instance(json!({})).await;
    let pid = plain["id"].as_str().unwrap();
    let (status, err) = s.post(&format!("/v1/instances/{pid}/stdin"), json!({"input": "hi"})).await;
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("stdin_unavailable")), "{err}");
    for i in [id, pid] {
        s.call(Method::DELETE, &format!("/v1/instances/{i}?purge=true"), Some(&s.key), None).await;
    }
}
