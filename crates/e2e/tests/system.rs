//! The unauthenticated operational routes.

use berth_test_util::TestServer;
use serde_json::{json, Value};

#[tokio::test]
async fn healthz_metrics_openapi_and_docs_answer_without_a_key() {
    let s = TestServer::start().await;
    let id = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    s.post(&format!("/v1/instances/{id}/exec"), json!({"command": ["true"]})).await;
    s.get("/v1/instances/inst_doesnotexi").await;

    let (st, h) = s.call(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!((st, h), (200, json!({"status": "ok"})));
    let (st, h) = s.call(reqwest::Method::GET, "/healthz?verbose=true", None, None).await;
    assert_eq!(st, 200);
    assert_eq!(
        (&h["status"], &h["database"]["backend"], &h["leader"]),
        (&json!("ok"), &json!("sqlite"), &json!(true)),
        "{h}"
    );
    assert!(h["database"]["ping_ms"].as_f64().is_some(), "{h}");

    let text = s.http().get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    for needle in [
        "berth_http_requests_total{method=\"POST\",route=\"/v1/instances\",status=\"201\"} 1",
        "route=\"/v1/instances/{id}\",status=\"404\"",
        "berth_http_request_duration_seconds_bucket",
        "berth_instances{kind=\"running\"} 1",
        "berth_execs_total{kind=\"completed\"} 1",
        "berth_exec_duration_seconds_count 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from /metrics:\n{text}");
    }

    let (st, doc) = s.call(reqwest::Method::GET, "/openapi.json", None, None).await;
    assert_eq!(st, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    for path in ["/v1/instances", "/v1/instances/{id}", "/v1/instances/{id}/exec", "/v1/keys", "/v1/workspaces"] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["schemas"].get("Instance").is_some());
    let create: &Value = &doc["paths"]["/v1/instances"]["post"];
    assert!(create["responses"].get("201").is_some());

    let html = s.http().get(format!("{}/docs", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("<h1>berth hosting API</h1>") && html.contains("/v1/instances/{id}/exec"));

    // The system template is listed; unknown ones are 404.
    let (st, tpl) = s.get("/v1/templates").await;
    assert_eq!(st, 200);
    assert_eq!(tpl["data"][0]["id"], "berth-agent");
    assert_eq!(tpl["data"][0]["ports"], json!([{"port": 3737, "default": true}]));
    let (st, e) = s.get("/v1/templates/nope").await;
    assert_eq!((st, e["error"]["code"].as_str()), (404, Some("template_not_found")));

    // Unknown routes answer the error envelope, not an empty 404.
    let (st, e) = s.get("/v1/nothing-here").await;
    assert_eq!((st, e["error"]["code"].as_str()), (404, Some("not_found")));
}
