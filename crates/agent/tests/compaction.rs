//! Sessions that never overflow: a long session against a model with a small context
//! window is compacted (older turns summarised by the model, kept in full in storage)
//! and keeps answering; `truncation: "auto"`; `POST /v1/responses/compact`.

mod support;

use berth_test_util::llm::{last_text, Reply, ScriptedLlm};
use serde_json::{json, Value};
use support::{Agent, Dirs};

/// The scripted model's context window, in tokens of 4 bytes of message text.
const WINDOW: usize = 3000;

fn content_tokens(body: &Value) -> usize {
    body["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().map_or(0, str::len)).sum::<usize>() / 4
}

fn is_summary_request(body: &Value) -> bool {
    body["messages"][0]["content"].as_str().is_some_and(|s| s.starts_with("You compact conversations"))
}

/// A model that refuses what does not fit its window, summarises when asked (naming
/// the turns it saw), and otherwise acknowledges the last turn.
fn small_model(body: &Value) -> Reply {
    if content_tokens(body) > WINDOW {
        return Reply::Status(
            400,
            json!({"error": {"message": "This model's maximum context length is 3000 tokens.",
                "code": "context_length_exceeded"}}),
        );
    }
    let all: String = body["messages"].as_array().unwrap().iter().filter_map(|m| m["content"].as_str()).collect();
    if is_summary_request(body) {
        let turns = all.matches("remember turn").count();
        return Reply::Text(vec![format!("SUMMARY: the user said {turns} numbered things to remember.")]);
    }
    let last = last_text(body);
    Reply::Text(vec![format!("noted #{}. ", last.get(14..17).unwrap_or("?")), "x".repeat(200)])
}

fn turn_text(n: usize) -> String {
    format!("remember turn {n:03}: {}", "lorem ipsum dolor sit amet ".repeat(8))
}

#[tokio::test]
async fn a_session_of_200_turns_against_a_small_window_keeps_answering() {
    let llm = ScriptedLlm::openai(small_model).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[("BERTH_CONTEXT_WINDOW", &format!("scripted={WINDOW}"))]).await;

    let mut session: Option<String> = None;
    let mut compaction_items = 0;
    for n in 1..=200 {
        let mut body = json!({"input": turn_text(n)});
        if let Some(s) = &session {
            body["session_id"] = s.clone().into();
        }
        let (status, r) = agent.post("/v1/responses", &body).await;
        assert_eq!(status, 200, "turn {n}: {r}");
        assert_eq!(r["status"], "completed", "turn {n}: {r}");
        compaction_items += r["output"].as_array().unwrap().iter().filter(|i| i["type"] == "compaction").count();
        session = Some(r["session_id"].as_str().unwrap().to_string());
    }
    let requests = llm.requests();
    let summaries = requests.iter().filter(|r| is_summary_request(&r.body)).count();
    let turns = requests.len() - summaries;
    eprintln!("200 turns: {turns} model calls for turns, {summaries} compaction calls");
    assert_eq!(turns, 200, "one model call a turn");
    assert!(summaries >= 3, "the window forced compactions: {summaries}");
    assert!(summaries <= 40, "compaction is not done every turn: {summaries} for 200 turns");
    assert_eq!(compaction_items, summaries, "each compaction shows in its turn's output");
    for r in &requests {
        assert!(content_tokens(&r.body) <= WINDOW, "no request outgrew the window");
    }
    // The last turn's call carried the newest summary, then the recent turns verbatim.
    let last = &requests.last().unwrap().body;
    let texts: Vec<&str> = last["messages"].as_array().unwrap().iter().filter_map(|m| m["content"].as_str()).collect();
    assert!(texts.iter().any(|t| t.contains("[Summary of the earlier part") && t.contains("SUMMARY: the user said")));
    assert!(texts.iter().any(|t| t.starts_with("remember turn 199")), "recent turns are sent whole");
    assert!(!texts.iter().any(|t| t.starts_with("remember turn 001")), "old turns are not");

    // The whole history is still readable: every turn's input and answer, and the
    // compaction items where they happened.
    let (status, detail) = agent.get(&format!("/v1/sessions/{}", session.unwrap())).await;
    assert_eq!(status, 200);
    let items = detail["items"].as_array().unwrap();
    let users: Vec<&Value> = items.iter().filter(|i| i["role"] == "user").collect();
    assert_eq!(users.len(), 200);
    assert!(users[0]["content"][0]["text"].as_str().unwrap().starts_with("remember turn 001"));
    assert_eq!(items.iter().filter(|i| i["type"] == "compaction").count(), summaries);
    assert_eq!(items.len(), 400 + summaries);
}

#[tokio::test]
async fn a_low_compact_threshold_compacts_now_and_then_not_every_call() {
    let llm = ScriptedLlm::openai(small_model).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let mut session: Option<String> = None;
    for n in 1..=30 {
        let mut body =
            json!({"input": turn_text(n), "context_management": [{"type": "compaction", "compact_threshold": 1000}]});
        if let Some(s) = &session {
            body["session_id"] = s.clone().into();
        }
        let (_, r) = agent.post("/v1/responses", &body).await;
        assert_eq!(r["status"], "completed", "{r}");
        session = Some(r["session_id"].as_str().unwrap().to_string());
    }
    let summaries = llm.requests().iter().filter(|r| is_summary_request(&r.body)).count();
    // The system prompt and the tools alone pass 1,000 tokens: compacting each call would
    // be 30 summaries.
    assert!((1..=10).contains(&summaries), "{summaries} summaries in 30 turns");
}

#[tokio::test]
async fn without_compaction_a_turn_that_does_not_fit_fails_or_is_truncated_when_asked() {
    let llm = ScriptedLlm::openai(small_model).await;
    let dirs = Dirs::new();
    let agent = Agent::start(
        &dirs,
        &llm.base_url,
        &[("BERTH_CONTEXT_WINDOW", &format!("scripted={WINDOW}")), ("BERTH_COMPACTION", "off")],
    )
    .await;
    let (_, first) = agent.post("/v1/responses", &json!({"input": turn_text(1)})).await;
    let session = first["session_id"].as_str().unwrap().to_string();
    let mut failed = None;
    for n in 2..=60 {
        let (_, r) = agent.post("/v1/responses", &json!({"input": turn_text(n), "session_id": session})).await;
        if r["status"] == "failed" {
            failed = Some((n, r));
            break;
        }
        assert_eq!(r["status"], "completed", "{r}");
    }
    let (n, r) = failed.expect("the session outgrew the window");
    assert_eq!(r["error"]["code"], "context_length_exceeded", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("truncation"), "the message says what to do: {r}");
    assert_eq!(r["truncation"], "disabled");
    let sent = llm.requests().len();
    assert!(llm.requests().iter().all(|r| content_tokens(&r.body) <= WINDOW), "refused before sending");

    // The same turn with truncation: the oldest items are left out of the call.
    let (_, r) =
        agent.post("/v1/responses", &json!({"input": turn_text(n), "session_id": session, "truncation": "auto"})).await;
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["truncation"], "auto");
    let requests = llm.requests();
    assert_eq!(requests.len(), sent + 1);
    let body = &requests.last().unwrap().body;
    assert!(content_tokens(body) <= WINDOW);
    let texts: Vec<&str> = body["messages"].as_array().unwrap().iter().filter_map(|m| m["content"].as_str()).collect();
    assert!(!texts.iter().any(|t| t.starts_with("remember turn 001")), "the oldest turn was dropped");
    assert!(texts.last().unwrap().starts_with(&format!("remember turn {n:03}")));

    // Bad values are named.
    let (status, e) = agent.post("/v1/responses", &json!({"input": "x", "truncation": "sometimes"})).await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["param"], "truncation");
    let (status, e) = agent
        .post(
            "/v1/responses",
            &json!({"input": "x", "context_management": [{"type": "forget", "compact_threshold": 5000}]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["param"], "context_management[0].type");
}

#[tokio::test]
async fn compact_on_demand_summarises_all_but_the_newest_turn() {
    let llm = ScriptedLlm::openai(small_model).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let (_, r) = agent.post("/v1/responses", &json!({"input": turn_text(1)})).await;
    let session = r["session_id"].as_str().unwrap().to_string();
    for n in 2..=4 {
        let (_, r) = agent.post("/v1/responses", &json!({"input": turn_text(n), "session_id": session})).await;
        assert_eq!(r["status"], "completed");
    }
    let last_response = r["id"].as_str().unwrap().to_string();
    let (status, c) =
        agent.post("/v1/responses/compact", &json!({"model": "scripted-model", "conversation": session})).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["object"], "response.compaction");
    assert!(c["id"].as_str().unwrap().starts_with("cmp_"));
    let out = c["output"].as_array().unwrap();
    assert_eq!(out[0]["type"], "compaction", "{c}");
    assert!(out[0]["encrypted_content"].as_str().unwrap().contains("3 numbered things"), "{c}");
    assert!(out[1]["content"][0]["text"].as_str().unwrap().starts_with("remember turn 004"), "the newest turn stays");
    assert_eq!(out.len(), 3, "the summary, the newest question and its answer: {c}");

    // The next turn sends the summary instead of turns 1-3.
    let (_, r) = agent.post("/v1/responses", &json!({"input": turn_text(5), "session_id": session})).await;
    assert_eq!(r["status"], "completed");
    let body = llm.requests().last().unwrap().body.clone();
    let texts: Vec<&str> = body["messages"].as_array().unwrap().iter().filter_map(|m| m["content"].as_str()).collect();
    assert!(texts.iter().any(|t| t.contains("3 numbered things")));
    assert!(!texts.iter().any(|t| t.starts_with("remember turn 002")));
    assert!(texts.iter().any(|t| t.starts_with("remember turn 004")));
    let (_, detail) = agent.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(detail["items"].as_array().unwrap().iter().filter(|i| i["role"] == "user").count(), 5);

    // Compacting again right away has nothing older than the newest turn... but turn 4
    // is older now; by previous_response_id it names the same session.
    let (status, c) = agent
        .post("/v1/responses/compact", &json!({"model": "scripted-model", "previous_response_id": last_response}))
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["output"][0]["type"], "compaction");

    // Stateless: the input's user messages, then a compaction item for all of it.
    let (status, c) = agent
        .post(
            "/v1/responses/compact",
            &json!({"model": "scripted-model", "input": [{"role": "user", "content": turn_text(1)}, {"role": "assistant", "content": "ok"},
                              {"role": "user", "content": turn_text(2)}]}),
        )
        .await;
    assert_eq!(status, 200, "{c}");
    let kinds: Vec<&str> = c["output"].as_array().unwrap().iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["message", "message", "compaction"], "{c}");
    // ...which a new turn takes back as input.
    let (_, r) = agent.post("/v1/responses", &json!({"input": c["output"]})).await;
    assert_eq!(r["status"], "completed", "{r}");

    // Bad requests are named.
    let (status, e) =
        agent.post("/v1/responses/compact", &json!({"model": "scripted-model", "session_id": "sess_nope"})).await;
    assert_eq!((status.as_u16(), e["error"]["code"].as_str()), (404, Some("session_not_found")));
    let (status, e) = agent
        .post("/v1/responses/compact", &json!({"model": "scripted-model", "session_id": session, "input": "x"}))
        .await;
    assert_eq!((status.as_u16(), e["error"]["param"].as_str()), (400, Some("input")));
    let (status, e) = agent.post("/v1/responses/compact", &json!({"model": "scripted-model"})).await;
    assert_eq!((status.as_u16(), e["error"]["param"].as_str()), (400, Some("input")));
    let (status, e) = agent.post("/v1/responses/compact", &json!({"session_id": session})).await;
    assert_eq!((status.as_u16(), e["error"]["param"].as_str()), (400, Some("model")));
}
