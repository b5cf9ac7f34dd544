//! Sessions: continuation with the whole history, persistence across a
//! restart, listing and deleting, and concurrent messages to one session.

mod support;

use berth_test_util::llm::{count_role, first_user_text, last_text, Reply, ScriptedLlm};
use serde_json::{json, Value};
use std::time::Duration;
use support::{Agent, Dirs};

/// A model that says how many user messages it was sent and what the first was.
async fn echo_llm() -> ScriptedLlm {
    ScriptedLlm::openai(|body| {
        if last_text(body) == "slow" {
            return Reply::SlowText(vec!["s".into(); 10], Duration::from_millis(100));
        }
        Reply::Text(vec![format!("{} user messages; first: {}", count_role(body, "user"), first_user_text(body))])
    })
    .await
}

fn answer(r: &Value) -> &str {
    r["output"][0]["content"][0]["text"].as_str().unwrap_or("")
}

#[tokio::test]
async fn continuation_sends_the_whole_history() {
    let llm = echo_llm().await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;

    let (_, a) = agent.post("/v1/responses", &json!({"input": "my name is Ada"})).await;
    let sid = a["session_id"].as_str().unwrap();
    let (_, b) = agent.post("/v1/responses", &json!({"input": "and yours?", "session_id": sid})).await;
    assert_eq!(b["session_id"], sid);
    assert_eq!(answer(&b), "2 user messages; first: my name is Ada");
    let msgs = &llm.requests()[1].body["messages"];
    assert_eq!(msgs[2], json!({"role": "assistant", "content": "1 user messages; first: my name is Ada"}));

    // previous_response_id continues the same session.
    let (_, c) = agent.post("/v1/responses", &json!({"input": "third", "previous_response_id": b["id"]})).await;
    assert_eq!(c["session_id"], sid);
    assert_eq!(c["previous_response_id"], b["id"]);
    assert_eq!(answer(&c), "3 user messages; first: my name is Ada");

    // A response of another session cannot be mixed in.
    let (_, other) = agent.post("/v1/responses", &json!({"input": "elsewhere"})).await;
    let (s, e) = agent
        .post("/v1/responses", &json!({"input": "x", "session_id": sid, "previous_response_id": other["id"]}))
        .await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["param"], "previous_response_id");

    let (_, detail) = agent.get(&format!("/v1/sessions/{sid}")).await;
    assert_eq!(detail["object"], "session");
    assert_eq!(detail["title"], "my name is Ada");
    assert_eq!(detail["item_count"], 6);
    let roles: Vec<&str> = detail["items"].as_array().unwrap().iter().map(|i| i["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant", "user", "assistant"]);
    assert_eq!(detail["items"][1]["response_id"], a["id"]);
    assert_eq!(detail["response_ids"], json!([a["id"], b["id"], c["id"]]));
}

#[tokio::test]
async fn sessions_survive_a_restart() {
    let llm = echo_llm().await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let (_, a) = agent.post("/v1/responses", &json!({"input": "remember me"})).await;
    let sid = a["session_id"].as_str().unwrap().to_string();
    agent.stop();

    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let (s, stored) = agent.get(&format!("/v1/responses/{}", a["id"].as_str().unwrap())).await;
    assert_eq!(s, 200);
    assert_eq!(stored, a);
    let (_, b) = agent.post("/v1/responses", &json!({"input": "still there?", "session_id": sid})).await;
    assert_eq!(answer(&b), "2 user messages; first: remember me");
    let (_, list) = agent.get("/v1/sessions").await;
    assert_eq!(list["data"][0]["id"], sid.as_str());
    assert_eq!(list["data"][0]["item_count"], 4);
}

#[tokio::test]
async fn list_paginates_newest_first_and_delete_removes() {
    let llm = echo_llm().await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (_, r) = agent.post("/v1/responses", &json!({"input": format!("session {i}")})).await;
        ids.push(r["session_id"].as_str().unwrap().to_string());
    }
    let (_, page) = agent.get("/v1/sessions?limit=2").await;
    assert_eq!(page["object"], "list");
    let got: Vec<&str> = page["data"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()]);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["first_id"], ids[2].as_str());
    assert_eq!(page["data"][0]["title"], "session 2");
    let (_, page2) = agent.get(&format!("/v1/sessions?limit=2&after={}", page["last_id"].as_str().unwrap())).await;
    assert_eq!(page2["data"][0]["id"], ids[0].as_str());
    assert_eq!(page2["has_more"], false);

    for bad in ["/v1/sessions?limit=0", "/v1/sessions?limit=abc", "/v1/sessions?after=sess_nope"] {
        let (s, e) = agent.get(bad).await;
        assert_eq!(s, 400, "{bad}");
        assert_eq!(e["error"]["type"], "invalid_request_error");
    }

    let (s, d) = agent.delete(&format!("/v1/sessions/{}", ids[1])).await;
    assert_eq!(s, 200);
    assert_eq!(d, json!({"id": ids[1], "object": "session.deleted", "deleted": true}));
    let (s, e) = agent.get(&format!("/v1/sessions/{}", ids[1])).await;
    assert_eq!((s.as_u16(), e["error"]["code"].as_str()), (404, Some("session_not_found")));
    let (s, _) = agent.delete(&format!("/v1/sessions/{}", ids[1])).await;
    assert_eq!(s, 404);
    let (s, _) = agent.post("/v1/responses", &json!({"input": "x", "session_id": ids[1]})).await;
    assert_eq!(s, 404);
    let (_, all) = agent.get("/v1/sessions").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn concurrent_messages_to_one_session_get_409() {
    let llm = echo_llm().await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let (_, first) = agent.post("/v1/responses", &json!({"input": "hello"})).await;
    let sid = first["session_id"].as_str().unwrap().to_string();

    // A slow turn streams for about a second...
    let mut slow = agent.open_stream(&json!({"input": "slow", "session_id": sid})).await;
    let created = slow.next().await.unwrap();
    assert_eq!(created.event, "response.created");
    // ...while a second message and a delete are refused with a clear 409.
    let (s, e) = agent.post("/v1/responses", &json!({"input": "meanwhile", "session_id": sid})).await;
    assert_eq!(s, 409, "{e}");
    assert_eq!(e["error"]["code"], "session_busy");
    assert!(e["error"]["message"].as_str().unwrap().contains("still answering"));
    let (s, _) = agent.delete(&format!("/v1/sessions/{sid}")).await;
    assert_eq!(s, 409);
    // Other sessions are not held up.
    let (s, _) = agent.post("/v1/responses", &json!({"input": "other"})).await;
    assert_eq!(s, 200);

    while let Some(e) = slow.next().await {
        if e.event == "response.completed" {
            break;
        }
    }
    let (s, r) = agent.post("/v1/responses", &json!({"input": "after", "session_id": sid})).await;
    assert_eq!(s, 200, "{r}");
    let (_, detail) = agent.get(&format!("/v1/sessions/{sid}")).await;
    let texts: Vec<String> = detail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("{}:{}", i["role"].as_str().unwrap(), i["content"][0]["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        texts[2..],
        ["user:slow", "assistant:ssssssssss", "user:after", "assistant:3 user messages; first: hello"]
    );
}
