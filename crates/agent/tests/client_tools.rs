//! Tools the client defines (`tools` of type `function`): offered to the model beside
//! the agent's own; a call to one ends the turn with the `function_call` for the client,
//! whose `function_call_output` (with `previous_response_id`) continues it.

mod support;

use berth_test_util::llm::{last_role, text, tool_names, Reply, ScriptedLlm};
use serde_json::{json, Value};
use support::{Agent, Dirs};

fn weather_tool() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}})
}

#[tokio::test]
async fn a_call_to_a_client_tool_ends_the_turn_and_its_output_continues_it() {
    // First the model runs the agent's own shell and asks the client's tool in one step;
    // given the client's answer, it replies.
    let llm = ScriptedLlm::openai(|body| match last_role(body).as_str() {
        "user" => Reply::Tools(vec![
            ("shell".into(), json!({"command": "echo from-the-agent"})),
            ("get_weather".into(), json!({"city": "Paris"})),
        ]),
        _ => {
            let msgs = body["messages"].as_array().unwrap();
            let answered = msgs.iter().any(|m| m["role"] == "tool" && m["content"] == "sunny, 21 C");
            text(&[if answered { "It is sunny in Paris." } else { "still waiting" }])
        }
    })
    .await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;

    let (status, r1) =
        agent.post("/v1/responses", &json!({"input": "Weather in Paris?", "tools": [weather_tool()]})).await;
    assert_eq!(status, 200, "{r1}");
    assert_eq!(r1["status"], "completed");
    assert_eq!(r1["tools"][0]["name"], "get_weather", "the tools are echoed");
    let sent = &llm.requests()[0].body;
    let offered: Vec<&str> =
        sent["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert!(offered.contains(&"get_weather") && offered.contains(&"shell"), "{offered:?}");
    assert_eq!(sent["tools"][offered.len() - 1]["function"]["parameters"]["required"][0], "city");

    let output = r1["output"].as_array().unwrap();
    let call = output.iter().find(|i| i["type"] == "function_call" && i["name"] == "get_weather").expect("the call");
    assert_eq!(serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap(), json!({"city": "Paris"}));
    let answered: Vec<&Value> = output.iter().filter(|i| i["type"] == "function_call_output").collect();
    assert_eq!(answered.len(), 1, "only the agent's own tool ran: {output:?}");
    assert!(answered[0]["output"].as_str().unwrap().contains("from-the-agent"));
    assert_eq!(llm.requests().len(), 1, "the turn ended at the client's call");

    let (status, r2) = agent
        .post(
            "/v1/responses",
            &json!({"previous_response_id": r1["id"], "tools": [weather_tool()],
                    "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny, 21 C"}]}),
        )
        .await;
    assert_eq!(status, 200, "{r2}");
    assert_eq!(r2["status"], "completed");
    assert_eq!(r2["session_id"], r1["session_id"]);
    assert_eq!(r2["output"][0]["content"][0]["text"], "It is sunny in Paris.");
    let msgs = llm.requests()[1].body["messages"].clone();
    let tool_msgs: Vec<&Value> = msgs.as_array().unwrap().iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(tool_msgs.len(), 2, "both calls answered, no placeholder: {msgs}");
    assert!(tool_msgs.iter().any(|m| m["tool_call_id"] == call["call_id"] && m["content"] == "sunny, 21 C"));
}

#[tokio::test]
async fn bad_client_tools_are_refused_naming_what_is_wrong() {
    let llm = ScriptedLlm::openai(|_| text(&["hi"])).await;
    let dirs = Dirs::new();
    let agent = Agent::start(&dirs, &llm.base_url, &[]).await;
    for (tools, param) in [
        (json!([{"type": "function", "name": "shell"}]), "tools[0].name"),
        (json!([{"type": "function", "name": "has space"}]), "tools[0].name"),
        (json!([{"type": "function"}]), "tools[0].name"),
        (json!([weather_tool(), weather_tool()]), "tools[1].name"),
        (json!([{"type": "function", "name": "f", "parameters": "x"}]), "tools[0].parameters"),
        (json!([{"name": "f"}]), "tools[0].type"),
        (json!(["f"]), "tools[0]"),
    ] {
        let (status, e) = agent.post("/v1/responses", &json!({"input": "hi", "tools": tools})).await;
        assert_eq!(status, 400, "{tools} -> {e}");
        assert_eq!(e["error"]["param"], param, "{tools} -> {e}");
    }
    assert!(llm.requests().is_empty(), "nothing reached the model");
    // Chat Completions' nested shape is taken too; other tool types are not offered.
    let tools = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
                       {"type": "web_search_preview"}]);
    let (status, r) = agent.post("/v1/responses", &json!({"input": "hi", "tools": tools})).await;
    assert_eq!(status, 200, "{r}");
    let offered = tool_names(&llm.requests()[0].body);
    assert_eq!(offered.last().map(String::as_str), Some("lookup"));
    assert!(!offered.iter().any(|n| n.contains("web_search_preview")));
}
