//! Compatibility with a real client: runs tests/openai_client.py (the
//! official `openai` Python package) against the agent. Without the package the
//! test fails when BERTH_REQUIRE_OPENAI_CLIENT is set (CI sets it), and otherwise
//! skips with a loud SKIPPED line (berth_test_util::require).

mod support;

use berth_test_util::llm::{last_role, last_text, text, tool, Reply, ScriptedLlm};
use serde_json::json;
use std::process::Command;
use support::{Agent, Dirs};

fn openai_installed() -> bool {
    Command::new("python3").args(["-c", "import openai"]).output().is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn official_openai_python_client_works() {
    if !openai_installed() {
        berth_test_util::require::missing(
            "BERTH_REQUIRE_OPENAI_CLIENT",
            "python3's `openai` package",
            "pip install openai",
            "the whole test (the official OpenAI Python client against the agent)",
        );
        return;
    }
    let llm = ScriptedLlm::openai(|body| match (last_role(body).as_str(), last_text(body).as_str()) {
        ("user", "use a tool") => tool("shell", json!({"command": "echo tool-ran"})),
        ("user", "weather in Paris?") => tool("get_weather", json!({"city": "Paris"})),
        ("tool", "sunny, 21 C") => text(&["It is sunny in Paris."]),
        ("tool", out) => Reply::Text(vec!["The tool said: ".into(), out.lines().nth(1).unwrap_or("").into()]),
        _ => text(&["Hello", " from the", " scripted model!"]),
    })
    .await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[("BERTH_GATEWAY_TOKEN", "py-token")]).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let url = agent.url.clone();
    // The script blocks; run it off the runtime that serves the scripted model.
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .env("AGENT_URL", url)
            .env("AGENT_TOKEN", "py-token")
            .output()
            .expect("run python3")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openai_client.py failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
