//! The edge: instance URLs, key checks before any byte reaches the instance,
//! the key swapped for the instance's gateway token, SSE passed through unbuffered.

use berth_test_util::docker::{exec, network_gateway, reach_host_port, TEST_NETWORK};
use berth_test_util::llm::{last_role, last_text, tool, Reply, ScriptedLlm};
use berth_test_util::TestServer;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// An OpenAI-compatible model on all addresses (instances reach it through their
/// bridge's gateway) that streams "Hello", " from", " the model", 700 ms apart.
async fn scripted_model() -> ScriptedLlm {
    let chunks = ["Hello", " from", " the model"].map(String::from).to_vec();
    ScriptedLlm::openai_on("0.0.0.0:0", move |_| Reply::SlowText(chunks.clone(), Duration::from_millis(700))).await
}

/// The model's base URL as an instance reaches it.
fn from_instances(llm: &ScriptedLlm) -> String {
    llm.base_url_at(&network_gateway(TEST_NETWORK))
}

#[tokio::test]
async fn the_edge_routes_authenticates_and_streams() {
    let s = TestServer::shared().await;
    let model = scripted_model().await;
    let llm = from_instances(&model);
    let inst = s
        .create_instance(json!({"env": {"BERTH_LLM_BASE_URL": llm, "BERTH_MODEL": "scripted"},
        "network": reach_host_port(model.port())}))
        .await;
    let id = inst["id"].as_str().unwrap().to_string();
    let host = format!("{}.localhost:{}", &id[5..], s.edge_port());
    assert_eq!(inst["url"], format!("http://{host}"));
    let edge = |path: &str| s.http().get(format!("{}{path}", s.edge_base)).header("host", &host);

    // The key is checked at the edge.
    let r = edge("/health").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = edge("/health").bearer_auth("sk_wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let other = s.create_workspace("other").await;
    let r = edge("/v1/models").bearer_auth(&other).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .http()
        .get(format!("{}/health", s.edge_base))
        .header("host", "zzzzzzzzzz.localhost")
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "instance_not_found");

    // With the key: through to the agent, which only accepts the gateway token.
    let r = edge("/health").bearer_auth(&s.key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = edge("/v1/models").header("x-api-key", &s.key).send().await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let (code, direct) = exec(&id, "wget -q -O - http://127.0.0.1:3737/v1/models 2>&1");
    assert_ne!(code, 0, "the agent answered without its gateway token: {direct}");

    // SSE passes through as produced, not buffered until the end.
    let started = Instant::now();
    let resp = s
        .http()
        .post(format!("{}/v1/responses", s.edge_base))
        .header("host", &host)
        .bearer_auth(&s.key)
        .json(&json!({"input": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut first_delta = None;
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        if first_delta.is_none() && text.contains("response.output_text.delta") {
            first_delta = Some(started.elapsed());
        }
    }
    let total = started.elapsed();
    let first = first_delta.unwrap_or_else(|| panic!("no delta in:\n{text}"));
    assert!(total >= Duration::from_millis(1300), "{total:?}");
    assert!(first + Duration::from_millis(1000) < total, "first delta at {first:?} of {total:?}: buffered");
    assert!(text.contains("response.completed"), "{text}");
    assert!(text.contains("the model"));

    // A stopped instance's URL says so.
    s.post(&format!("/v1/instances/{id}/stop"), json!({})).await;
    let r = edge("/health").bearer_auth(&s.key).send().await.unwrap();
    assert_eq!(r.status(), 409);
}

/// A model that first asks for the `shell` tool, then answers with what it returned.
async fn tool_calling_model() -> ScriptedLlm {
    ScriptedLlm::openai_on("0.0.0.0:0", |body| match last_role(body).as_str() {
        "tool" => Reply::Text(vec![format!("the tool said {}", last_text(body))]),
        _ => {
            tool("shell", json!({"command": "hostname > /home/agent/from-agent.txt && cat /home/agent/from-agent.txt"}))
        }
    })
    .await
}

#[tokio::test]
async fn the_agent_acts_on_its_own_computer_and_its_sessions_survive_a_restart() {
    let s = TestServer::shared().await;
    let model = tool_calling_model().await;
    let llm = from_instances(&model);
    let inst = s
        .create_instance(json!({"env": {"BERTH_LLM_BASE_URL": llm, "BERTH_MODEL": "scripted"},
        "network": reach_host_port(model.port())}))
        .await;
    let id = inst["id"].as_str().unwrap().to_string();
    let host = format!("{}.localhost:{}", &id[5..], s.edge_port());
    let resp = s
        .http()
        .post(format!("{}/v1/responses", s.edge_base))
        .header("host", &host)
        .bearer_auth(&s.key)
        .json(&json!({"input": "write your hostname to a file"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["status"], "completed", "{answer}");
    let label = &id[5..];
    let text = answer["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "message")
        .map(|i| i.to_string())
        .collect::<String>();
    assert!(text.contains(label), "the answer carries the tool's output (the instance's hostname): {answer}");
    assert!(
        answer["output"].as_array().unwrap().iter().any(|i| i["type"] == "function_call" && i["name"] == "shell"),
        "{answer}"
    );
    // The tool really ran inside the instance, in its persistent home.
    assert_eq!(exec(&id, "cat /home/agent/from-agent.txt").1, label);

    // Sessions live on the instance's volume: still there after a restart.
    let session = answer["session_id"].as_str().unwrap().to_string();
    let (st, _) = s.post(&format!("/v1/instances/{id}/restart"), json!({})).await;
    assert_eq!(st, 200);
    let r = s
        .http()
        .get(format!("{}/v1/sessions/{session}", s.edge_base))
        .header("host", &host)
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let history = r.text().await.unwrap();
    assert!(history.contains("write your hostname to a file") && history.contains("from-agent.txt"), "{history}");
}
