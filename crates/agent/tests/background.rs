//! Turns that outlive their client: `background: true`, streams picked up again
//! with `starting_after`, `POST /v1/responses/{id}/cancel`, and turns a restart of
//! the agent cut short.

mod support;

use berth_test_util::llm::{last_text, text, tool, Reply, ScriptedLlm};
use serde_json::{json, Value};
use std::time::Duration;
use support::{eventually, process_gone, read, Agent, Dirs, SseEvent};

const WORDS: [&str; 6] = ["one", " two", " three", " four", " five", " six"];

fn slow() -> Reply {
    Reply::SlowText(WORDS.iter().map(|w| w.to_string()).collect(), Duration::from_millis(150))
}

fn seqs(events: &[SseEvent]) -> Vec<u64> {
    events.iter().map(|e| e.data["sequence_number"].as_u64().unwrap()).collect()
}

fn deltas(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.event == "response.output_text.delta")
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_background_turn_answers_at_once_and_finishes_without_its_client() {
    let llm = ScriptedLlm::openai(|_| slow()).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;

    let (status, r) = agent.post("/v1/responses", &json!({"input": "count", "background": true})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["status"], "in_progress", "answered before the turn ran");
    assert_eq!(r["background"], true);
    assert_eq!(r["output"], json!([]));
    let id = r["id"].as_str().unwrap().to_string();

    let (_, now) = agent.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(now["status"], "in_progress", "GET reports the turn's progress");
    let done = agent.wait_status(&id, "completed").await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"][0]["content"][0]["text"], WORDS.concat());
    assert_eq!(done["background"], true);

    // Cancelling a finished turn changes nothing.
    let (status, again) = agent.post(&format!("/v1/responses/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(again["status"], "completed");
}

#[tokio::test]
async fn a_lost_stream_is_picked_up_where_it_left_off_nothing_lost_nothing_doubled() {
    let llm = ScriptedLlm::openai(|_| slow()).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;

    let mut first = agent.open_stream(&json!({"input": "count", "background": true})).await;
    let mut seen = Vec::new();
    while seen.len() < 5 {
        seen.push(first.next().await.expect("an event"));
    }
    drop(first); // the connection is lost mid-turn
    let id = seen[0].data["response"]["id"].as_str().unwrap().to_string();
    let last = seen.last().unwrap().data["sequence_number"].as_u64().unwrap();

    let rest =
        agent.open_get_stream(&format!("/v1/responses/{id}?stream=true&starting_after={last}")).await.rest().await;
    assert_eq!(rest.last().unwrap().event, "response.completed", "followed live to the end");
    let mut all = seen.clone();
    all.extend(rest);
    let n = all.len() as u64;
    assert_eq!(seqs(&all), (0..n).collect::<Vec<_>>(), "every sequence number once, in order");
    assert_eq!(deltas(&all), WORDS.concat());

    // After the end: a replay from the start gives the same events.
    let replay = agent.open_get_stream(&format!("/v1/responses/{id}?stream=true")).await.rest().await;
    assert_eq!(seqs(&replay), seqs(&all));
    assert_eq!(
        replay.iter().map(|e| e.data.clone()).collect::<Vec<Value>>(),
        all.iter().map(|e| e.data.clone()).collect::<Vec<_>>()
    );
    let (_, stored) = agent.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(stored["status"], "completed");
}

#[tokio::test]
async fn a_second_client_can_follow_a_streamed_turn_while_it_runs() {
    let llm = ScriptedLlm::openai(|_| slow()).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;

    let mut owner = agent.open_stream(&json!({"input": "count"})).await;
    let created = owner.next().await.unwrap();
    let id = created.data["response"]["id"].as_str().unwrap().to_string();
    let watcher = agent.open_get_stream(&format!("/v1/responses/{id}?stream=true&starting_after=0")).await;
    let (mine, theirs) = tokio::join!(owner.rest(), watcher.rest());
    assert_eq!(seqs(&theirs).first(), Some(&1));
    assert_eq!(seqs(&theirs), seqs(&mine), "the same events after the first");
    assert_eq!(deltas(&theirs), WORDS.concat());
}

#[tokio::test]
async fn cancel_stops_a_background_turn_and_its_tool() {
    let llm = ScriptedLlm::openai(|body| match last_text(body).as_str() {
        "run long" => tool("shell", json!({"command": "sleep 60 & echo $! > sleep.pid; wait; touch late"})),
        _ => text(&["never"]),
    })
    .await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;

    let (_, r) = agent.post("/v1/responses", &json!({"input": "run long", "background": true})).await;
    let id = r["id"].as_str().unwrap().to_string();
    assert!(eventually(5, || read(&dirs.workdir, "sleep.pid").trim().parse::<u32>().is_ok()).await);
    let pid: u32 = read(&dirs.workdir, "sleep.pid").trim().parse().unwrap();

    let (status, cancelled) = agent.post(&format!("/v1/responses/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled", "the answer is the turn as it ended");
    assert!(eventually(5, || process_gone(pid)).await, "the tool's process group was killed");
    assert_eq!(llm.requests().len(), 1, "no model call after the cancel");
    assert!(!dirs.workdir.join("late").exists());
    // Its stream ends; the session takes a new turn.
    let events = agent.open_get_stream(&format!("/v1/responses/{id}?stream=true")).await.rest().await;
    assert!(!events.is_empty());
    let (s, next) = agent.post("/v1/responses", &json!({"input": "again", "session_id": r["session_id"]})).await;
    assert_eq!(s, 200, "{next}");

    let (status, e) = agent.post("/v1/responses/resp_nope/cancel", &json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(e["error"]["code"], "response_not_found");
}

#[tokio::test]
async fn a_turn_cut_short_by_a_restart_of_the_agent_ends_failed_with_the_reason() {
    let llm = ScriptedLlm::openai(|_| Reply::SlowText(vec!["a".into(); 100], Duration::from_millis(100))).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let (_, r) = agent.post("/v1/responses", &json!({"input": "long", "background": true})).await;
    let id = r["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(agent); // killed mid-turn

    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let (_, after) = agent.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(after["status"], "failed", "never stuck in_progress: {after}");
    assert_eq!(after["error"]["code"], "agent_restarted");
    // Its stream is picked up across the restart: what it streamed before, then its end.
    let events = agent.open_get_stream(&format!("/v1/responses/{id}?stream=true")).await.rest().await;
    assert_eq!(events[0].event, "response.created");
    // Kept at least every 250 ms: most of what streamed before the kill.
    assert!(deltas(&events).starts_with("aaa"), "the deltas streamed before the restart: {}", deltas(&events));
    let last = events.last().unwrap();
    assert_eq!(last.event, "response.failed", "the turn cut by the restart ends, with its reason");
    assert_eq!(last.data["response"]["error"]["code"], "agent_restarted");
    let numbers = seqs(&events);
    assert_eq!(numbers, (0..numbers.len() as u64).collect::<Vec<_>>(), "numbered without a gap");
}

#[tokio::test]
async fn a_finished_turn_is_picked_up_after_a_restart_of_the_agent_exactly_where_it_left_off() {
    let llm = ScriptedLlm::openai(|_| text(&WORDS)).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let original = agent.stream(&json!({"input": "count"})).await;
    let id = original[0].data["response"]["id"].as_str().unwrap().to_string();
    agent.stop();

    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let resumed = agent.open_get_stream(&format!("/v1/responses/{id}?stream=true&starting_after=5")).await.rest().await;
    assert_eq!(seqs(&resumed)[0], 6, "from event 6");
    let same: Vec<(&str, &Value)> = original[6..].iter().map(|e| (e.event.as_str(), &e.data)).collect();
    let again: Vec<(&str, &Value)> = resumed.iter().map(|e| (e.event.as_str(), &e.data)).collect();
    assert_eq!(same, again, "the same events, nothing lost, nothing doubled");
    assert_eq!(resumed.last().unwrap().event, "response.completed");
}

#[tokio::test]
async fn bad_stream_parameters_are_named() {
    let llm = ScriptedLlm::openai(|_| text(&["hi"])).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let (_, r) = agent.post("/v1/responses", &json!({"input": "hi"})).await;
    let id = r["id"].as_str().unwrap();
    let (status, e) = agent.get(&format!("/v1/responses/{id}?stream=true&starting_after=x")).await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["param"], "starting_after");
    let (status, e) = agent.get(&format!("/v1/responses/{id}?stream=true&starting_after=18446744073709551615")).await;
    assert_eq!((status.as_u16(), e["error"]["param"].as_str()), (400, Some("starting_after")));
    let (status, e) = agent.get(&format!("/v1/responses/{id}?stream=maybe")).await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["param"], "stream");
    // A turn answered inline keeps no events.
    let (status, e) = agent.get(&format!("/v1/responses/{id}?stream=true")).await;
    assert_eq!(status, 410);
    assert_eq!(e["error"]["code"], "stream_unavailable");
    let (status, _) = agent.get("/v1/responses/resp_nope?stream=true").await;
    assert_eq!(status, 404);
}
