//! MCP tools: servers named in `DATA/mcp.json` — one over stdio (a Python script),
//! one over streamable HTTP (a server in this test) — are listed in `GET /v1/tools`,
//! offered to the model, and run when it calls them; a server that cannot start is
//! reported; a changed file is read again.

mod support;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use berth_test_util::llm::{last_role, last_text, text, tool, tool_names, Reply, ScriptedLlm};
use serde_json::{json, Value};
use support::{Agent, Dirs};

/// A streamable-HTTP MCP server answering JSON, with a session id.
async fn http_mcp(headers: HeaderMap, Json(msg): Json<Value>) -> axum::response::Response {
    let Some(id) = msg.get("id").cloned() else {
        return StatusCode::ACCEPTED.into_response();
    };
    let method = msg["method"].as_str().unwrap_or_default();
    if method != "initialize" && headers.get("mcp-session-id").and_then(|v| v.to_str().ok()) != Some("sess-1") {
        return (StatusCode::BAD_REQUEST, "no session").into_response();
    }
    assert_eq!(headers.get("x-team").and_then(|v| v.to_str().ok()), Some("blue"), "configured headers are sent");
    let result = match method {
        "initialize" => json!({"protocolVersion": msg["params"]["protocolVersion"],
            "capabilities": {"tools": {}}, "serverInfo": {"name": "web", "version": "1"}}),
        "tools/list" => json!({"tools": [{"name": "lookup", "description": "Look a word up.",
            "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}]}),
        "tools/call" => {
            json!({"content": [{"type": "text", "text": format!("found: {}", msg["params"]["arguments"]["q"])}]})
        }
        _ => json!({}),
    };
    ([("mcp-session-id", "sess-1")], Json(json!({"jsonrpc": "2.0", "id": id, "result": result}))).into_response()
}

fn script(body: &Value) -> Reply {
    match (last_role(body).as_str(), last_text(body).as_str()) {
        ("user", "add 2 and 3") => tool("calc__add", json!({"a": 2, "b": 3})),
        ("user", "look up berth") => tool("web__lookup", json!({"q": "berth"})),
        ("user", "break it") => tool("calc__fail", json!({})),
        ("tool", out) => Reply::Text(vec![format!("the tool said {out}")]),
        _ => text(&["ok"]),
    }
}

fn write_config(dirs: &Dirs, servers: Value) {
    std::fs::create_dir_all(&dirs.data).unwrap();
    std::fs::write(dirs.data.join("mcp.json"), json!({"mcpServers": servers}).to_string()).unwrap();
}

#[tokio::test]
async fn mcp_servers_tools_are_listed_offered_and_run() {
    let llm = ScriptedLlm::openai(script).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, Router::new().route("/mcp", post(http_mcp))).await });
    let dirs = Dirs::new();
    let stdio = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/stdio_server.py");
    write_config(
        &dirs,
        json!({
            "calc": {"command": "python3", "args": [stdio]},
            "web": {"url": format!("http://127.0.0.1:{port}/mcp"), "headers": {"X-Team": "blue"}},
            "broken": {"command": "/nonexistent/mcp-server"},
        }),
    );
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;

    let (status, tools) = agent.get("/v1/tools").await;
    assert_eq!(status, 200, "{tools}");
    let names: Vec<&str> = tools["data"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    for want in ["shell", "calc__add", "calc__fail", "web__lookup"] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let add = tools["data"].as_array().unwrap().iter().find(|t| t["name"] == "calc__add").unwrap();
    assert_eq!((add["source"].as_str(), add["server"].as_str()), (Some("mcp"), Some("calc")));
    assert_eq!(add["parameters"]["required"], json!(["a", "b"]));
    let errors = tools["mcp_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["server"], "broken");
    assert!(errors[0]["error"].as_str().unwrap().contains("/nonexistent/mcp-server"), "{errors:?}");

    // The stdio server's tool, called by the model.
    let (_, r) = agent.post("/v1/responses", &json!({"input": "add 2 and 3"})).await;
    assert_eq!(r["status"], "completed", "{r}");
    let output = r["output"].as_array().unwrap().iter().find(|i| i["type"] == "function_call_output").unwrap();
    assert_eq!(output["output"], "5", "{r}");
    assert_eq!(r["output"].as_array().unwrap().last().unwrap()["content"][0]["text"], "the tool said 5");
    let offered = tool_names(&llm.requests()[0].body);
    assert!(offered.contains(&"calc__add".to_string()) && offered.contains(&"web__lookup".to_string()), "{offered:?}");

    // The HTTP server's tool, and an error result the model sees as such.
    let (_, r) = agent.post("/v1/responses", &json!({"input": "look up berth"})).await;
    let output = r["output"].as_array().unwrap().iter().find(|i| i["type"] == "function_call_output").unwrap();
    assert_eq!(output["output"], "found: \"berth\"", "{r}");
    let (_, r) = agent.post("/v1/responses", &json!({"input": "break it"})).await;
    let output = r["output"].as_array().unwrap().iter().find(|i| i["type"] == "function_call_output").unwrap();
    assert_eq!(output["output"], "error: this tool always fails", "{r}");

    // A changed file is read again: the stdio server is gone, the broken one too.
    write_config(&dirs, json!({"web": {"url": format!("http://127.0.0.1:{port}/mcp"), "headers": {"X-Team": "blue"}}}));
    let (_, tools) = agent.get("/v1/tools").await;
    let names: Vec<&str> = tools["data"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(!names.contains(&"calc__add") && names.contains(&"web__lookup"), "{names:?}");
    assert_eq!(tools["mcp_errors"], json!([]));
}
