//! Anthropic Messages: request body and stream decoding.

use super::{ChatRequest, ProviderError, ProviderEvent};
use crate::api::{ContentPart, Item, Role};
use berth_sse::Event as SseEvent;
use serde_json::{json, Map, Value};
use std::collections::VecDeque;

/// `max_tokens` is required by the Messages API; used when the request sets none.
const DEFAULT_MAX_TOKENS: u32 = 8192;

/// `{base}/v1/{path}`, whether or not the base already ends in `/v1`.
pub fn endpoint(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1") {
        format!("{base}/{path}")
    } else {
        format!("{base}/v1/{path}")
    }
}

/// Adds the Anthropic auth and version headers.
pub fn headers(b: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::RequestBuilder {
    let b = b.header("anthropic-version", "2023-06-01");
    match key {
        Some(k) => b.header("x-api-key", k),
        None => b,
    }
}

/// An image block: a base64 source from a `data:` URL, else a URL source.
fn image_block(url: &str) -> Value {
    if let Some((meta, data)) = url.strip_prefix("data:").and_then(|rest| rest.split_once(";base64,")) {
        return json!({"type": "image", "source": {"type": "base64", "media_type": meta, "data": data}});
    }
    json!({"type": "image", "source": {"type": "url", "url": url}})
}

/// The `/v1/messages` body for a normalized history.
pub fn body(req: &ChatRequest<'_>, history: &[Item]) -> Value {
    let mut system = req.system.to_string();
    let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut push = |role: &'static str, block: Value| match messages.last_mut() {
        // The API wants user and assistant turns to alternate: merge neighbours.
        Some((r, blocks)) if *r == role => blocks.push(block),
        _ => messages.push((role, vec![block])),
    };
    for item in history {
        match item {
            Item::Message(m) => {
                let text = m.text();
                match m.role {
                    Role::System | Role::Developer => {
                        system.push_str("\n\n");
                        system.push_str(&text);
                    }
                    Role::User if m.content.iter().any(|p| matches!(p, ContentPart::InputImage { .. })) => {
                        for p in &m.content {
                            match p {
                                ContentPart::InputImage { image_url, .. } => {
                                    push("user", image_block(image_url.as_deref().unwrap_or_default()))
                                }
                                p if p.text().is_empty() => {}
                                p => push("user", json!({"type": "text", "text": p.text()})),
                            }
                        }
                    }
                    _ if text.is_empty() => {}
                    Role::User => push("user", json!({"type": "text", "text": text})),
                    Role::Assistant => push("assistant", json!({"type": "text", "text": text})),
                }
            }
            Item::FunctionCall(c) => {
                let input: Value =
                    serde_json::from_str(&c.arguments).ok().filter(Value::is_object).unwrap_or_else(|| json!({}));
                push("assistant", json!({"type": "tool_use", "id": c.call_id, "name": c.name, "input": input}));
            }
            Item::FunctionCallOutput(o) => {
                push("user", json!({"type": "tool_result", "tool_use_id": o.call_id, "content": o.output}))
            }
            // Compaction items reach here as messages (`history::normalize`).
            Item::Reasoning(_) | Item::Compaction(_) => {}
        }
    }
    let messages: Vec<Value> =
        messages.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
    let mut body = Map::new();
    body.insert("model".into(), req.model.into());
    body.insert("max_tokens".into(), req.options.max_output_tokens.unwrap_or(DEFAULT_MAX_TOKENS).into());
    if !system.trim().is_empty() {
        body.insert("system".into(), system.trim().into());
    }
    body.insert("messages".into(), messages.into());
    body.insert("stream".into(), true.into());
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
            .collect();
        body.insert("tools".into(), tools.into());
    }
    if let Some(t) = req.options.temperature {
        body.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.options.top_p {
        body.insert("top_p".into(), p.into());
    }
    Value::Object(body)
}

/// Decoder state of one Messages stream.
#[derive(Debug, Default)]
pub struct Decoder {
    /// `message_stop` was seen.
    pub done: bool,
}

impl Decoder {
    pub fn decode(&mut self, ev: &SseEvent, out: &mut VecDeque<ProviderEvent>) -> Result<(), ProviderError> {
        if ev.data.trim().is_empty() {
            return Ok(());
        }
        let v: Value = serde_json::from_str(&ev.data).map_err(|e| {
            let head: String = ev.data.chars().take(120).collect();
            ProviderError::Malformed(format!("event is not JSON ({e}): {head}"))
        })?;
        let index = v["index"].as_u64().unwrap_or(0) as usize;
        match v["type"].as_str().unwrap_or(&ev.event) {
            "message_start" => {
                let u = &v["message"]["usage"];
                let input = u["input_tokens"].as_u64().unwrap_or(0)
                    + u["cache_read_input_tokens"].as_u64().unwrap_or(0)
                    + u["cache_creation_input_tokens"].as_u64().unwrap_or(0);
                out.push_back(ProviderEvent::Usage { input, output: 0 });
            }
            "content_block_start" => {
                let block = &v["content_block"];
                match block["type"].as_str() {
                    Some("tool_use") => out.push_back(ProviderEvent::ToolCallStart {
                        index,
                        call_id: block["id"].as_str().unwrap_or_default().into(),
                        name: block["name"].as_str().unwrap_or_default().into(),
                    }),
                    Some("text") => text(out, block["text"].as_str()),
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => text(out, d["text"].as_str()),
                    Some("thinking_delta") => {
                        if let Some(t) = d["thinking"].as_str().filter(|t| !t.is_empty()) {
                            out.push_back(ProviderEvent::Reasoning(t.into()));
                        }
                    }
                    Some("input_json_delta") => {
                        if let Some(j) = d["partial_json"].as_str().filter(|j| !j.is_empty()) {
                            out.push_back(ProviderEvent::ToolCallArgs { index, delta: j.into() });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(o) = v["usage"]["output_tokens"].as_u64() {
                    out.push_back(ProviderEvent::Usage { input: 0, output: o });
                }
            }
            "message_stop" => self.done = true,
            "error" => {
                let e = &v["error"];
                let msg = format!(
                    "{} ({})",
                    e["message"].as_str().unwrap_or("unknown error"),
                    e["type"].as_str().unwrap_or("error")
                );
                return Err(ProviderError::Upstream(msg));
            }
            _ => {} // ping, content_block_stop, and future event types
        }
        Ok(())
    }
}

fn text(out: &mut VecDeque<ProviderEvent>, t: Option<&str>) {
    if let Some(t) = t.filter(|t| !t.is_empty()) {
        out.push_back(ProviderEvent::Text(t.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FunctionCallItem, FunctionCallOutputItem, MessageItem};

    #[test]
    fn tool_use_and_results_alternate_roles() {
        let history = vec![
            Item::Message(MessageItem {
                id: "m".into(),
                role: Role::User,
                content: vec![crate::api::ContentPart::InputText { text: "hi".into() }],
                status: "completed".into(),
            }),
            Item::FunctionCall(FunctionCallItem {
                id: "f".into(),
                call_id: "toolu_1".into(),
                name: "shell".into(),
                arguments: r#"{"command":"ls"}"#.into(),
                status: "completed".into(),
            }),
            Item::FunctionCallOutput(FunctionCallOutputItem {
                id: "o".into(),
                call_id: "toolu_1".into(),
                output: "a b".into(),
                status: "completed".into(),
            }),
        ];
        let req = ChatRequest {
            model: "claude-x",
            system: "sys",
            history: &history,
            tools: &[],
            options: Default::default(),
        };
        let b = body(&req, &history);
        let roles: Vec<&str> = b["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        assert_eq!(b["messages"][1]["content"][0]["input"]["command"], "ls");
        assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
    }
}
