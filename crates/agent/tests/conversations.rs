//! The Conversations API over sessions, and `conversation` on `POST /v1/responses`.

mod support;

use berth_test_util::llm::{count_role, text, ScriptedLlm};
use serde_json::json;
use support::{Agent, Dirs};

#[tokio::test]
async fn a_conversation_is_made_with_items_continued_by_responses_and_listed() {
    // The model says how many user messages it was sent.
    let llm = ScriptedLlm::openai(|body| text(&[&format!("{} user messages", count_role(body, "user"))])).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;

    let (status, conv) = agent
        .post(
            "/v1/conversations",
            &json!({"metadata": {"topic": "demo"}, "items": [{"role": "user", "content": "I am Ada."}]}),
        )
        .await;
    assert_eq!(status, 200, "{conv}");
    assert_eq!(conv["object"], "conversation");
    assert_eq!(conv["metadata"]["topic"], "demo");
    let id = conv["id"].as_str().unwrap().to_string();
    assert_eq!(agent.get(&format!("/v1/conversations/{id}")).await.1, conv);

    let (status, r) = agent.post("/v1/responses", &json!({"conversation": id, "input": "Who am I?"})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["conversation"]["id"], id.as_str());
    assert_eq!(r["output"][0]["content"][0]["text"], "2 user messages", "the conversation's items came first");
    let (_, r2) = agent.post("/v1/responses", &json!({"conversation": {"id": id}, "input": "And now?"})).await;
    assert_eq!(r2["output"][0]["content"][0]["text"], "3 user messages");
    assert_eq!(r2["session_id"], id.as_str(), "a conversation is a session");

    // Items, newest first by default, paginated.
    let (_, page) = agent.get(&format!("/v1/conversations/{id}/items?limit=2")).await;
    assert_eq!(page["object"], "list");
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["data"][0]["role"], "assistant");
    assert_eq!(page["data"][0]["content"][0]["text"], "3 user messages");
    let (_, next) =
        agent.get(&format!("/v1/conversations/{id}/items?limit=100&after={}", page["last_id"].as_str().unwrap())).await;
    assert_eq!(next["has_more"], false);
    assert_eq!(next["data"].as_array().unwrap().len(), 3);
    let (_, asc) = agent.get(&format!("/v1/conversations/{id}/items?order=asc")).await;
    assert_eq!(asc["data"][0]["content"][0]["text"], "I am Ada.");

    // Items added by hand take part in the next turn.
    let (status, added) = agent
        .post(&format!("/v1/conversations/{id}/items"), &json!({"items": [{"role": "user", "content": "PS: hi"}]}))
        .await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["data"][0]["type"], "message");
    let (_, r3) = agent.post("/v1/responses", &json!({"conversation": id, "input": "Count again"})).await;
    assert_eq!(r3["output"][0]["content"][0]["text"], "5 user messages");

    // Metadata update, then delete.
    let (_, updated) = agent.post(&format!("/v1/conversations/{id}"), &json!({"metadata": {"topic": "done"}})).await;
    assert_eq!(updated["metadata"], json!({"topic": "done"}));
    let (status, gone) = agent.delete(&format!("/v1/conversations/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(gone, json!({"id": id, "object": "conversation.deleted", "deleted": true}));
    let (status, e) = agent.get(&format!("/v1/conversations/{id}")).await;
    assert_eq!(status, 404);
    assert_eq!(e["error"]["code"], "conversation_not_found");
}

#[tokio::test]
async fn conversation_mistakes_are_named() {
    let llm = ScriptedLlm::openai(|_| text(&["ok"])).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let (status, e) = agent.post("/v1/responses", &json!({"conversation": "sess_nope", "input": "hi"})).await;
    assert_eq!((status.as_u16(), e["error"]["code"].as_str()), (404, Some("conversation_not_found")));
    let (_, conv) = agent.post("/v1/conversations", &json!({})).await;
    let id = conv["id"].as_str().unwrap();
    let (_, r) = agent.post("/v1/responses", &json!({"input": "hi"})).await;
    let (status, e) =
        agent.post("/v1/responses", &json!({"conversation": id, "previous_response_id": r["id"], "input": "hi"})).await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["param"], "conversation");
    let (status, e) = agent.post("/v1/responses", &json!({"conversation": 5, "input": "hi"})).await;
    assert_eq!((status.as_u16(), e["error"]["param"].as_str()), (400, Some("conversation")));
    let (status, e) = agent
        .post(&format!("/v1/conversations/{id}/items"), &json!({"items": [{"role": "wizard", "content": "x"}]}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["param"], "items[0].role");
    let (status, e) = agent.post(&format!("/v1/conversations/{id}/items"), &json!({})).await;
    assert_eq!((status.as_u16(), e["error"]["param"].as_str()), (400, Some("items")));
    let (status, e) = agent.get(&format!("/v1/conversations/{id}/items?order=sideways")).await;
    assert_eq!((status.as_u16(), e["error"]["param"].as_str()), (400, Some("order")));
    let (status, e) = agent.post("/v1/conversations", &json!({"metadata": {"k": 1}})).await;
    assert_eq!((status.as_u16(), e["error"]["param"].as_str()), (400, Some("metadata")));
    let (status, _) =
        agent.post("/v1/conversations/sess_nope/items", &json!({"items": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_older_previous_response_id_branches_a_new_session_from_it() {
    // The model repeats the user messages it was sent.
    let llm = ScriptedLlm::openai(|body| {
        let users: Vec<String> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "user")
            .map(|m| m["content"].as_str().unwrap_or("").to_string())
            .collect();
        text(&[&users.join("|")])
    })
    .await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    let (_, r1) = agent.post("/v1/responses", &json!({"input": "a"})).await;
    let (_, r2) = agent.post("/v1/responses", &json!({"input": "b", "previous_response_id": r1["id"]})).await;
    assert_eq!(r2["session_id"], r1["session_id"], "the newest response continues its session");
    assert_eq!(r2["output"][0]["content"][0]["text"], "a|b");

    let (status, alt) = agent.post("/v1/responses", &json!({"input": "c", "previous_response_id": r1["id"]})).await;
    assert_eq!(status, 200, "{alt}");
    assert_eq!(alt["output"][0]["content"][0]["text"], "a|c", "the branch holds what came before r1, not r2");
    assert_ne!(alt["session_id"], r1["session_id"], "a new session");
    assert_eq!(alt["previous_response_id"], r1["id"]);
    // The original is untouched and goes on; the branch goes on by its own newest response.
    let (_, r3) = agent.post("/v1/responses", &json!({"input": "d", "previous_response_id": r2["id"]})).await;
    assert_eq!(r3["output"][0]["content"][0]["text"], "a|b|d");
    assert_eq!(r3["session_id"], r1["session_id"]);
    let (_, alt2) = agent.post("/v1/responses", &json!({"input": "e", "previous_response_id": alt["id"]})).await;
    assert_eq!(alt2["output"][0]["content"][0]["text"], "a|c|e");
    assert_eq!(alt2["session_id"], alt["session_id"]);
}
