//! Admin keys cannot be taken away by a tenant's ordinary key, the last one cannot
//! be deleted, and the data dir keeps its secrets to the server's user.

use berth_test_util::TestServer;
use reqwest::Method;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn only_admins_manage_admin_keys_and_the_last_one_stays() {
    let s = TestServer::start().await;
    let admin = s.admin_key.clone();
    let (_, keys) = s.call(Method::GET, "/v1/keys", Some(&admin), None).await;
    let admin_id = keys["data"].as_array().unwrap().iter().find(|k| k["admin"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // An ordinary key of the same workspace.
    let (st, plain) = s.call(Method::POST, "/v1/keys", Some(&admin), Some(json!({"name": "app"}))).await;
    assert_eq!((st, plain["admin"].as_bool()), (201, Some(false)), "{plain}");
    let plain_key = plain["key"].as_str().unwrap().to_string();
    // It can neither delete the admin key nor mint an admin key.
    let (st, err) = s.call(Method::DELETE, &format!("/v1/keys/{admin_id}"), Some(&plain_key), None).await;
    assert_eq!((st, err["error"]["code"].as_str()), (403, Some("forbidden")), "{err}");
    let (st, err) = s.call(Method::POST, "/v1/keys", Some(&plain_key), Some(json!({"admin": true}))).await;
    assert_eq!((st, err["error"]["code"].as_str()), (403, Some("forbidden")), "{err}");
    assert_eq!(s.call(Method::GET, "/v1/workspaces", Some(&admin), None).await.0, 200, "the admin key still works");

    // The only admin key cannot be deleted, even by itself.
    let (st, err) = s.call(Method::DELETE, &format!("/v1/keys/{admin_id}"), Some(&admin), None).await;
    assert_eq!((st, err["error"]["code"].as_str()), (409, Some("last_admin_key")), "{err}");

    // An admin mints another admin key, which can then retire the first.
    let (st, second) = s.call(Method::POST, "/v1/keys", Some(&admin), Some(json!({"admin": true}))).await;
    assert_eq!((st, second["admin"].as_bool()), (201, Some(true)), "{second}");
    let second_key = second["key"].as_str().unwrap().to_string();
    let (st, _) = s.call(Method::DELETE, &format!("/v1/keys/{admin_id}"), Some(&second_key), None).await;
    assert_eq!(st, 200);
    assert_eq!(s.call(Method::GET, "/v1/keys", Some(&admin), None).await.0, 401, "the deleted key stops working");
    let (st, ws) = s.call(Method::POST, "/v1/workspaces", Some(&second_key), Some(json!({"name": "tenant"}))).await;
    assert_eq!(st, 201, "{ws}");
    // An ordinary key may still delete ordinary keys.
    let plain_id = plain["id"].as_str().unwrap();
    assert_eq!(s.call(Method::DELETE, &format!("/v1/keys/{plain_id}"), Some(&plain_key), None).await.0, 200);
}

#[tokio::test]
async fn the_data_dir_and_database_are_private_even_when_they_were_not() {
    let mut s = TestServer::start().await;
    let dir = s.data_dir().to_path_buf();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("berth.db")), 0o600);
    // Loosened by hand (or made by an older berth): the next start tightens them.
    s.terminate();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.join("berth.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    s.restart().await;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("berth.db")), 0o600);
    for side in ["berth.db-wal", "berth.db-shm"] {
        let p = dir.join(side);
        if p.exists() {
            assert_eq!(mode(&p) & 0o077, 0, "{side} is readable by others");
        }
    }
}

#[test]
fn a_short_admin_key_is_refused_at_start() {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(berth_test_util::server::berth_bin())
        .args(["server", "--listen", "127.0.0.1:0", "--edge-listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env("BERTH_ADMIN_KEY", "sk_password1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BERTH_ADMIN_KEY must be at least 32"), "{err}");
}

#[tokio::test]
async fn an_expiring_key_stops_working_and_its_streams_close() {
    use futures_util::StreamExt;
    let s = TestServer::start().await;
    let admin = s.admin_key.clone();
    let (st, err) = s.call(Method::POST, "/v1/keys", Some(&admin), Some(json!({"expires_in_secs": 0}))).await;
    assert_eq!((st, err["error"]["details"]["field"].as_str()), (400, Some("expires_in_secs")), "{err}");
    let id = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    let (st, k) = s.call(Method::POST, "/v1/keys", Some(&admin), Some(json!({"expires_in_secs": 3}))).await;
    assert_eq!(st, 201, "{k}");
    assert!(k["expires_at"].as_i64().unwrap() > k["created_at"].as_i64().unwrap());
    let key = k["key"].as_str().unwrap().to_string();
    assert_eq!(s.call(Method::GET, &format!("/v1/instances/{id}"), Some(&key), None).await.0, 200);
    // A log follow opened with it, left open.
    let resp =
        s.http().get(format!("{}/v1/instances/{id}/logs?follow=true", s.base)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let opened = std::time::Instant::now();
    let mut body = resp.bytes_stream();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its key");
    let after = opened.elapsed().as_secs_f64();
    assert!(after >= 1.0, "the stream ended before the key expired ({after:.1} s)");
    assert_eq!(s.call(Method::GET, &format!("/v1/instances/{id}"), Some(&key), None).await.0, 401);
    assert_eq!(s.call(Method::GET, &format!("/v1/instances/{id}"), Some(&admin), None).await.0, 200);
}

#[tokio::test]
async fn an_instance_key_reaches_its_instance_and_nothing_else() {
    use berth_test_util::app::host_of;
    let s = TestServer::shared().await;
    let a = s.create_instance(json!({})).await;
    let b = s.create_instance(json!({})).await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let (st, k) =
        s.call(Method::POST, "/v1/keys", Some(&s.key), Some(json!({"name": "end-user", "instance": a_id}))).await;
    assert_eq!((st, k["instance"].as_str(), k["admin"].as_bool()), (201, Some(a_id), Some(false)), "{k}");
    let key = k["key"].as_str().unwrap().to_string();

    // At the edge: its instance's URL, and no other (not found, as if it did not exist).
    let edge = |inst: &serde_json::Value| {
        s.edge(Method::GET, &host_of(inst["url"].as_str().unwrap()), "/health").bearer_auth(&key).send()
    };
    assert_eq!(edge(&a).await.unwrap().status(), 200);
    assert_eq!(edge(&b).await.unwrap().status(), 404);

    // On the hosting API: reading its instance, and nothing else.
    for path in [format!("/v1/instances/{a_id}"), format!("/v1/instances/{a_id}/health")] {
        let (st, body) = s.call(Method::GET, &path, Some(&key), None).await;
        assert_eq!(st, 200, "{path}: {body}");
    }
    let refused = [
        (Method::GET, format!("/v1/instances/{b_id}"), None),
        (Method::GET, "/v1/instances".to_string(), None),
        (Method::POST, format!("/v1/instances/{a_id}/exec"), Some(json!({"command": ["true"]}))),
        (Method::POST, format!("/v1/instances/{a_id}/stop"), None),
        (Method::DELETE, format!("/v1/instances/{a_id}"), None),
        (Method::PATCH, format!("/v1/instances/{a_id}"), Some(json!({"env": {"A": "1"}}))),
        (Method::GET, "/v1/keys".to_string(), None),
        (Method::POST, "/v1/keys".to_string(), Some(json!({"name": "more"}))),
        (Method::POST, "/v1/instances".to_string(), Some(json!({}))),
    ];
    for (method, path, body) in refused {
        let (st, err) = s.call(method.clone(), &path, Some(&key), body).await;
        assert_eq!((st, err["error"]["code"].as_str()), (403, Some("forbidden")), "{method} {path}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(a_id),
            "the refusal says what the key is for: {err}"
        );
    }
    let (_, listed) = s.call(Method::GET, &format!("/v1/instances/{a_id}"), Some(&s.key), None).await;
    assert_eq!(listed["status"], "running", "the refused stop did nothing");

    // Bad requests for instance keys.
    let (st, err) = s.call(Method::POST, "/v1/keys", Some(&s.key), Some(json!({"instance": "inst_nope"}))).await;
    assert_eq!((st, err["error"]["code"].as_str()), (404, Some("instance_not_found")), "{err}");
    let other = s.create_workspace("stranger").await;
    let (st, err) = s.call(Method::POST, "/v1/keys", Some(&other), Some(json!({"instance": a_id}))).await;
    assert_eq!((st, err["error"]["code"].as_str()), (404, Some("instance_not_found")), "another workspace's: {err}");
    let (st, err) =
        s.call(Method::POST, "/v1/keys", Some(&s.admin_key), Some(json!({"instance": a_id, "admin": true}))).await;
    assert_eq!(
        (st, err["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "an instance key is never an admin key: {err}"
    );

    // Deleted with the workspace's key: it stops working at once.
    let (_, keys) = s.call(Method::GET, "/v1/keys", Some(&s.key), None).await;
    assert!(keys["data"].as_array().unwrap().iter().any(|x| x["instance"] == a_id), "listed with its scope: {keys}");
    let kid = k["id"].as_str().unwrap();
    assert_eq!(s.call(Method::DELETE, &format!("/v1/keys/{kid}"), Some(&s.key), None).await.0, 200);
    assert_eq!(s.call(Method::GET, &format!("/v1/instances/{a_id}"), Some(&key), None).await.0, 401);

    // Purging an instance deletes its keys with it.
    let (_, k2) = s.call(Method::POST, "/v1/keys", Some(&s.key), Some(json!({"instance": b_id}))).await;
    let key2 = k2["key"].as_str().unwrap().to_string();
    assert_eq!(s.call(Method::GET, &format!("/v1/instances/{b_id}"), Some(&key2), None).await.0, 200);
    let (st, _) = s.call(Method::DELETE, &format!("/v1/instances/{b_id}?purge=true"), Some(&s.key), None).await;
    assert_eq!(st, 200);
    assert_eq!(s.call(Method::GET, &format!("/v1/instances/{b_id}"), Some(&key2), None).await.0, 401);
    let (_, keys) = s.call(Method::GET, "/v1/keys", Some(&s.key), None).await;
    assert!(!keys["data"].as_array().unwrap().iter().any(|x| x["instance"] == b_id), "{keys}");
}

#[tokio::test]
async fn failed_authentications_are_limited_per_address() {
    use berth_test_util::ServerOptions;
    let s = TestServer::start_with(ServerOptions {
        extra_args: vec!["--auth-failures-per-minute".into(), "20".into()],
        ..Default::default()
    })
    .await;
    let inst = s.create_instance(json!({})).await;
    let host = berth_test_util::app::host_of(inst["url"].as_str().unwrap());
    // No key at all is not a failed guess.
    for _ in 0..8 {
        assert_eq!(s.call(Method::GET, "/v1/instances", None, None).await.0, 401);
    }
    // Twenty wrong keys, across both planes, are answered 401 ...
    for i in 0..20 {
        let st = if i % 2 == 0 {
            s.call(Method::GET, "/v1/instances", Some("sk_guess"), None).await.0
        } else {
            s.edge(Method::GET, &host, "/health").bearer_auth("sk_guess").send().await.unwrap().status().as_u16()
        };
        assert_eq!(st, 401, "guess {i}");
    }
    // ... then the address is refused for a while, on both, whatever key it shows.
    let (st, err) = s.call(Method::GET, "/v1/instances", Some("sk_guess"), None).await;
    assert_eq!((st, err["error"]["code"].as_str()), (429, Some("rate_limited")), "{err}");
    let r = s.edge(Method::GET, &host, "/health").bearer_auth(&s.key).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&wait), "20 a minute: one more within 3 s, not {wait} s");
    let resp = s.http().get(format!("{}/v1/instances", s.base)).bearer_auth(&s.key).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    // Once a failure's worth of time has passed, a right key gets in again.
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    assert_eq!(s.call(Method::GET, "/v1/instances", Some(&s.key), None).await.0, 200);
}
