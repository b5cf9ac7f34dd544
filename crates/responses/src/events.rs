//! Server-Sent Events of a streamed response, named and shaped as the
//! Responses API streams them. The emitter adds `type` and `sequence_number`.

use super::items::Item;
use super::response::Response;
use serde_json::{json, Value};

/// One stream event before numbering: its `type` and its other fields.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub data: Value,
}

fn ev(kind: &'static str, data: Value) -> Event {
    Event { kind, data }
}

/// `response.created`, `response.in_progress`, `response.completed`,
/// `response.failed` or `response.incomplete`, carrying the whole response.
pub fn lifecycle(kind: &'static str, r: &Response) -> Event {
    ev(kind, json!({ "response": r }))
}

pub fn item_added(output_index: usize, item: &Item) -> Event {
    ev("response.output_item.added", json!({"output_index": output_index, "item": item}))
}

pub fn item_done(output_index: usize, item: &Item) -> Event {
    ev("response.output_item.done", json!({"output_index": output_index, "item": item}))
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

pub fn content_part_added(item_id: &str, output_index: usize) -> Event {
    ev(
        "response.content_part.added",
        json!({"item_id": item_id, "output_index": output_index, "content_index": 0,
               "part": text_part("")}),
    )
}

pub fn content_part_done(item_id: &str, output_index: usize, text: &str) -> Event {
    ev(
        "response.content_part.done",
        json!({"item_id": item_id, "output_index": output_index, "content_index": 0,
               "part": text_part(text)}),
    )
}

pub fn text_delta(item_id: &str, output_index: usize, delta: &str) -> Event {
    ev(
        "response.output_text.delta",
        json!({"item_id": item_id, "output_index": output_index, "content_index": 0,
               "delta": delta, "logprobs": []}),
    )
}

pub fn text_done(item_id: &str, output_index: usize, text: &str) -> Event {
    ev(
        "response.output_text.done",
        json!({"item_id": item_id, "output_index": output_index, "content_index": 0,
               "text": text, "logprobs": []}),
    )
}

/// Reasoning text as it comes, named as the Open Responses specification names it
/// (`response.reasoning.delta`; OpenAI's own API says `response.reasoning_text.delta`,
/// which the spec's validators refuse; the OpenAI SDKs pass either through).
pub fn reasoning_delta(item_id: &str, output_index: usize, delta: &str) -> Event {
    ev(
        "response.reasoning.delta",
        json!({"item_id": item_id, "output_index": output_index, "content_index": 0,
               "delta": delta}),
    )
}

pub fn reasoning_done(item_id: &str, output_index: usize, text: &str) -> Event {
    ev(
        "response.reasoning.done",
        json!({"item_id": item_id, "output_index": output_index, "content_index": 0,
               "text": text}),
    )
}

pub fn arguments_delta(item_id: &str, output_index: usize, delta: &str) -> Event {
    ev(
        "response.function_call_arguments.delta",
        json!({"item_id": item_id, "output_index": output_index, "delta": delta}),
    )
}

pub fn arguments_done(item_id: &str, output_index: usize, name: &str, arguments: &str) -> Event {
    ev(
        "response.function_call_arguments.done",
        json!({"item_id": item_id, "output_index": output_index, "name": name,
               "arguments": arguments}),
    )
}

/// A stream-level `error` event (the turn could not go on at all).
pub fn error(code: &str, message: &str) -> Event {
    ev("error", json!({"error": {"type": "server_error", "code": code, "message": message, "param": null}}))
}

impl Event {
    /// The JSON payload of the SSE `data:` line.
    pub fn into_json(self, sequence_number: u64) -> Value {
        let mut data = self.data;
        if let Value::Object(map) = &mut data {
            map.insert("type".into(), self.kind.into());
            map.insert("sequence_number".into(), sequence_number.into());
        }
        data
    }
}
