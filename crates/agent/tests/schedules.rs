//! Scheduled work: `POST/GET/DELETE /v1/schedules`; runs fire on time, keep their
//! responses, continue one session, show in `/health`'s next due time, and are made up
//! after the agent was stopped.

mod support;

use berth_test_util::llm::{last_text, Reply, ScriptedLlm};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{Agent, Dirs};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn echo(body: &Value) -> Reply {
    Reply::Text(vec![format!("did: {}", last_text(body))])
}

async fn schedule(agent: &Agent, id: &str) -> Value {
    let (status, s) = agent.get(&format!("/v1/schedules/{id}")).await;
    assert_eq!(status, 200, "{s}");
    s
}

/// Polls the schedule until `f` holds (10 s at most); the last seen.
async fn schedule_until(agent: &Agent, id: &str, f: impl Fn(&Value) -> bool) -> Value {
    let mut s = Value::Null;
    for _ in 0..100 {
        s = schedule(agent, id).await;
        if f(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the schedule never got there: {s}");
}

#[tokio::test]
async fn a_schedule_fires_on_time_keeps_its_results_in_one_session_and_stops_when_deleted() {
    let llm = ScriptedLlm::openai(echo).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;

    let before = now();
    let (status, s) = agent
        .post(
            "/v1/schedules",
            &json!({"every_secs": 1, "input": "check the mail", "name": "mail", "metadata": {"k": "v"}}),
        )
        .await;
    assert_eq!(status, 200, "{s}");
    let id = s["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("sched_"));
    assert_eq!(
        (s["object"].as_str(), s["every_secs"].as_u64(), s["run_count"].as_u64()),
        (Some("schedule"), Some(1), Some(0))
    );
    let due = s["next_run_at"].as_u64().unwrap();
    assert!(due > before && due <= now() + 1, "{s}");
    let (_, health) = agent.get("/health").await;
    assert_eq!(health["next_due_at"].as_u64(), Some(due), "/health says when work is due: {health}");

    let s =
        schedule_until(&agent, &id, |s| s["run_count"].as_u64() >= Some(3) && s["last_status"] == "completed").await;
    let runs = s["runs"].as_array().unwrap();
    assert!(runs.len() >= 3, "{s}");
    let times: Vec<u64> = runs.iter().map(|r| r["started_at"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] > w[1]), "one run a second, newest first: {times:?}");
    assert!(times.last().unwrap() >= &due, "not before it was due");

    // Each run's result is kept as a response, all in the schedule's session.
    let response_id = runs[0]["response_id"].as_str().unwrap();
    let r = agent.wait_status(response_id, "completed").await;
    assert_eq!(r["output"][0]["content"][0]["text"], "did: check the mail", "{r}");
    assert_eq!(r["metadata"]["schedule_id"], id.as_str());
    assert_eq!(r["metadata"]["k"], "v");
    let session = s["session_id"].as_str().expect("its first run started a session");
    let (_, detail) = agent.get(&format!("/v1/sessions/{session}")).await;
    let asked = detail["items"].as_array().unwrap().iter().filter(|i| i["role"] == "user").count();
    assert!(asked >= 3, "the runs continue one session: {detail}");

    let (_, list) = agent.get("/v1/schedules").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    let (status, gone) = agent.delete(&format!("/v1/schedules/{id}")).await;
    assert_eq!((status.as_u16(), gone["deleted"].as_bool()), (200, Some(true)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = llm.requests().len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(llm.requests().len(), calls, "a deleted schedule runs no more");
    let (status, _) = agent.get(&format!("/v1/schedules/{id}")).await;
    assert_eq!(status, 404);
    let (_, health) = agent.get("/health").await;
    assert!(health["next_due_at"].is_null(), "{health}");
}

#[tokio::test]
async fn cron_with_seconds_fires_and_a_run_missed_while_stopped_is_made_up_at_start() {
    let llm = ScriptedLlm::openai(echo).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let (status, s) = agent.post("/v1/schedules", &json!({"cron": "*/2 * * * * *", "input": "tick"})).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["next_run_at"].as_u64().unwrap() % 2, 0, "on even seconds: {s}");
    let id = s["id"].as_str().unwrap().to_string();
    schedule_until(&agent, &id, |s| s["last_status"] == "completed").await;

    // An bound schedule bound to a session, then the agent stops past its due time.
    let (_, first) = agent.post("/v1/responses", &json!({"input": "hello"})).await;
    let session = first["session_id"].as_str().unwrap();
    let (_, bound) =
        agent.post("/v1/schedules", &json!({"every_secs": 2, "input": "catch up", "session_id": session})).await;
    let bound_id = bound["id"].as_str().unwrap().to_string();
    let due = bound["next_run_at"].as_u64().unwrap();
    let (_, deleted) = agent.delete(&format!("/v1/schedules/{id}")).await;
    assert_eq!(deleted["deleted"], true);
    agent.stop();
    while now() <= due + 1 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let calls = llm.requests().len();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let s = schedule_until(&agent, &bound_id, |s| s["last_status"] == "completed").await;
    assert_eq!(s["session_id"], session, "it runs in the session it was given");
    assert!(s["runs"][0]["started_at"].as_u64().unwrap() > due, "made up after the restart");
    assert!(llm.requests().len() > calls);
    let (_, detail) = agent.get(&format!("/v1/sessions/{session}")).await;
    let texts: Vec<&str> = detail["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["role"] == "user")
        .filter_map(|i| i["content"][0]["text"].as_str())
        .collect();
    assert_eq!(texts.first(), Some(&"hello"));
    assert!(texts.contains(&"catch up"), "{texts:?}");
}

#[tokio::test]
async fn bad_schedules_are_refused_naming_the_field() {
    let llm = ScriptedLlm::openai(echo).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    for (body, status, param) in [
        (json!({"input": "x"}), 400, Some("cron")),
        (json!({"cron": "every day", "input": "x"}), 400, Some("cron")),
        (json!({"cron": "99 * * * *", "input": "x"}), 400, Some("cron")),
        (json!({"cron": "* * * * *", "every_secs": 5, "input": "x"}), 400, Some("every_secs")),
        (json!({"every_secs": 0, "input": "x"}), 400, Some("every_secs")),
        (json!({"every_secs": 5}), 400, Some("input")),
        (json!({"every_secs": 5, "input": []}), 400, Some("input")),
        (json!({"every_secs": 5, "input": "x", "sesion_id": "typo"}), 400, Some("sesion_id")),
        (json!({"every_secs": 5, "input": "x", "metadata": 3}), 400, Some("metadata")),
        (json!({"every_secs": 5, "input": "x", "session_id": "sess_nope"}), 404, None),
    ] {
        let (got, e) = agent.post("/v1/schedules", &body).await;
        assert_eq!(got.as_u16(), status, "{body} -> {e}");
        assert_eq!(e["error"]["param"].as_str(), param, "{body} -> {e}");
    }
    let (_, list) = agent.get("/v1/schedules").await;
    assert_eq!(list["data"], json!([]), "nothing half-made");
    let (status, e) = agent.delete("/v1/schedules/sched_nope").await;
    assert_eq!((status.as_u16(), e["error"]["code"].as_str()), (404, Some("schedule_not_found")));
}
