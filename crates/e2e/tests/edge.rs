//! The edge: instance URLs, key checks before any byte reaches the instance,
//! the key swapped for the instance's gateway token, SSE passed through unbuffered.

use axum::response::sse::{Event, Sse};
use axum::routing::post;
use berth_test_util::docker::{docker, exec};
use berth_test_util::TestServer;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::{Duration, Instant};

/// An OpenAI-compatible model that streams "Hello", " from", " the model" slowly.
async fn scripted_model() -> u16 {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            let chunks = ["Hello", " from", " the model"];
            let stream = futures_util::stream::iter(chunks.into_iter().enumerate()).then(|(i, c)| async move {
                tokio::time::sleep(Duration::from_millis(if i == 0 { 0 } else { 700 })).await;
                let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "model": "scripted",
                    "choices": [{"index": 0, "delta": {"content": c}, "finish_reason": null}]});
                Ok::<_, Infallible>(Event::default().data(chunk.to_string()))
            });
            let end = futures_util::stream::iter(vec![
                Ok(Event::default().data(
                    json!({"id": "c1", "object": "chat.completion.chunk", "model": "scripted",
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
                    .to_string(),
                )),
                Ok(Event::default().data("[DONE]")),
            ]);
            Sse::new(stream.chain(end))
        }),
    );
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn gateway_ip() -> String {
    docker(&["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", "berth-test"]).1
}

#[tokio::test]
async fn the_edge_routes_authenticates_and_streams() {
    let s = TestServer::start().await;
    let model_port = scripted_model().await;
    let llm = format!("http://{}:{model_port}/v1", gateway_ip());
    let inst = s.create_instance(json!({"env": {"BERTH_LLM_BASE_URL": llm, "BERTH_MODEL": "scripted"}})).await;
    let id = inst["id"].as_str().unwrap().to_string();
    let host = format!("{}.localhost:{}", &id[5..], s.edge_port());
    assert_eq!(inst["url"], format!("http://{host}"));
    let edge = |path: &str| s.http().get(format!("{}{path}", s.edge_base)).header("host", &host);

    // The key is checked at the edge.
    let r = edge("/health").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = edge("/health").bearer_auth("sk_wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let (_, other) = s.post("/v1/workspaces", json!({"name": "other"})).await;
    let r = edge("/v1/models").bearer_auth(other["key"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .http()
        .get(format!("{}/health", s.edge_base))
        .header("host", "zzzzzzzzzz.localhost")
        .bearer_auth(&s.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "instance_not_found");

    // With the key: through to the agent, which only accepts the gateway token.
    let r = edge("/health").bearer_auth(&s.admin_key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = edge("/v1/models").header("x-api-key", &s.admin_key).send().await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let (code, direct) = exec(&id, "wget -q -O - http://127.0.0.1:3737/v1/models 2>&1");
    assert_ne!(code, 0, "the agent answered without its gateway token: {direct}");

    // SSE passes through as produced, not buffered until the end.
    let started = Instant::now();
    let resp = s
        .http()
        .post(format!("{}/v1/responses", s.edge_base))
        .header("host", &host)
        .bearer_auth(&s.admin_key)
        .json(&json!({"input": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut first_delta = None;
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        if first_delta.is_none() && text.contains("response.output_text.delta") {
            first_delta = Some(started.elapsed());
        }
    }
    let total = started.elapsed();
    let first = first_delta.unwrap_or_else(|| panic!("no delta in:\n{text}"));
    assert!(total >= Duration::from_millis(1300), "{total:?}");
    assert!(first + Duration::from_millis(1000) < total, "first delta at {first:?} of {total:?}: buffered");
    assert!(text.contains("response.completed"), "{text}");
    assert!(text.contains("the model"));

    // A stopped instance's URL says so.
    s.post(&format!("/v1/instances/{id}/stop"), json!({})).await;
    let r = edge("/health").bearer_auth(&s.admin_key).send().await.unwrap();
    assert_eq!(r.status(), 409);
}

/// A model that first asks for the `shell` tool, then answers with what it returned.
async fn tool_calling_model() -> u16 {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(|axum::Json(req): axum::Json<Value>| async move {
            let messages = req["messages"].as_array().cloned().unwrap_or_default();
            let tool_result = messages.iter().rev().find(|m| m["role"] == "tool").map(|m| m["content"].to_string());
            let chunks: Vec<Value> = match tool_result {
                None => vec![
                    json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                        "function": {"name": "shell", "arguments":
                            json!({"command": "hostname > /home/agent/from-agent.txt && cat /home/agent/from-agent.txt"}).to_string()}}]},
                        "finish_reason": null}]}),
                    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
                ],
                Some(out) => vec![
                    json!({"choices": [{"index": 0, "delta": {"content": format!("the tool said {out}")}, "finish_reason": null}]}),
                    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
                ],
            };
            let events = chunks
                .into_iter()
                .map(|c| Ok::<_, Infallible>(Event::default().data(c.to_string())))
                .chain(std::iter::once(Ok(Event::default().data("[DONE]"))));
            Sse::new(futures_util::stream::iter(events))
        }),
    );
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test]
async fn the_agent_acts_on_its_own_computer_and_its_sessions_survive_a_restart() {
    let s = TestServer::start().await;
    let llm = format!("http://{}:{}/v1", gateway_ip(), tool_calling_model().await);
    let inst = s.create_instance(json!({"env": {"BERTH_LLM_BASE_URL": llm, "BERTH_MODEL": "scripted"}})).await;
    let id = inst["id"].as_str().unwrap().to_string();
    let host = format!("{}.localhost:{}", &id[5..], s.edge_port());
    let resp = s
        .http()
        .post(format!("{}/v1/responses", s.edge_base))
        .header("host", &host)
        .bearer_auth(&s.admin_key)
        .json(&json!({"input": "write your hostname to a file"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["status"], "completed", "{answer}");
    let label = &id[5..];
    let text = answer["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "message")
        .map(|i| i.to_string())
        .collect::<String>();
    assert!(text.contains(label), "the answer carries the tool's output (the instance's hostname): {answer}");
    assert!(
        answer["output"].as_array().unwrap().iter().any(|i| i["type"] == "function_call" && i["name"] == "shell"),
        "{answer}"
    );
    // The tool really ran inside the instance, in its persistent home.
    assert_eq!(exec(&id, "cat /home/agent/from-agent.txt").1, label);

    // Sessions live on the instance's volume: still there after a restart.
    let session = answer["session_id"].as_str().unwrap().to_string();
    let (st, _) = s.post(&format!("/v1/instances/{id}/restart"), json!({})).await;
    assert_eq!(st, 200);
    let r = s
        .http()
        .get(format!("{}/v1/sessions/{session}", s.edge_base))
        .header("host", &host)
        .bearer_auth(&s.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let history = r.text().await.unwrap();
    assert!(history.contains("write your hostname to a file") && history.contains("from-agent.txt"), "{history}");
}
