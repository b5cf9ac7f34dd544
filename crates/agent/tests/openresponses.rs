//! Open Responses conformance: runs tests/openresponses.py (every response, stream
//! event, WebSocket frame and compaction answer validated against the specification's
//! schemas in tests/openresponses/) against the agent and a scripted model. Needs
//! python3's `jsonschema` and `websockets`; without them the test fails when
//! BERTH_REQUIRE_OPENAI_CLIENT is set (CI sets it) and otherwise skips loudly.

mod support;

use berth_test_util::llm::{last_role, last_text, text, tool, Reply, ScriptedLlm};
use serde_json::{json, Value};
use std::process::Command;
use support::{Agent, Dirs};

fn python_has(modules: &str) -> bool {
    Command::new("python3").args(["-c", &format!("import {modules}")]).output().is_ok_and(|o| o.status.success())
}

fn script(body: &Value) -> Reply {
    let system = body["messages"][0]["content"].as_str().unwrap_or_default();
    if system.starts_with("You compact conversations") {
        return text(&["The user is Alice; she likes tea."]);
    }
    let last = last_text(body);
    match last_role(body).as_str() {
        "tool" => return text(&["It is foggy in San Francisco, 14 C."]),
        "user" => {}
        _ => return text(&["OK"]),
    }
    if last.contains("weather") {
        tool("get_weather", json!({"location": "San Francisco"}))
    } else if last.contains("Count from 1 to 5") {
        text(&["1", ", 2", ", 3", ", 4", ", 5"])
    } else if last.contains("Think first") {
        Reply::Reasoning("Let me think.".into(), vec!["Thought it through.".into()])
    } else if last.contains("Fail, please") {
        Reply::Status(500, json!({"error": {"message": "the model broke"}}))
    } else if last.contains("Say hello.") {
        text(&["Ahoy, matey!"])
    } else {
        text(&["Hello", " there,", " friend!"])
    }
}

#[tokio::test]
async fn open_responses_schemas_hold_for_every_object_and_event() {
    if !python_has("jsonschema, websockets") {
        berth_test_util::require::missing(
            "BERTH_REQUIRE_OPENAI_CLIENT",
            "python3's `jsonschema` and `websockets` packages",
            "pip install jsonschema websockets",
            "the Open Responses conformance test",
        );
        return;
    }
    let llm = ScriptedLlm::openai(script).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[("BERTH_GATEWAY_TOKEN", "or-token")]).await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openresponses.py");
    let url = agent.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(path).arg(url).arg("or-token").output().expect("run python3")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openresponses.py failed:\n{stdout}\n{stderr}");
    eprintln!("{stdout}");

    // What the model was sent: the image as an image part, the system prompt first.
    let requests = llm.requests();
    let image = requests
        .iter()
        .flat_map(|r| r.body["messages"].as_array().cloned().unwrap_or_default())
        .filter_map(|m| m["content"].as_array().cloned())
        .flatten()
        .find(|p| p["type"] == "image_url")
        .expect("the image reached the model as an image_url part");
    assert!(image["image_url"]["url"].as_str().unwrap().starts_with("data:image/png;base64,"), "{image}");
    assert!(requests.iter().any(|r| r.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["role"] == "system" && m["content"].as_str().unwrap_or_default().contains("pirate"))));
}
