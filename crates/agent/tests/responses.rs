//! `POST /v1/responses` and friends against a scripted OpenAI-compatible model:
//! plain and streamed answers, stored responses, models, auth, bad requests.

mod support;

use berth_test_util::llm::{text, Reply, ScriptedLlm};
use serde_json::json;
use support::{shape, Agent, Dirs};

#[tokio::test]
async fn non_streaming_text_reply() {
    let llm = ScriptedLlm::openai(|_| text(&["Hello", ", ", "world!"])).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;

    let (status, r) = agent.post("/v1/responses", &json!({"input": "hi", "metadata": {"k": "v"}})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["model"], "scripted-model");
    assert_eq!(r["metadata"]["k"], "v");
    assert!(r["id"].as_str().unwrap().starts_with("resp_"));
    assert!(r["session_id"].as_str().unwrap().starts_with("sess_"));
    let msg = &r["output"][0];
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["content"][0]["type"], "output_text");
    assert_eq!(msg["content"][0]["text"], "Hello, world!");
    assert_eq!(r["usage"]["input_tokens"], 11);
    assert_eq!(r["usage"]["output_tokens"], 7);
    assert_eq!(r["usage"]["total_tokens"], 18);

    // What the model was sent: system prompt, the user's text, our tools, streaming.
    let sent = &llm.requests()[0];
    assert_eq!(sent.headers["authorization"], "Bearer test-key");
    assert_eq!(sent.body["model"], "scripted-model");
    assert_eq!(sent.body["stream"], true);
    assert_eq!(sent.body["messages"][0]["role"], "system");
    assert_eq!(sent.body["messages"][1], json!({"role": "user", "content": "hi"}));
    let tools: Vec<&str> =
        sent.body["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert_eq!(tools, ["shell", "read_file", "write_file", "list_dir", "memory_read", "memory_write"]);

    let (status, stored) = agent.get(&format!("/v1/responses/{}", r["id"].as_str().unwrap())).await;
    assert_eq!(status, 200);
    assert_eq!(stored, r);
}

#[tokio::test]
async fn streaming_text_event_order() {
    let llm = ScriptedLlm::openai(|_| text(&["One", " two", " three"])).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;

    let events = agent.stream(&json!({"input": [{"role": "user", "content": "count"}], "model": "m2"})).await;
    assert_eq!(
        shape(&events),
        [
            "created",
            "in_progress",
            "output_item.added",
            "content_part.added",
            "output_text.delta*",
            "output_text.done",
            "content_part.done",
            "output_item.done",
            "completed"
        ]
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.data["sequence_number"], i as u64, "sequence numbers count up");
    }
    // Every provider chunk is its own delta: nothing is buffered.
    let deltas: Vec<&str> = events
        .iter()
        .filter(|e| e.event == "response.output_text.delta")
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, ["One", " two", " three"]);
    assert_eq!(events[0].data["response"]["status"], "in_progress");
    let done = &events.last().unwrap().data["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["model"], "m2");
    assert_eq!(done["output"][0]["content"][0]["text"], "One two three");
    let item_id = events[2].data["item"]["id"].as_str().unwrap();
    assert!(events[3..8].iter().all(|e| e.data["item_id"] == item_id));

    let (_, stored) = agent.get(&format!("/v1/responses/{}", done["id"].as_str().unwrap())).await;
    assert_eq!(&stored, done);
}

#[tokio::test]
async fn reasoning_is_streamed_as_its_own_item() {
    let llm = ScriptedLlm::openai(|_| Reply::Reasoning("think think".into(), vec!["42".into()])).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let events = agent.stream(&json!({"input": "q"})).await;
    assert_eq!(shape(&events)[2..6], ["output_item.added", "reasoning.delta", "reasoning.done", "output_item.done"]);
    let done = &events.last().unwrap().data["response"];
    assert_eq!(done["output"][0]["type"], "reasoning");
    assert_eq!(done["output"][0]["content"][0]["text"], "think think");
    assert_eq!(done["output"][1]["content"][0]["text"], "42");
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let llm = ScriptedLlm::openai(|_| text(&["x"])).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let cases = [
        (json!({}), 400, "missing_required_parameter", Some("input")),
        (json!({"input": 5}), 400, "invalid_value", Some("input")),
        (json!({"input": []}), 400, "invalid_value", Some("input")),
        (json!({"input": "x", "stream": "yes"}), 400, "invalid_type", None),
        (json!({"input": "x", "metadata": "m"}), 400, "invalid_type", None),
        (json!({"input": [{"role": "wizard", "content": "x"}]}), 400, "invalid_value", Some("input[0].role")),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
            400,
            "missing_required_parameter",
            Some("input[0].content[0].image_url"),
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_audio", "data": "x"}]}]}),
            400,
            "invalid_value",
            Some("input[0].content[0].type"),
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "file:///etc/passwd"}]}]}),
            400,
            "invalid_value",
            Some("input[0].content[0].image_url"),
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_file", "filename": "a.bin", "file_data": "//79"}]}]}),
            400,
            "invalid_value",
            Some("input[0].content[0].file_data"),
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/y.txt"}]}]}),
            400,
            "invalid_value",
            Some("input[0].content[0].file_url"),
        ),
        (json!({"input": "x", "text": {"format": {"type": "yaml"}}}), 400, "invalid_value", Some("text.format.type")),
        (json!({"input": "x", "tool_choice": "sometimes"}), 400, "invalid_value", Some("tool_choice")),
        (json!({"input": "x", "background": true, "store": false}), 400, "invalid_value", Some("store")),
        (
            json!({"input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}}),
            400,
            "missing_required_parameter",
            Some("text.format.name"),
        ),
        (json!({"input": "x", "provider": "bogus"}), 400, "invalid_value", Some("provider")),
        (json!({"input": "x", "session_id": "sess_nope"}), 404, "session_not_found", None),
        (json!({"input": "x", "previous_response_id": "resp_nope"}), 404, "previous_response_not_found", None),
    ];
    for (body, status, code, param) in cases {
        let (s, e) = agent.post("/v1/responses", &body).await;
        assert_eq!(s.as_u16(), status, "{body} -> {e}");
        assert_eq!(e["error"]["code"], code, "{body} -> {e}");
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert!(e["error"]["message"].as_str().unwrap().len() > 10);
        if let Some(p) = param {
            assert_eq!(e["error"]["param"], p, "{body} -> {e}");
        }
    }
    let (s, e) = agent.post_raw("/v1/responses", "{not json").await;
    assert_eq!((s.as_u16(), e["error"]["code"].as_str()), (400, Some("invalid_json")));
    let (s, e) = agent.post_raw("/v1/responses", "").await;
    assert_eq!((s.as_u16(), e["error"]["code"].as_str()), (400, Some("invalid_json")));
    let (s, e) = agent.get("/v1/responses/resp_nope").await;
    assert_eq!((s.as_u16(), e["error"]["code"].as_str()), (404, Some("response_not_found")));
    let (s, e) = agent.get("/v1/nothing-here").await;
    assert_eq!((s.as_u16(), e["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, e) = agent.delete("/v1/responses").await;
    assert_eq!((s.as_u16(), e["error"]["code"].as_str()), (405, Some("method_not_allowed")));
    // No turn was started by any of these.
    assert!(llm.requests().is_empty());
    let (_, list) = agent.get("/v1/sessions").await;
    assert_eq!(list["data"], json!([]));
}

#[tokio::test]
async fn no_model_anywhere_is_a_clear_400() {
    let llm = ScriptedLlm::openai(|_| text(&["x"])).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[("BERTH_MODEL", "")]).await;
    let (s, e) = agent.post("/v1/responses", &json!({"input": "x"})).await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["param"], "model");
    assert!(e["error"]["message"].as_str().unwrap().contains("BERTH_MODEL"));
}

#[tokio::test]
async fn gateway_token_guards_everything_but_health() {
    let llm = ScriptedLlm::openai(|_| text(&["x"])).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[("BERTH_GATEWAY_TOKEN", "s3cret")]).await;
    let http = reqwest::Client::new();
    let health = http.get(format!("{}/health", agent.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let h: serde_json::Value = health.json().await.unwrap();
    assert_eq!(h["status"], "ok");
    assert!(h["version"].is_string() && h["uptime_secs"].is_u64());
    for (path, token) in [("/v1/models", None), ("/v1/sessions", Some("wrong")), ("/v1/nope", None)] {
        let mut req = http.get(format!("{}{path}", agent.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert_eq!(e["error"]["type"], "authentication_error");
        assert_eq!(e["error"]["code"], "invalid_api_key");
    }
    let r = http.post(format!("{}/v1/responses", agent.url)).json(&json!({"input": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // With the token (the harness sends it), all is well.
    let (s, _) = agent.get("/v1/sessions").await;
    assert_eq!(s, 200);
    let (s, r) = agent.post("/v1/responses", &json!({"input": "x"})).await;
    assert_eq!((s.as_u16(), r["status"].as_str()), (200, Some("completed")));
}

#[tokio::test]
async fn models_lists_default_and_provider_models() {
    let llm = ScriptedLlm::openai(|_| text(&["x"])).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let (s, m) = agent.get("/v1/models").await;
    assert_eq!(s, 200);
    assert_eq!(m["object"], "list");
    let ids: Vec<&str> = m["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["scripted-model", "scripted-1"]);
    assert!(m["data"].as_array().unwrap().iter().all(|m| m["object"] == "model"));
}
