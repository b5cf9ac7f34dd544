//! The agent loop: real tools on this machine, the step limit, memory across
//! sessions, and a client that goes away mid-turn.

mod support;

use berth_test_util::llm::{last_role, last_text, text, tool, Reply, ScriptedLlm};
use serde_json::{json, Value};
use std::time::Duration;
use support::{eventually, process_gone, read, shape, Agent, Dirs};

#[tokio::test]
async fn multi_step_loop_runs_shell_and_writes_file() {
    // Step 1: run a command. Step 2: write what it printed to a file. Step 3: answer.
    let llm = ScriptedLlm::openai(|body| match (last_role(body).as_str(), last_text(body)) {
        ("user", _) => tool("shell", json!({"command": "echo hello-from-$((40+2)); echo oops >&2"})),
        ("tool", out) if out.contains("hello-from-42") => tool(
            "write_file",
            json!({"path": "notes/report.txt", "content": format!("shell said: {}", out.lines().nth(1).unwrap())}),
        ),
        ("tool", out) => text(&["Done: ", &out]),
        other => panic!("unexpected turn {other:?}"),
    })
    .await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;

    let events = agent.stream(&json!({"input": "make a report"})).await;
    assert_eq!(read(&dirs.workdir, "notes/report.txt"), "shell said: hello-from-42");
    let expected_call = [
        "output_item.added",
        "function_call_arguments.delta*",
        "function_call_arguments.done",
        "output_item.done",
        "output_item.added",
        "output_item.done",
    ];
    let s = shape(&events);
    assert_eq!(s[..2], ["created", "in_progress"]);
    assert_eq!(s[2..8], expected_call);
    assert_eq!(s[8..14], expected_call);
    assert_eq!(s.last().unwrap(), "completed");

    let done = &events.last().unwrap().data["response"];
    let kinds: Vec<&str> = done["output"].as_array().unwrap().iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["function_call", "function_call_output", "function_call", "function_call_output", "message"]);
    let out = &done["output"];
    assert_eq!(out[0]["name"], "shell");
    assert_eq!(out[1]["call_id"], out[0]["call_id"]);
    assert_eq!(out[1]["output"], "exit code: 0\nhello-from-42\noops\n");
    assert!(out[3]["output"].as_str().unwrap().starts_with("wrote 25 bytes"));
    assert_eq!(
        done["output"][4]["content"][0]["text"].as_str().unwrap(),
        format!("Done: {}", out[3]["output"].as_str().unwrap())
    );
    assert_eq!(done["usage"]["input_tokens"], 33, "usage sums over the three model calls");

    // The model saw its own call and the tool's result in chat-completions form.
    let second = &llm.requests()[1].body;
    let msgs = second["messages"].as_array().unwrap();
    assert_eq!(msgs[2]["role"], "assistant");
    assert_eq!(msgs[2]["tool_calls"][0]["function"]["name"], "shell");
    assert_eq!(msgs[3]["role"], "tool");
    assert_eq!(msgs[3]["tool_call_id"], msgs[2]["tool_calls"][0]["id"]);

    // The session history holds all of it, in order.
    let (_, session) = agent.get(&format!("/v1/sessions/{}", done["session_id"].as_str().unwrap())).await;
    let kinds: Vec<&str> = session["items"].as_array().unwrap().iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["message", "function_call", "function_call_output", "function_call", "function_call_output", "message"]
    );
}

#[tokio::test]
async fn step_limit_makes_the_model_answer() {
    // A model that calls tools for as long as it is offered any.
    let llm = ScriptedLlm::openai(|body| {
        if body["tools"].is_array() {
            tool("shell", json!({"command": "true"}))
        } else {
            text(&["giving up on tools"])
        }
    })
    .await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[("BERTH_AGENT_MAX_STEPS", "3")]).await;
    let (_, r) = agent.post("/v1/responses", &json!({"input": "loop forever"})).await;
    assert_eq!(r["status"], "completed");
    let reqs = llm.requests();
    assert_eq!(reqs.len(), 3, "bounded by the step limit");
    assert!(reqs[2].body.get("tools").is_none(), "last step offers no tools");
    assert_eq!(r["output"].as_array().unwrap().len(), 5);

    // max_tool_calls lowers it per request.
    let (_, r) = agent.post("/v1/responses", &json!({"input": "again", "max_tool_calls": 1})).await;
    assert_eq!(r["status"], "completed");
    assert_eq!(llm.requests().len(), 5);
}

#[tokio::test]
async fn shell_timeout_is_reported_to_the_model() {
    let llm = ScriptedLlm::openai(|body| match last_role(body).as_str() {
        "user" => tool("shell", json!({"command": "sleep 20", "timeout_secs": 1})),
        _ => text(&["ok"]),
    })
    .await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let started = std::time::Instant::now();
    let (_, r) = agent.post("/v1/responses", &json!({"input": "sleep"})).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(r["output"][1]["output"].as_str().unwrap().starts_with("timed out after 1s"));
}

#[tokio::test]
async fn memory_notes_persist_across_sessions() {
    let llm = ScriptedLlm::openai(|body| match (last_role(body).as_str(), last_text(body).as_str()) {
        ("user", "remember") => tool("memory_write", json!({"content": "user likes green tea"})),
        ("user", "recall") => tool("memory_read", json!({})),
        (_, out) => Reply::Text(vec![format!("tool said: {out}")]),
    })
    .await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let (_, a) = agent.post("/v1/responses", &json!({"input": "remember"})).await;
    let (_, b) = agent.post("/v1/responses", &json!({"input": "recall"})).await;
    assert_ne!(a["session_id"], b["session_id"]);
    assert_eq!(b["output"][1]["output"], "user likes green tea\n");
    assert_eq!(read(&dirs.data, "memory/notes.md"), "user likes green tea\n");
}

fn streamed_item<'a>(e: &'a support::SseEvent, kind: &str) -> Option<&'a Value> {
    (e.event == "response.output_item.added" && e.data["item"]["type"] == kind).then(|| &e.data["item"])
}

#[tokio::test]
async fn client_disconnect_cancels_turn_and_kills_tool() {
    let llm = ScriptedLlm::openai(|body| match last_text(body).as_str() {
        "run long" => tool("shell", json!({"command": "sleep 60 & echo $! > sleep.pid; wait"})),
        _ => text(&["hello"]),
    })
    .await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;

    let mut stream = agent.open_stream(&json!({"input": "run long"})).await;
    let mut response_id = None;
    while let Some(e) = stream.next().await {
        if e.event == "response.created" {
            response_id = e.data["response"]["id"].as_str().map(str::to_string);
        }
        if streamed_item(&e, "function_call_output").is_some() {
            break; // the tool is running
        }
    }
    let pid_file = dirs.workdir.join("sleep.pid");
    assert!(eventually(5, || read(&dirs.workdir, "sleep.pid").trim().parse::<u32>().is_ok()).await);
    let pid: u32 = std::fs::read_to_string(pid_file).unwrap().trim().parse().unwrap();
    assert!(!process_gone(pid));
    drop(stream); // the client goes away

    assert!(eventually(5, || process_gone(pid)).await, "the tool's process group was killed");
    let id = response_id.unwrap();
    assert_eq!(agent.wait_status(&id, "cancelled").await["status"], "cancelled");
    assert_eq!(llm.requests().len(), 1, "no further model call after the disconnect");

    // The session is free again and its history stays usable.
    let (_, r) = agent.get(&format!("/v1/responses/{id}")).await;
    let (s, next) = agent.post("/v1/responses", &json!({"input": "hello again", "session_id": r["session_id"]})).await;
    assert_eq!(s, 200, "{next}");
    assert_eq!(next["status"], "completed");
    let msgs = llm.requests()[1].body["messages"].clone();
    assert_eq!(msgs[3]["role"], "tool", "the interrupted call got a placeholder result");
    assert!(msgs[3]["content"].as_str().unwrap().contains("interrupted"));
}

#[tokio::test]
async fn non_streaming_disconnect_cancels_too() {
    let llm = ScriptedLlm::openai(|body| match last_role(body).as_str() {
        "user" => tool("shell", json!({"command": "sleep 60 & echo $! > sleep.pid; wait"})),
        _ => text(&["never"]),
    })
    .await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let url = format!("{}/v1/responses", agent.url);
    let call =
        tokio::spawn(async move { reqwest::Client::new().post(url).json(&json!({"input": "run long"})).send().await });
    assert!(eventually(5, || read(&dirs.workdir, "sleep.pid").trim().parse::<u32>().is_ok()).await);
    let pid: u32 = read(&dirs.workdir, "sleep.pid").trim().parse().unwrap();
    call.abort(); // drops the connection
    assert!(eventually(5, || process_gone(pid)).await, "the tool's process group was killed");
    let (_, list) = agent.get("/v1/sessions").await;
    let sid = list["data"][0]["id"].as_str().unwrap().to_string();
    let (_, detail) = agent.get(&format!("/v1/sessions/{sid}")).await;
    let rid = detail["response_ids"][0].as_str().unwrap().to_string();
    assert_eq!(agent.wait_status(&rid, "cancelled").await["status"], "cancelled");
}
