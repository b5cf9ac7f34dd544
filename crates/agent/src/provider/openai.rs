//! OpenAI-compatible chat completions: request body and stream decoding.

use super::{ChatRequest, ProviderError, ProviderEvent};
use crate::api::{ContentPart, Item, Role};
use berth_sse::Event as SseEvent;
use serde_json::{json, Map, Value};
use std::collections::{HashSet, VecDeque};

/// The `/chat/completions` body for a normalized history.
pub fn body(req: &ChatRequest<'_>, history: &[Item]) -> Value {
    let mut messages = Vec::with_capacity(history.len() + 1);
    if !req.system.is_empty() {
        messages.push(json!({"role": "system", "content": req.system}));
    }
    for item in history {
        match item {
            Item::Message(m) => {
                let role = match m.role {
                    Role::User => "user",
                    Role::Assistant => "assistant",
                    Role::System | Role::Developer => "system",
                };
                let images = m.content.iter().any(|p| matches!(p, ContentPart::InputImage { .. }));
                let content = if images && m.role == Role::User {
                    // Text and images in order, as the vision models take them.
                    m.content
                        .iter()
                        .map(|p| match p {
                            ContentPart::InputImage { image_url, detail } => {
                                json!({"type": "image_url", "image_url": {"url": image_url, "detail": detail}})
                            }
                            p => json!({"type": "text", "text": p.text()}),
                        })
                        .collect::<Vec<_>>()
                        .into()
                } else {
                    Value::from(m.text())
                };
                messages.push(json!({"role": role, "content": content}));
            }
            Item::FunctionCall(c) => {
                let call = json!({"id": c.call_id, "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments}});
                // Calls join the assistant message just before them, if any.
                match messages.last_mut() {
                    Some(Value::Object(last)) if last["role"] == "assistant" => {
                        let calls = last.entry("tool_calls").or_insert_with(|| json!([]));
                        if let Value::Array(a) = calls {
                            a.push(call);
                        }
                    }
                    _ => messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            Item::FunctionCallOutput(o) => {
                messages.push(json!({"role": "tool", "tool_call_id": o.call_id, "content": o.output}))
            }
            // Compaction items reach here as messages (`history::normalize`).
            Item::Reasoning(_) | Item::Compaction(_) => {}
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), req.model.into());
    body.insert("messages".into(), messages.into());
    body.insert("stream".into(), true.into());
    body.insert("stream_options".into(), json!({"include_usage": true}));
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.parameters}})
            })
            .collect();
        body.insert("tools".into(), tools.into());
    }
    let o = &req.options;
    for (key, value) in [
        ("temperature", o.temperature),
        ("top_p", o.top_p),
        ("presence_penalty", o.presence_penalty),
        ("frequency_penalty", o.frequency_penalty),
    ] {
        if let Some(v) = value {
            body.insert(key.into(), v.into());
        }
    }
    if let Some(m) = o.max_output_tokens {
        body.insert("max_tokens".into(), m.into());
    }
    match o.format.as_ref().and_then(|f| f.get("type")).and_then(Value::as_str) {
        Some("json_object") => {
            body.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some("json_schema") => {
            let f = o.format.as_ref().unwrap_or(&Value::Null);
            let mut schema = json!({"name": f["name"], "schema": f["schema"]});
            for key in ["description", "strict"] {
                if let Some(v) = f.get(key).filter(|v| !v.is_null()) {
                    schema[key] = v.clone();
                }
            }
            body.insert("response_format".into(), json!({"type": "json_schema", "json_schema": schema}));
        }
        _ => {}
    }
    Value::Object(body)
}

/// Decoder state of one chat-completions stream.
#[derive(Debug, Default)]
pub struct Decoder {
    started: HashSet<usize>,
    /// `data: [DONE]` was seen.
    pub done: bool,
    /// A choice carried a `finish_reason` (some servers never send `[DONE]`).
    pub saw_finish: bool,
}

impl Decoder {
    pub fn decode(&mut self, ev: &SseEvent, out: &mut VecDeque<ProviderEvent>) -> Result<(), ProviderError> {
        let data = ev.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let v: Value = serde_json::from_str(data).map_err(|e| {
            let head: String = data.chars().take(120).collect();
            ProviderError::Malformed(format!("chunk is not JSON ({e}): {head}"))
        })?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let msg = err["message"].as_str().map(str::to_string);
            return Err(ProviderError::Upstream(msg.unwrap_or_else(|| err.to_string())));
        }
        if let Some(choice) = v["choices"].get(0) {
            let delta = &choice["delta"];
            for key in ["reasoning_content", "reasoning"] {
                if let Some(r) = delta[key].as_str().filter(|r| !r.is_empty()) {
                    out.push_back(ProviderEvent::Reasoning(r.into()));
                }
            }
            if let Some(t) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                out.push_back(ProviderEvent::Text(t.into()));
            }
            if let Some(calls) = delta["tool_calls"].as_array() {
                for (pos, call) in calls.iter().enumerate() {
                    self.tool_call(pos, call, out);
                }
            }
            if choice["finish_reason"].is_string() {
                self.saw_finish = true;
            }
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            out.push_back(ProviderEvent::Usage {
                input: u["prompt_tokens"].as_u64().unwrap_or(0),
                output: u["completion_tokens"].as_u64().unwrap_or(0),
            });
        }
        Ok(())
    }

    fn tool_call(&mut self, pos: usize, call: &Value, out: &mut VecDeque<ProviderEvent>) {
        let index = call["index"].as_u64().map(|i| i as usize).unwrap_or(pos);
        if self.started.insert(index) {
            let call_id = call["id"].as_str().map(str::to_string).unwrap_or_else(|| crate::ids::new_id("call"));
            let name = call["function"]["name"].as_str().unwrap_or("").to_string();
            out.push_back(ProviderEvent::ToolCallStart { index, call_id, name });
        }
        if let Some(args) = call["function"]["arguments"].as_str().filter(|a| !a.is_empty()) {
            out.push_back(ProviderEvent::ToolCallArgs { index, delta: args.into() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut Decoder, data: &str) -> Vec<ProviderEvent> {
        let mut out = VecDeque::new();
        let ev = SseEvent { data: data.into(), has_data: true, ..Default::default() };
        d.decode(&ev, &mut out).unwrap();
        out.into()
    }

    #[test]
    fn text_tool_calls_usage_and_done() {
        let mut d = Decoder::default();
        assert_eq!(feed(&mut d, r#"{"choices":[{"delta":{"content":"Hi"}}]}"#), vec![ProviderEvent::Text("Hi".into())]);
        let ev = feed(
            &mut d,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"shell","arguments":"{\"a"}}]}}]}"#,
        );
        assert_eq!(ev.len(), 2);
        let ev = feed(
            &mut d,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\":1}"}}]},"finish_reason":"tool_calls"}]}"#,
        );
        assert_eq!(ev, vec![ProviderEvent::ToolCallArgs { index: 0, delta: "\":1}".into() }]);
        assert!(d.saw_finish && !d.done);
        feed(&mut d, "[DONE]");
        assert!(d.done);
    }

    #[test]
    fn garbage_and_error_chunks_fail() {
        let mut d = Decoder::default();
        let mut out = VecDeque::new();
        let bad = SseEvent { data: "{nope".into(), has_data: true, ..Default::default() };
        assert!(matches!(d.decode(&bad, &mut out), Err(ProviderError::Malformed(_))));
        let err = SseEvent { data: r#"{"error":{"message":"boom"}}"#.into(), has_data: true, ..Default::default() };
        assert!(matches!(d.decode(&err, &mut out), Err(ProviderError::Upstream(m)) if m == "boom"));
    }
}
