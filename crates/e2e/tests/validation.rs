//! Bad input gets a 400 naming the field, and leaves nothing behind. The tests
//! share one server (each in a workspace of its own).

use berth_test_util::docker::containers_with_label;
use berth_test_util::TestServer;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn bad_create_bodies_name_the_field_and_create_nothing() {
    let s = TestServer::shared().await;
    let long_meta: serde_json::Map<String, serde_json::Value> =
        (0..60).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases = vec![
        (json!({"size": 3}), "size"),
        (json!({"size": "big"}), "size"),
        (json!({"name": "x".repeat(101)}), "name"),
        (json!({"name": 5}), "name"),
        (json!({"metadata": {"a": {"nested": true}}}), "metadata.a"),
        (json!({"metadata": {"a": 1}}), "metadata.a"),
        (json!({"metadata": "flat"}), "metadata"),
        (json!({"metadata": long_meta}), "metadata"),
        (json!({"metadata": {"k": "v".repeat(600)}}), "metadata.k"),
        (json!({"env": {"BAD-KEY": "x"}}), "env.BAD-KEY"),
        (json!({"env": {"9LIVES": "x"}}), "env.9LIVES"),
        (json!({"env": {"HOME": "/root"}}), "env.HOME"),
        (json!({"env": {"A": 1}}), "env.A"),
        (json!({"region": "mars"}), "region"),
        (json!({"lifecycle": {"mode": "sometimes"}}), "lifecycle.mode"),
        (json!({"budget": {"managed_cap_usd": -1}}), "budget.managed_cap_usd"),
        (json!({"budget": {"topup_micros": -5}}), "budget.topup_micros"),
        (json!({"colour": "red"}), "colour"),
        (json!({"budget": {"cap": 1}}), "budget.cap"),
    ];
    for (body, field) in cases {
        let (st, err) = s.post("/v1/instances", body.clone()).await;
        assert_eq!(st, 400, "{body} → {err}");
        assert_eq!(err["error"]["code"], "invalid_request", "{body}");
        assert_eq!(err["error"]["details"]["field"], field, "{body} → {err}");
        assert!(err["error"]["message"].as_str().unwrap().contains(field.split('.').next_back().unwrap()), "{err}");
    }
    // An unknown template is a missing resource, not a malformed body.
    let (st, err) = s.post("/v1/instances", json!({"template": "nope"})).await;
    assert_eq!((st, err["error"]["code"].as_str()), (404, Some("template_not_found")), "{err}");
    // Malformed JSON and wrong content types.
    let url = format!("{}/v1/instances", s.base);
    let r = s
        .http()
        .post(&url)
        .bearer_auth(&s.key)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err: serde_json::Value = r.json().await.unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("malformed JSON"), "{err}");
    let r = s
        .http()
        .post(&url)
        .bearer_auth(&s.key)
        .header("content-type", "text/plain")
        .body("{\"name\":\"x\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = s
        .http()
        .post(&url)
        .bearer_auth(&s.key)
        .header("content-type", "application/json")
        .body("[1,2]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A body larger than the route takes: 413, saying so, and the connection closes
    // (its unread rest cannot precede another request).
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(3 << 20));
    let r = s.http().post(&url).bearer_auth(&s.key).header("content-type", "application/json").body(big).send();
    let r = r.await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers().get("connection").map(|v| v.to_str().unwrap()), Some("close"));
    let err: serde_json::Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "payload_too_large", "{err}");
    // Nothing was created.
    let (_, list) = s.get("/v1/instances").await;
    assert_eq!(list["data"], json!([]));
    assert!(containers_with_label("berth.workspace", s.workspace_id().unwrap()).is_empty());
}

#[tokio::test]
async fn bad_queries_and_ids_are_refused_cleanly() {
    let s = TestServer::shared().await;
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("status=sleeping", "status"),
        ("cursor=zzz", "cursor"),
    ] {
        let (st, err) = s.get(&format!("/v1/instances?{q}")).await;
        assert_eq!(st, 400, "{q}: {err}");
        assert_eq!(err["error"]["details"]["field"], field, "{q}: {err}");
    }
    for id in ["inst_doesnotexi", "nonsense", "inst_%20", "inst_AAAAAAAAAA"] {
        let (st, err) = s.get(&format!("/v1/instances/{id}")).await;
        assert_eq!(st, 404, "{id}: {err}");
        assert_eq!(err["error"]["code"], "instance_not_found");
    }
    let (st, _) = s.post("/v1/instances/inst_doesnotexi/explode", json!({})).await;
    assert_eq!(st, 404);
    let (st, err) =
        s.call(Method::PATCH, "/v1/instances/inst_doesnotexi", Some(&s.key), Some(json!({"size": 3}))).await;
    assert_eq!((st, err["error"]["details"]["field"].as_str()), (400, Some("size")));
    let (st, err) = s.call(Method::POST, "/v1/workspaces", Some(&s.admin_key), Some(json!({"name": ""}))).await;
    assert_eq!((st, err["error"]["details"]["field"].as_str()), (400, Some("name")));
}

#[tokio::test]
async fn the_workspace_instance_limit_answers_422_and_creates_nothing() {
    let s = TestServer::shared().await;
    let body = json!({"name": "small", "instance_limit": 1});
    let (st, ws) = s.call(Method::POST, "/v1/workspaces", Some(&s.admin_key), Some(body)).await;
    assert_eq!(st, 201);
    let key = ws["key"].as_str().unwrap().to_string();
    let (st, first) = s.call(Method::POST, "/v1/instances", Some(&key), Some(json!({}))).await;
    assert_eq!(st, 201, "{first}");
    let (st, err) = s.call(Method::POST, "/v1/instances", Some(&key), Some(json!({}))).await;
    assert_eq!((st, err["error"]["code"].as_str()), (422, Some("limit_exceeded")), "{err}");
    assert_eq!(containers_with_label("berth.workspace", ws["id"].as_str().unwrap()).len(), 1);
    // A deleted instance frees its slot; restoring it past the limit is refused.
    let id = first["id"].as_str().unwrap();
    let (st, _) = s.call(Method::DELETE, &format!("/v1/instances/{id}"), Some(&key), None).await;
    assert_eq!(st, 200);
    let (st, _) = s.call(Method::POST, "/v1/instances", Some(&key), Some(json!({}))).await;
    assert_eq!(st, 201);
    let (st, err) = s.call(Method::POST, &format!("/v1/instances/{id}/restore"), Some(&key), None).await;
    assert_eq!((st, err["error"]["code"].as_str()), (422, Some("limit_exceeded")), "{err}");
}
