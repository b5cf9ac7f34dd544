//! Tenancy, authentication and isolation between instances. Tests that need no
//! special flags share one server (each in a workspace of its own).

use berth_test_util::docker::{exec, inspect};
use berth_test_util::{ServerOptions, TestServer};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn keys_are_required_and_other_workspaces_see_nothing() {
    let s = TestServer::shared().await;
    let inst = s.create_instance(json!({})).await;
    let id = inst["id"].as_str().unwrap().to_string();

    // No key, a bad key: 401 with the error envelope.
    let (st, body) = s.call(Method::GET, "/v1/instances", None, None).await;
    assert_eq!((st, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (st, _) = s.call(Method::GET, "/v1/instances", Some("sk_nope"), None).await;
    assert_eq!(st, 401);
    // X-API-Key works like Bearer.
    let r = s.http().get(format!("{}/v1/instances/{id}", s.base)).header("X-API-Key", &s.key).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // A second workspace, made by the admin.
    let other = s.create_workspace("acme").await;
    assert!(other.starts_with("sk_"));
    // Its key sees 404 on every route of the first workspace's instance.
    let routes: Vec<(Method, String)> = vec![
        (Method::GET, format!("/v1/instances/{id}")),
        (Method::PATCH, format!("/v1/instances/{id}")),
        (Method::DELETE, format!("/v1/instances/{id}")),
        (Method::POST, format!("/v1/instances/{id}/stop")),
        (Method::POST, format!("/v1/instances/{id}/start")),
        (Method::POST, format!("/v1/instances/{id}/restart")),
        (Method::POST, format!("/v1/instances/{id}/pause")),
        (Method::POST, format!("/v1/instances/{id}/resume")),
        (Method::POST, format!("/v1/instances/{id}/restore")),
        (Method::POST, format!("/v1/instances/{id}/update")),
        (Method::POST, format!("/v1/instances/{id}/exec")),
        (Method::GET, format!("/v1/instances/{id}/logs")),
        (Method::GET, format!("/v1/instances/{id}/health")),
        (Method::GET, format!("/v1/instances/{id}/events")),
        (Method::GET, format!("/v1/instances/{id}/shell")),
    ];
    for (m, path) in &routes {
        let body = match path.rsplit('/').next() {
            Some("exec") => Some(json!({"command": ["true"]})),
            _ if *m == Method::PATCH => Some(json!({"name": "x"})),
            _ => None,
        };
        let (st, err) = s.call(m.clone(), path, Some(&other), body).await;
        assert_eq!(st, 404, "{m} {path}: {err}");
        assert_eq!(err["error"]["code"], "instance_not_found");
    }
    let (_, list) = s.call(Method::GET, "/v1/instances", Some(&other), None).await;
    assert_eq!(list["data"], json!([]));
    // Non-admin keys cannot make workspaces.
    for key in [&other, &s.key] {
        let (st, _) = s.call(Method::POST, "/v1/workspaces", Some(key), Some(json!({"name": "x"}))).await;
        assert_eq!(st, 403);
    }
    // The instance is untouched.
    let (_, got) = s.get(&format!("/v1/instances/{id}")).await;
    assert_eq!(got["status"], "running");
}

#[tokio::test]
async fn keys_are_shown_once_and_revocable() {
    let s = TestServer::shared().await;
    let (st, key) = s.post("/v1/keys", json!({"name": "ci"})).await;
    assert_eq!(st, 201);
    let secret = key["key"].as_str().unwrap().to_string();
    let (_, list) = s.get("/v1/keys").await;
    let listed = list["data"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|k| k.get("key").is_none()), "secrets never listed: {list}");
    let (st, _) = s.call(Method::GET, "/v1/instances", Some(&secret), None).await;
    assert_eq!(st, 200);
    let (st, _) =
        s.call(Method::DELETE, &format!("/v1/keys/{}", key["id"].as_str().unwrap()), Some(&s.key), None).await;
    assert_eq!(st, 200);
    let (st, _) = s.call(Method::GET, "/v1/instances", Some(&secret), None).await;
    assert_eq!(st, 401);
    // Stored hashed: the secret is not in the database file.
    let db = std::fs::read(s.data_dir().join("berth.db")).unwrap();
    let wal = std::fs::read(s.data_dir().join("berth.db-wal")).unwrap_or_default();
    let needle = secret.as_bytes();
    assert!(!db.windows(needle.len()).any(|w| w == needle) && !wal.windows(needle.len()).any(|w| w == needle));
}

#[tokio::test]
async fn instances_reach_neither_each_other_nor_the_control_plane() {
    let s = TestServer::shared().await;
    let a = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    let b = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    let b_ip = inspect(&format!("berth-{b}"), "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
    let gw = inspect(&format!("berth-{a}"), "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}");
    assert!(!b_ip.is_empty() && !gw.is_empty());
    // B's agent answers inside B, but A cannot open a connection to it.
    assert_eq!(exec(&b, "timeout 3 wget -q -O - http://127.0.0.1:3737/health >/dev/null").0, 0);
    let (code, out) = exec(&a, &format!("timeout 3 wget -q -O - http://{b_ip}:3737/health"));
    assert_ne!(code, 0, "A reached B: {out}");
    // The hosting API is not reachable from inside (host side of the bridge).
    let port = s.base.rsplit(':').next().unwrap();
    let (code, out) = exec(&a, &format!("timeout 3 wget -q -O - http://{gw}:{port}/healthz"));
    assert_ne!(code, 0, "instance reached the hosting API: {out}");
    // No Docker socket, not privileged.
    assert_ne!(exec(&a, "test -e /var/run/docker.sock").0, 0);
    assert_ne!(exec(&a, "test -e /run/docker.sock").0, 0);
    let (_, caps) = exec(&a, "grep CapEff /proc/self/status");
    assert!(!caps.contains("0000003fffffffff") && !caps.contains("000001ffffffffff"), "{caps}");
}

#[tokio::test]
async fn a_control_plane_listening_on_all_addresses_is_still_out_of_reach() {
    let s = TestServer::start_with(ServerOptions { listen_host: "0.0.0.0".into(), ..Default::default() }).await;
    let a = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    let gw = inspect(&format!("berth-{a}"), "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}");
    let port = s.base.rsplit(':').next().unwrap();
    // The host itself reaches it on the bridge address; the instance does not.
    let r = s.http().get(format!("http://{gw}:{port}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for p in [port.to_string(), s.edge_port().to_string()] {
        let (code, out) = exec(&a, &format!("timeout 3 wget -q -O - http://{gw}:{p}/healthz"));
        assert_ne!(code, 0, "instance reached port {p} of the control plane: {out}");
    }
}
