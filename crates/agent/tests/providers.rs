//! LLM providers: the Anthropic Messages protocol, and provider failures
//! (HTTP errors, a stream cut mid-answer, malformed chunks, silence) that end
//! the turn as `response.failed` with an actionable message, leaving the
//! session consistent.

mod support;

use berth_test_util::llm::{last_role, last_text, text, tool, Reply, ScriptedLlm};
use serde_json::{json, Value};
use support::{read, shape, Agent, Dirs};

#[tokio::test]
async fn anthropic_streams_text_and_runs_tools() {
    let claude = ScriptedLlm::anthropic(|body| match (last_role(body).as_str(), last_text(body)) {
        (_, t) if t == "write it" => tool("write_file", json!({"path": "hi.txt", "content": "from claude"})),
        (_, t) if t.starts_with("wrote") => text(&["Wrote ", "the file."]),
        _ => text(&["Hi", " from", " Claude"]),
    })
    .await;
    let openai = ScriptedLlm::openai(|_| text(&["openai"])).await;
    let dirs = Dirs::new();
    let env = [("BERTH_ANTHROPIC_BASE_URL", claude.base_url.as_str()), ("BERTH_ANTHROPIC_API_KEY", "sk-ant-test")];
    let agent = Agent::start(&dirs, &openai.base_url, &env).await;

    // `claude-*` goes to Anthropic when a key is set; streamed chunk by chunk.
    let events = agent.stream(&json!({"input": "hello", "model": "claude-test"})).await;
    let deltas: Vec<&str> = events
        .iter()
        .filter(|e| e.event == "response.output_text.delta")
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, ["Hi", " from", " Claude"]);
    let done = &events.last().unwrap().data["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["usage"]["input_tokens"], 13);
    assert_eq!(done["usage"]["output_tokens"], 5);
    let sent = &claude.requests()[0];
    assert_eq!(sent.headers["x-api-key"], "sk-ant-test");
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert_eq!(sent.body["model"], "claude-test");
    assert!(sent.body["system"].as_str().unwrap().contains("shell"));
    assert_eq!(sent.body["tools"][0]["name"], "shell");
    assert!(sent.body["tools"][0]["input_schema"].is_object());

    // The same session, on with a tool call, chosen explicitly by `provider`.
    let sid = done["session_id"].clone();
    let events = agent
        .stream(&json!({"input": "write it", "model": "some-model", "provider": "anthropic", "session_id": sid}))
        .await;
    assert_eq!(read(&dirs.workdir, "hi.txt"), "from claude");
    let done = &events.last().unwrap().data["response"];
    let kinds: Vec<&str> = done["output"].as_array().unwrap().iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["function_call", "function_call_output", "message"]);
    assert_eq!(done["output"][0]["arguments"], r#"{"content":"from claude","path":"hi.txt"}"#);
    // History went over as alternating turns with tool_use / tool_result blocks.
    let last = &claude.requests()[2].body["messages"];
    let roles: Vec<&str> = last.as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant", "user"]);
    assert_eq!(last[3]["content"][0]["type"], "tool_use");
    assert_eq!(last[4]["content"][0]["type"], "tool_result");
    assert_eq!(last[4]["content"][0]["tool_use_id"], last[3]["content"][0]["id"]);
    assert!(openai.requests().is_empty());
}

/// Runs one streamed turn against a model that fails as `reply` says, and
/// returns the final event and the session id.
async fn failing_turn(reply: Reply, env: &[(&str, &str)]) -> (Value, Vec<String>, Agent, ScriptedLlm, Dirs) {
    let llm =
        ScriptedLlm::openai(move |body| if last_text(body) == "fail" { reply.clone() } else { text(&["fine"]) }).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, env).await;
    let events = agent.stream(&json!({"input": "fail"})).await;
    let last = events.last().unwrap().data.clone();
    (last, shape(&events), agent, llm, dirs)
}

#[tokio::test]
async fn provider_http_errors_fail_the_response_actionably() {
    let cases = [
        (401, "provider_auth_failed", "BERTH_LLM_API_KEY"),
        (402, "budget_exceeded", "budget"),
        (429, "rate_limit_exceeded", "rate limited"),
        (503, "provider_unavailable", "try again later"),
    ];
    for (status, code, hint) in cases {
        let body = json!({"error": {"message": format!("upstream says {status}"), "type": "x"}});
        let (last, shape, _agent, _llm, _dirs) = failing_turn(Reply::Status(status, body), &[]).await;
        assert_eq!(shape, ["created", "in_progress", "failed"], "{status}");
        let r = &last["response"];
        assert_eq!(r["status"], "failed");
        assert_eq!(r["error"]["code"], code);
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(msg.contains(hint) && msg.contains(&format!("upstream says {status}")), "{msg}");
    }
}

#[tokio::test]
async fn provider_failure_mid_stream_keeps_session_consistent() {
    let (last, shape, agent, llm, _dirs) =
        failing_turn(Reply::CutAfter(vec!["partial ".into(), "answ".into()]), &[]).await;
    assert_eq!(
        shape,
        [
            "created",
            "in_progress",
            "output_item.added",
            "content_part.added",
            "output_text.delta*",
            "output_text.done",
            "content_part.done",
            "output_item.done",
            "failed"
        ]
    );
    let r = &last["response"];
    assert_eq!(r["error"]["code"], "provider_stream_interrupted");
    assert_eq!(r["output"][0]["status"], "incomplete");
    assert_eq!(r["output"][0]["content"][0]["text"], "partial answ");

    // The cut-off text stays out of the history; the next turn works.
    let sid = r["session_id"].as_str().unwrap();
    let (s, next) = agent.post("/v1/responses", &json!({"input": "again", "session_id": sid})).await;
    assert_eq!((s.as_u16(), next["status"].as_str()), (200, Some("completed")));
    let msgs = &llm.requests()[1].body["messages"];
    let roles: Vec<&str> = msgs.as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "user"]);
    let (_, stored) = agent.get(&format!("/v1/responses/{}", r["id"].as_str().unwrap())).await;
    assert_eq!(stored["status"], "failed");
}

#[tokio::test]
async fn malformed_chunks_and_silence_fail_the_response() {
    let (last, _, _a, _l, _d) = failing_turn(Reply::Garbage, &[]).await;
    assert_eq!(last["response"]["error"]["code"], "provider_bad_response");
    let (last, _, _a, _l, _d) = failing_turn(Reply::Hang, &[("BERTH_LLM_TIMEOUT_SECS", "1")]).await;
    assert_eq!(last["response"]["error"]["code"], "provider_timeout");
    assert!(last["response"]["error"]["message"].as_str().unwrap().contains("BERTH_LLM_TIMEOUT_SECS"));
}

#[tokio::test]
async fn unreachable_provider_fails_non_streaming_too() {
    let dirs = Dirs::new();
    // Nothing listens on port 9 of loopback.
    let agent = Agent::start(&dirs, "http://127.0.0.1:9/v1", &[]).await;
    let (s, r) = agent.post("/v1/responses", &json!({"input": "x"})).await;
    assert_eq!(s, 200);
    assert_eq!(r["status"], "failed");
    assert_eq!(r["error"]["code"], "provider_unreachable");
    assert!(r["error"]["message"].as_str().unwrap().contains("BERTH_LLM_BASE_URL"));
    // The models list still shows the configured default.
    let (_, m) = agent.get("/v1/models").await;
    assert_eq!(m["data"][0]["id"], "scripted-model");
}
