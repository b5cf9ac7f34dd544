//! The system agent templates `claude-code`, `codex`, `hermes` and `openclaw`: the
//! server builds their images at start (from npm and PyPI, through the host's CA
//! bundle), and an instance of each answers a streamed Responses request through the
//! edge with a tool call run by the real agent, against a scripted model the test serves
//! (Anthropic Messages for Claude Code, the OpenAI Responses API for Codex, chat
//! completions for Hermes and OpenClaw), then resumes the agent's session on the next
//! turn. `all` has every one, and the request's `agent` field picks it.
//!
//! The image takes minutes to build the first time (apt, npm); the builder's cache
//! makes later runs take seconds.

use berth_test_util::docker::{network_gateway, reach_host_port, TEST_NETWORK};
use berth_test_util::llm::{last_role, last_text, text, tool, ScriptedLlm};
use berth_test_util::server::ServerOptions;
use berth_test_util::TestServer;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The text of the tool results in the last message, if it carries any.
fn tool_results(body: &Value) -> Option<String> {
    let last = body["messages"].as_array()?.last()?;
    let results: Vec<String> = last["content"]
        .as_array()?
        .iter()
        .filter(|b| b["type"] == "tool_result")
        .map(|b| match &b["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"),
            _ => String::new(),
        })
        .collect();
    (!results.is_empty()).then(|| results.join("\n"))
}

/// The events of a streamed response through the edge: (event, data) pairs.
async fn stream(s: &TestServer, host: &str, body: Value) -> Vec<(String, Value)> {
    let resp = s
        .http()
        .post(format!("{}/v1/responses", s.edge_base))
        .header("host", host)
        .bearer_auth(&s.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let mut bytes = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(120), bytes.next()).await.expect("events") {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    buf.split("\n\n")
        .filter_map(|frame| {
            let event = frame.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = frame.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((event.to_string(), serde_json::from_str(data).unwrap()))
        })
        .collect()
}

/// A first turn's items: its tool call, the call's result and its last message.
fn call_result_answer(done: &Value) -> (&Value, &Value, &Value) {
    let output = done["response"]["output"].as_array().expect("an output");
    let call = output.iter().find(|i| i["type"] == "function_call").expect("a tool call");
    let result = output.iter().find(|i| i["type"] == "function_call_output").expect("its result");
    let answer = output.iter().rev().find(|i| i["type"] == "message").expect("an answer");
    (call, result, answer)
}

/// The next turn (`and again`) of the session `done` answered in, streamed through the
/// edge: completed, and the text it ended with.
async fn next_turn(s: &TestServer, host: &str, done: &Value) -> String {
    let session = done["response"]["session_id"].as_str().unwrap();
    let events = stream(s, host, json!({"input": "and again", "session_id": session, "stream": true})).await;
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "response.completed", "{done}");
    let out = done["response"]["output"].as_array().unwrap();
    out.last().unwrap()["content"][0]["text"].as_str().unwrap_or_default().to_string()
}

/// A server offering the agent template `name`, once its image is built (instances of
/// it are refused while it builds).
async fn server_with(name: &str) -> TestServer {
    let opts = ServerOptions {
        extra_args: vec!["--agent-templates".into(), name.into()],
        network: TEST_NETWORK.into(),
        ..Default::default()
    };
    let s = TestServer::start_with(opts).await;
    let deadline = Instant::now() + Duration::from_secs(1500);
    let mut refused_while_building = false;
    loop {
        let (status, t) = s.get(&format!("/v1/templates/{name}")).await;
        assert_eq!(status, 200, "{t}");
        let agents: Vec<&str> = t["agents"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert!(t["system"] == true && agents.contains(&"berth-agent"), "{t}");
        assert!(name == "all" || agents[0] == name, "{t}");
        match t["status"].as_str().unwrap() {
            "ready" => return s,
            "building" if !refused_while_building => {
                let (status, err) = s.post("/v1/instances", json!({"template": name})).await;
                if status == 409 {
                    assert_eq!(err["error"]["code"], "build_not_ready", "{err}");
                    refused_while_building = true;
                }
            }
            "building" => {}
            _ => {
                let log = s.log();
                let tail: Vec<&str> = log.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
                panic!("the agent template's image did not build: {t}\n{}", tail.join("\n"))
            }
        }
        assert!(Instant::now() < deadline, "the agent template is still building: {t}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test]
async fn codex_answers_through_the_edge_with_a_tool_call_against_a_scripted_model() {
    let s = server_with("codex").await;
    let model = ScriptedLlm::responses_on("0.0.0.0:0", |body| {
        let last = body["input"].as_array().and_then(|i| i.last()).cloned().unwrap_or_default();
        if last["type"] == "function_call_output" {
            let out = last["output"].as_str().map(str::to_string).unwrap_or_else(|| last["output"].to_string());
            return text(&["codex heard ", if out.contains("from-codex-instance") { "its shell" } else { "nothing" }]);
        }
        if last.to_string().contains("and again") {
            return text(&["second codex turn"]);
        }
        tool("exec_command", json!({"cmd": "echo from-codex-instance"}))
    })
    .await;
    let env = json!({"BERTH_LLM_BASE_URL": model.base_url_at(&network_gateway(TEST_NETWORK)),
        "BERTH_LLM_API_KEY": "sk-codex-scripted", "BERTH_MODEL": "gpt-scripted"});
    let inst =
        s.create_instance(json!({"template": "codex", "env": env, "network": reach_host_port(model.port())})).await;
    let id = inst["id"].as_str().unwrap().to_string();
    let host = format!("{}.localhost:{}", &id[5..], s.edge_port());

    let events = stream(&s, &host, json!({"input": "say hello from your shell", "stream": true})).await;
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "response.completed", "{done}");
    let (call, result, answer) = call_result_answer(done);
    assert_eq!(call["name"], "exec_command", "{call}");
    assert!(call["arguments"].as_str().unwrap().contains("echo from-codex-instance"), "{call}");
    assert!(result["output"].as_str().unwrap().contains("from-codex-instance"), "the instance ran it: {result}");
    assert_eq!(answer["content"][0]["text"], "codex heard its shell", "{answer}");
    let reqs = model.requests();
    assert!(reqs.iter().all(|r| r.headers["authorization"] == "Bearer sk-codex-scripted"));

    let first_len = reqs.last().unwrap().body["input"].as_array().unwrap().len();
    assert_eq!(next_turn(&s, &host, done).await, "second codex turn");
    let resumed = model.requests().last().unwrap().body["input"].as_array().unwrap().len();
    assert!(resumed > first_len, "the resumed thread sent its earlier turn too ({resumed} items)");
}

#[tokio::test]
async fn claude_code_answers_through_the_edge_with_a_tool_call_against_a_scripted_model() {
    let s = server_with("claude-code").await;

    let model = ScriptedLlm::anthropic_on("0.0.0.0:0", |body| match tool_results(body) {
        None if last_text(body).contains("again") => text(&["second turn, same session"]),
        None => tool("Bash", json!({"command": "echo from-the-instance", "description": "say hello"})),
        Some(out) => text(&["the shell said ", &out]),
    })
    .await;
    let base = model.base_url_at(&network_gateway(TEST_NETWORK));
    let env = json!({"BERTH_ANTHROPIC_BASE_URL": base, "BERTH_ANTHROPIC_API_KEY": "sk-ant-scripted",
        "BERTH_MODEL": "claude-scripted"});
    let inst = s
        .create_instance(json!({"template": "claude-code", "env": env, "network": reach_host_port(model.port())}))
        .await;
    assert_eq!(inst["agents"], json!(["claude-code", "berth-agent"]), "{inst}");
    let id = inst["id"].as_str().unwrap().to_string();
    let host = format!("{}.localhost:{}", &id[5..], s.edge_port());

    let events = stream(&s, &host, json!({"input": "say hello from your shell", "stream": true})).await;
    let kinds: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "response.completed", "{kinds:?} {done}");
    assert!(kinds.contains(&"response.output_text.delta"), "{kinds:?}");
    let (call, result, answer) = call_result_answer(done);
    assert_eq!(call["name"], "Bash", "{call}");
    assert_eq!(result["call_id"], call["call_id"]);
    assert!(result["output"].as_str().unwrap().contains("from-the-instance"), "the instance ran it: {result}");
    assert!(answer["content"][0]["text"].as_str().unwrap().contains("the shell said from-the-instance"), "{answer}");

    // The model traffic went to the model the instance was given, with its key.
    let reqs = model.requests();
    assert!(reqs.len() >= 2, "{} requests", reqs.len());
    assert!(reqs.iter().all(|r| r.headers.get("x-api-key").is_some_and(|k| k == "sk-ant-scripted")));

    // The next turn continues Claude Code's own session.
    assert_eq!(next_turn(&s, &host, done).await, "second turn, same session");
    let resumed = model.requests().last().unwrap().body["messages"].as_array().unwrap().len();
    assert!(resumed >= 3, "the resumed session sent its earlier turn too ({resumed} messages)");
}

#[tokio::test]
async fn all_has_both_agents_and_the_requests_agent_field_picks_one() {
    let s = server_with("all").await;
    let claude = ScriptedLlm::anthropic_on("0.0.0.0:0", |_| text(&["claude-code answering"])).await;
    // One OpenAI endpoint for Codex (Responses), Hermes and OpenClaw (chat completions;
    // OpenClaw's system prompt names it).
    let codex = ScriptedLlm::responses_on("0.0.0.0:0", |body| match body.get("messages") {
        Some(m) if m.to_string().to_lowercase().contains("openclaw") => text(&["openclaw answering"]),
        Some(_) => text(&["hermes answering"]),
        None => text(&["codex answering"]),
    })
    .await;
    let gw = network_gateway(TEST_NETWORK);
    let env = json!({"BERTH_ANTHROPIC_BASE_URL": claude.base_url_at(&gw), "BERTH_ANTHROPIC_API_KEY": "sk-ant-scripted",
        "BERTH_LLM_BASE_URL": codex.base_url_at(&gw), "BERTH_LLM_API_KEY": "sk-codex-scripted",
        "BERTH_MODEL": "scripted"});
    let allow = |p: u16| format!("{gw}/32:{p}");
    let network = json!({"egress": {"allow": [allow(claude.port()), allow(codex.port())]}});
    let inst = s.create_instance(json!({"template": "all", "env": env, "network": network})).await;
    assert_eq!(inst["agents"], json!(["claude-code", "codex", "hermes", "openclaw", "berth-agent"]), "{inst}");
    let id = inst["id"].as_str().unwrap().to_string();
    let host = format!("{}.localhost:{}", &id[5..], s.edge_port());
    for (agent, want) in [
        (None, "claude-code answering"),
        (Some("codex"), "codex answering"),
        (Some("hermes"), "hermes answering"),
        (Some("openclaw"), "openclaw answering"),
    ] {
        let mut body = json!({"input": "who are you?", "stream": true});
        if let Some(a) = agent {
            body["agent"] = json!(a);
        }
        let events = stream(&s, &host, body).await;
        let (last, done) = events.last().unwrap();
        assert_eq!(last, "response.completed", "{agent:?}: {done}");
        let out = done["response"]["output"].as_array().unwrap();
        assert_eq!(out.last().unwrap()["content"][0]["text"], want, "{agent:?}: {done}");
    }
}

#[tokio::test]
async fn hermes_answers_through_the_edge_with_a_tool_call_against_a_scripted_model() {
    let s = server_with("hermes").await;
    let model = ScriptedLlm::openai_on("0.0.0.0:0", |body| {
        if last_role(body) == "tool" {
            let heard = if last_text(body).contains("from-hermes-instance") { "its shell" } else { "nothing" };
            return text(&["hermes heard ", heard]);
        }
        if last_text(body).contains("and again") {
            return text(&["second hermes turn"]);
        }
        tool("terminal", json!({"command": "echo from-hermes-instance"}))
    })
    .await;
    let env = json!({"BERTH_LLM_BASE_URL": model.base_url_at(&network_gateway(TEST_NETWORK)),
        "BERTH_LLM_API_KEY": "sk-hermes-scripted", "BERTH_MODEL": "scripted"});
    let inst =
        s.create_instance(json!({"template": "hermes", "env": env, "network": reach_host_port(model.port())})).await;
    let id = inst["id"].as_str().unwrap().to_string();
    let host = format!("{}.localhost:{}", &id[5..], s.edge_port());

    let events = stream(&s, &host, json!({"input": "say hello from your shell", "stream": true})).await;
    let kinds: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "response.completed", "{done}");
    assert!(kinds.contains(&"response.output_text.delta"), "{kinds:?}");
    let (call, result, answer) = call_result_answer(done);
    assert_eq!(call["name"], "terminal", "{call}");
    assert!(result["output"].as_str().unwrap().contains("from-hermes-instance"), "the instance ran it: {result}");
    assert!(answer["content"][0]["text"].as_str().unwrap().contains("hermes heard its shell"), "{answer}");
    let reqs = model.requests();
    assert!(reqs.iter().all(|r| r.headers["authorization"] == "Bearer sk-hermes-scripted"));

    let first_len = reqs.last().unwrap().body["messages"].as_array().unwrap().len();
    let again = next_turn(&s, &host, done).await;
    assert!(again.contains("second hermes turn"), "{again}");
    let resumed = model.requests().last().unwrap().body["messages"].as_array().unwrap().len();
    assert!(resumed > first_len, "the resumed session sent its earlier turn too ({resumed} messages)");
}

#[tokio::test]
async fn openclaw_answers_through_the_edge_with_a_tool_call_against_a_scripted_model() {
    let s = server_with("openclaw").await;
    // OpenClaw ends its requests with a message of its own context: what this turn
    // is about is found anywhere in the conversation.
    let model = ScriptedLlm::openai_on("0.0.0.0:0", |body| {
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let said = |role: &str, what: &str| {
            messages.iter().any(|m| m["role"] == role && m["content"].to_string().contains(what))
        };
        if said("user", "and again") {
            return text(&["second openclaw turn"]);
        }
        if messages.iter().any(|m| m["role"] == "tool") {
            let heard = if said("tool", "from-openclaw-instance") { "its shell" } else { "nothing" };
            return text(&["openclaw ", "heard ", heard]);
        }
        tool("exec", json!({"command": "echo from-openclaw-instance"}))
    })
    .await;
    let env = json!({"BERTH_LLM_BASE_URL": model.base_url_at(&network_gateway(TEST_NETWORK)),
        "BERTH_LLM_API_KEY": "sk-openclaw-scripted", "BERTH_MODEL": "scripted"});
    let inst =
        s.create_instance(json!({"template": "openclaw", "env": env, "network": reach_host_port(model.port())})).await;
    assert_eq!(inst["agents"], json!(["openclaw", "berth-agent"]), "{inst}");
    let id = inst["id"].as_str().unwrap().to_string();
    let host = format!("{}.localhost:{}", &id[5..], s.edge_port());

    let events = stream(&s, &host, json!({"input": "say hello from your shell", "stream": true})).await;
    let kinds: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "response.completed", "{kinds:?} {done}");
    // The answer streamed as the model said it (through berth-agent's relay), in deltas.
    let deltas = kinds.iter().filter(|k| **k == "response.output_text.delta").count();
    assert!(deltas >= 3, "{kinds:?}");
    let (call, result, answer) = call_result_answer(done);
    assert_eq!(call["name"], "exec", "{call}");
    assert!(call["arguments"].as_str().unwrap().contains("echo from-openclaw-instance"), "{call}");
    assert_eq!(result["call_id"], call["call_id"]);
    assert!(result["output"].as_str().unwrap().contains("from-openclaw-instance"), "the instance ran it: {result}");
    assert_eq!(answer["content"][0]["text"], "openclaw heard its shell", "{answer}");
    // The key reached the model through the relay; OpenClaw itself was given none.
    let reqs = model.requests();
    assert!(reqs.len() >= 2, "{} requests", reqs.len());
    assert!(reqs.iter().all(|r| r.headers["authorization"] == "Bearer sk-openclaw-scripted"));
    let (status, found) = s
        .post(
            &format!("/v1/instances/{id}/exec"),
            json!({"command": "grep -rl sk-openclaw-scripted /home /tmp 2>/dev/null | head -3"}),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["stdout"], "", "the key is in no file the agent can read: {found}");

    let first_len = reqs.last().unwrap().body["messages"].as_array().unwrap().len();
    assert_eq!(next_turn(&s, &host, done).await, "second openclaw turn");
    let resumed = model.requests().last().unwrap().body["messages"].as_array().unwrap().len();
    assert!(resumed > first_len, "the resumed session sent its earlier turn too ({resumed} messages)");
}
