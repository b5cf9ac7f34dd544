//! Another agent behind the Responses API (`BERTH_AGENT_DRIVER=claude-code`), with a
//! stand-in `claude` that prints what Claude Code's stream-json mode prints (the real
//! CLI is driven end to end in the e2e `agents` test): streamed text, a tool call and
//! its result as items, the agent's session resumed on the next turn, the model
//! settings handed over, a failure reported, and `agent` picking who answers.

mod support;

use berth_test_util::llm::{Reply, ScriptedLlm};
use serde_json::{json, Value};
use support::{read, Agent, Dirs};

/// A stand-in `claude`: logs its arguments and model settings to `$HOME/claude.log`,
/// then prints a tool call (Bash `echo hi`), its result, and a streamed answer. A
/// prompt saying `fail` ends in an error result instead.
const FAKE_CLAUDE: &str = r#"#!/bin/sh
echo "ARGS $*" >> "$HOME/claude.log"
echo "BASE $ANTHROPIC_BASE_URL KEY $ANTHROPIC_API_KEY" >> "$HOME/claude.log"
ev() { echo "{\"type\":\"stream_event\",\"parent_tool_use_id\":null,\"event\":$1}"; }
echo '{"type":"system","subtype":"init","session_id":"cc-sess-1"}'
case "$*" in *fail*)
  echo '{"type":"result","subtype":"error_during_execution","is_error":true,"result":"API Error: 529 overloaded"}'
  exit 1;;
esac
ev '{"type":"message_start","message":{"usage":{"input_tokens":7}}}'
ev '{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"Bash","input":{}}}'
ev '{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"command\":"}}'
ev '{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"\"echo hi\"}"}}'
ev '{"type":"content_block_stop","index":0}'
ev '{"type":"message_stop"}'
echo '{"type":"user","parent_tool_use_id":null,"message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"hi","is_error":false}]}}'
ev '{"type":"message_start","message":{"usage":{"input_tokens":9}}}'
ev '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'
ev '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"the shell "}}'
ev '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"said hi"}}'
ev '{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":4}}'
ev '{"type":"message_stop"}'
echo '{"type":"result","subtype":"success","is_error":false,"result":"the shell said hi","session_id":"cc-sess-1"}'
"#;

async fn driven_agent(dirs: &Dirs, llm: &str) -> Agent {
    driven_agent_with(
        dirs,
        llm,
        &[("BERTH_ANTHROPIC_BASE_URL", "http://models.internal:9/v1"), ("BERTH_ANTHROPIC_API_KEY", "sk-ant-test")],
    )
    .await
}

async fn driven_agent_with(dirs: &Dirs, llm: &str, env: &[(&str, &str)]) -> Agent {
    let bin = dirs.workdir.parent().unwrap().join("claude");
    std::fs::write(&bin, FAKE_CLAUDE).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut all = vec![("BERTH_AGENT_DRIVER", "claude-code"), ("BERTH_AGENT_DRIVER_BIN", bin.to_str().unwrap())];
    all.extend_from_slice(env);
    Agent::start(dirs, llm, &all).await
}

#[tokio::test]
async fn without_anthropic_settings_the_agent_uses_berths_llm_settings() {
    // berth's managed proxy speaks Messages too: the instance's base URL and token.
    let dirs = Dirs::new();
    let agent = driven_agent_with(&dirs, "http://proxy.internal:7072/v1", &[]).await;
    let (status, r) = agent.post("/v1/responses", &json!({"model": "claude-test", "input": "hi"})).await;
    assert_eq!((status.as_u16(), r["status"].as_str()), (200, Some("completed")), "{r}");
    let log = read(&dirs.workdir, "claude.log");
    assert!(log.contains("BASE http://proxy.internal:7072 KEY test-key"), "{log}");
}

#[tokio::test]
async fn claude_codes_turn_streams_as_responses_events_and_its_session_is_resumed() {
    let llm = ScriptedLlm::openai(|_| Reply::Text(vec!["berth-agent itself".into()])).await;
    let dirs = Dirs::new();
    let agent = driven_agent(&dirs, &llm.base_url).await;

    let events = agent.stream(&json!({"model": "claude-test", "input": "run echo hi"})).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    let deltas: Vec<&str> = events
        .iter()
        .filter(|e| e.event == "response.output_text.delta")
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, ["the shell ", "said hi"], "text arrives as it streams: {kinds:?}");
    assert!(kinds.contains(&"response.function_call_arguments.delta"), "{kinds:?}");
    let done = events.last().unwrap();
    assert_eq!(done.event, "response.completed", "{kinds:?}");
    let output = done.data["response"]["output"].as_array().unwrap();
    let types: Vec<&str> = output.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["function_call", "function_call_output", "message"], "{output:#?}");
    assert_eq!((output[0]["name"].as_str(), output[0]["call_id"].as_str()), (Some("Bash"), Some("toolu_1")));
    let args: Value = serde_json::from_str(output[0]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"command": "echo hi"}));
    assert_eq!((output[1]["call_id"].as_str(), output[1]["output"].as_str()), (Some("toolu_1"), Some("hi")));
    assert_eq!(output[2]["content"][0]["text"], "the shell said hi");
    let usage = &done.data["response"]["usage"];
    assert_eq!((usage["input_tokens"].as_u64(), usage["output_tokens"].as_u64()), (Some(16), Some(4)), "{usage}");

    // The model settings are the agent's own; the next turn resumes the agent's session.
    let session = done.data["response"]["session_id"].as_str().unwrap().to_string();
    let (status, again) = agent
        .post("/v1/responses", &json!({"model": "claude-test", "input": "and again", "session_id": session}))
        .await;
    assert_eq!(status, 200, "{again}");
    let log = read(&dirs.workdir, "claude.log");
    let calls: Vec<&str> = log.lines().filter(|l| l.starts_with("ARGS")).collect();
    assert!(calls[0].contains("-p run echo hi") && calls[0].contains("--model claude-test"), "{log}");
    assert!(!calls[0].contains("--resume"), "a new session starts fresh: {log}");
    assert!(calls[1].contains("--resume cc-sess-1"), "{log}");
    assert!(log.contains("BASE http://models.internal:9 KEY sk-ant-test"), "{log}");

    // `agent` picks who answers; an agent the instance lacks is named in the error.
    let (_, own) = agent.post("/v1/responses", &json!({"input": "hi", "agent": "berth-agent"})).await;
    assert_eq!(own["output"][0]["content"][0]["text"], "berth-agent itself", "{own}");
    let (status, err) = agent.post("/v1/responses", &json!({"input": "hi", "agent": "codex"})).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["param"], "agent", "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("claude-code"), "{err}");
}

#[tokio::test]
async fn a_failing_agent_turn_fails_with_its_reason() {
    let llm = ScriptedLlm::openai(|_| Reply::Text(vec!["unused".into()])).await;
    let dirs = Dirs::new();
    let agent = driven_agent(&dirs, &llm.base_url).await;
    let events = agent.stream(&json!({"model": "claude-test", "input": "please fail"})).await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "response.failed", "{events:?}");
    assert_eq!(last.data["response"]["error"]["message"], "API Error: 529 overloaded");
    assert_eq!(last.data["response"]["error"]["code"], "agent_error");
}

/// A stand-in `codex`: logs its arguments, prints a thread and an agent message.
const FAKE_CODEX: &str = r#"#!/bin/sh
echo "CODEX $*" >> "$HOME/claude.log"
echo '{"type":"thread.started","thread_id":"th-9"}'
echo '{"type":"turn.started"}'
echo '{"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"codex here"}}'
echo '{"type":"turn.completed","usage":{"input_tokens":3,"output_tokens":2}}'
"#;

#[tokio::test]
async fn with_several_agents_the_first_answers_and_agent_picks_another_each_resumed_apart() {
    let llm = ScriptedLlm::openai(|_| Reply::Text(vec!["unused".into()])).await;
    let dirs = Dirs::new();
    let bin_dir = dirs.workdir.parent().unwrap().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    for (name, text) in [("claude", FAKE_CLAUDE), ("codex", FAKE_CODEX)] {
        let bin = bin_dir.join(name);
        std::fs::write(&bin, text).unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let agent =
        Agent::start(&dirs, &llm.base_url, &[("BERTH_AGENT_DRIVER", "claude-code,codex"), ("PATH", &path)]).await;

    let (_, first) = agent.post("/v1/responses", &json!({"model": "m", "input": "hi"})).await;
    assert_eq!(first["output"].as_array().unwrap().last().unwrap()["content"][0]["text"], "the shell said hi");
    let session = first["session_id"].as_str().unwrap();
    let (_, second) = agent
        .post("/v1/responses", &json!({"model": "m", "input": "hi", "agent": "codex", "session_id": session}))
        .await;
    assert_eq!(second["output"][0]["content"][0]["text"], "codex here", "{second}");
    let (_, third) = agent
        .post("/v1/responses", &json!({"model": "m", "input": "hi", "agent": "codex", "session_id": session}))
        .await;
    assert_eq!(third["status"], "completed", "{third}");
    let (_, fourth) = agent.post("/v1/responses", &json!({"model": "m", "input": "hi", "session_id": session})).await;
    assert_eq!(fourth["status"], "completed", "{fourth}");
    let log = read(&dirs.workdir, "claude.log");
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("ARGS") || l.starts_with("CODEX")).collect();
    assert!(lines[1].starts_with("CODEX exec --json") && !lines[1].contains("resume"), "{log}");
    assert!(lines[2].contains("resume th-9"), "codex resumes its own thread: {log}");
    assert!(lines[3].starts_with("ARGS") && lines[3].contains("--resume cc-sess-1"), "and claude its own: {log}");
}

/// A stand-in `openclaw` (Python, as OpenClaw's Gateway is a server): `gateway run`
/// logs its arguments and configuration to `$HOME/openclaw.log`, then serves the
/// Gateway's OpenResponses endpoint on the configured port, each session's history kept
/// by `x-openclaw-session-key`, its model called through the configured provider (the
/// relay). An input saying `fail` ends in `response.failed`; one saying `crash` answers,
/// then the Gateway exits.
const FAKE_OPENCLAW: &str = r#"#!/usr/bin/env python3
import http.server, json, os, sys, threading, urllib.request
log = open(os.path.join(os.environ["HOME"], "openclaw.log"), "a")
path = os.environ["OPENCLAW_CONFIG_PATH"]
text = open(path).read()
log.write("ARGS " + " ".join(sys.argv[1:]) + "\n")
log.write("CONFIG " + path + " " + "".join(text.split()) + "\n")
log.flush()
cfg = json.loads(text)
base = cfg["models"]["providers"]["berth"]["baseUrl"]
model = cfg["agents"]["defaults"]["model"]["primary"].split("/", 1)[1]
sessions = {}

class Gateway(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["content-length"])))
        key = self.headers.get("x-openclaw-session-key")
        history = sessions.setdefault(key, [])
        history.append({"role": "user", "content": req["input"]})
        log.write("TURN " + key + " " + req["input"] + "\n")
        log.flush()
        call = urllib.request.Request(base + "/chat/completions", headers={"content-type": "application/json"},
            data=json.dumps({"model": model, "stream": True, "messages": history}).encode())
        answer = ""
        with urllib.request.urlopen(call) as r:
            for line in r:
                line = line.decode().strip()
                if line.startswith("data: {"):
                    for c in json.loads(line[6:]).get("choices", []):
                        answer += c.get("delta", {}).get("content") or ""
        history.append({"role": "assistant", "content": answer})
        if "fail" in req["input"]:
            end = {"type": "response.failed", "response": {"error": {"message": "berth/m request failed (HTTP 500)"}}}
        else:
            end = {"type": "response.completed", "response": {"output": [
                {"type": "message", "content": [{"type": "output_text", "text": answer}]}]}}
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(("event: " + end["type"] + "\ndata: " + json.dumps(end) + "\n\n").encode())
        self.wfile.flush()
        if "crash" in req["input"]:
            threading.Timer(0.2, lambda: os._exit(0)).start()

http.server.ThreadingHTTPServer(("127.0.0.1", cfg["gateway"]["port"]), Gateway).serve_forever()
"#;

#[tokio::test]
async fn openclaws_gateway_runs_on_answers_each_session_and_never_sees_the_key() {
    // The model says how many messages it was sent.
    let llm = ScriptedLlm::openai(|body| {
        let n = body["messages"].as_array().map(|m| m.len()).unwrap_or(0);
        Reply::Text(vec!["heard ".into(), n.to_string()])
    })
    .await;
    let dirs = Dirs::new();
    let bin = dirs.workdir.parent().unwrap().join("openclaw");
    std::fs::write(&bin, FAKE_OPENCLAW).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let agent = Agent::start(
        &dirs,
        &llm.base_url,
        &[("BERTH_AGENT_DRIVER", "openclaw"), ("BERTH_AGENT_DRIVER_BIN", bin.to_str().unwrap())],
    )
    .await;

    // The Gateway starts with the agent, for the default model, before any turn.
    let log_path = dirs.workdir.join("openclaw.log");
    let started = || std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("ARGS gateway run"));
    assert!(support::eventually(10, started).await, "no Gateway before the first turn");
    // Two sessions at once: one Gateway answers both, each in a session of its own.
    let body = json!({"input": "hello"});
    let (a, b) = tokio::join!(agent.post("/v1/responses", &body), agent.post("/v1/responses", &body));
    for (status, r) in [&a, &b] {
        assert_eq!((status.as_u16(), r["status"].as_str()), (200, Some("completed")), "{r}");
        assert_eq!(r["output"][0]["content"][0]["text"], "heard 1", "{r}");
    }
    let log = read(&dirs.workdir, "openclaw.log");
    assert_eq!(log.matches("ARGS gateway run").count(), 1, "{log}");
    // Its model is the relay on loopback; the key is not in its config, the relay adds it.
    assert!(log.contains(r#""baseUrl":"http://127.0.0.1:"#), "{log}");
    assert!(!log.contains("test-key"), "{log}");
    assert!(llm.requests().iter().all(|r| r.headers["authorization"] == "Bearer test-key"));

    // The next turn of a session goes on in the same OpenClaw session, streamed.
    let session = a.1["session_id"].as_str().unwrap();
    let events = agent.stream(&json!({"input": "again", "session_id": session})).await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "response.completed", "{events:?}");
    let deltas: String = events
        .iter()
        .filter(|e| e.event == "response.output_text.delta")
        .map(|e| e.data["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(deltas, "heard 3", "the model's words as it streamed them");
    let log = read(&dirs.workdir, "openclaw.log");
    let keys: Vec<&str> = log.lines().filter_map(|l| l.strip_prefix("TURN ")?.split(' ').next()).collect();
    assert_eq!(keys.len(), 3, "{log}");
    assert_ne!(keys[0], keys[1], "two sessions, two OpenClaw sessions: {log}");
    assert!(keys[..2].contains(&keys[2]), "{log}");

    // A failed turn fails with OpenClaw's reason.
    let (_, r) = agent.post("/v1/responses", &json!({"input": "please fail"})).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("HTTP 500"), "{r}");

    // A Gateway that died is started again for the next turn.
    let (_, r) = agent.post("/v1/responses", &json!({"input": "crash after this"})).await;
    assert_eq!(r["status"], "completed", "{r}");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (_, r) = agent.post("/v1/responses", &json!({"input": "still there?"})).await;
    assert_eq!(r["status"], "completed", "{r}");
    let log = read(&dirs.workdir, "openclaw.log");
    assert_eq!(log.matches("ARGS gateway run").count(), 2, "{log}");
    // Another model needs a Gateway configured for it.
    let (_, r) = agent.post("/v1/responses", &json!({"model": "other-model", "input": "hi"})).await;
    assert_eq!(r["status"], "completed", "{r}");
    let log = read(&dirs.workdir, "openclaw.log");
    assert_eq!(log.matches("ARGS gateway run").count(), 3, "{log}");
    assert!(log.contains(r#""primary":"berth/other-model""#), "{log}");
}
