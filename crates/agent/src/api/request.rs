//! `POST /v1/responses` request body and the parsing of its `input`.

use super::items::{ContentPart, FunctionCallOutputItem, Item, MessageItem, Role};
use crate::error::ApiError;
use crate::ids::new_id;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The request body. Fields of the OpenAI API that the agent does not use
/// (`tools`, `store`, `reasoning`, ...) are accepted and ignored.
#[derive(Debug, Default, Deserialize)]
pub struct CreateResponse {
    pub model: Option<String>,
    /// A string or a list of input items; validated by [`parse_input`].
    pub input: Option<Value>,
    pub instructions: Option<String>,
    pub previous_response_id: Option<String>,
    pub stream: Option<bool>,
    /// Answer at once and run the turn on its own, to be fetched, followed or cancelled.
    pub background: Option<bool>,
    pub metadata: Option<Map<String, Value>>,
    /// berth extension: continue this session.
    pub session_id: Option<String>,
    /// The conversation to continue: its id, or `{"id": ...}` (a session's id).
    pub conversation: Option<Value>,
    /// berth extension: `openai` (chat completions) or `anthropic`.
    pub provider: Option<String>,
    /// berth extension: which agent answers, `berth-agent` (the agent's own loop) or
    /// the agent the instance drives (`claude-code`, `codex`, `hermes`, `openclaw`); default the instance's.
    pub agent: Option<String>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_output_tokens: Option<u32>,
    /// Caps the tool calls of this turn (never above the agent's own step limit).
    pub max_tool_calls: Option<u32>,
    /// Tools the client runs itself (`type: "function"`), offered beside the agent's
    /// own; other types are accepted and not offered.
    pub tools: Option<Vec<Value>>,
    /// `auto`: drop the oldest items of a history that does not fit the model's window;
    /// `disabled` (default): such a turn fails with `context_length_exceeded`.
    pub truncation: Option<String>,
    /// `[{"type": "compaction", "compact_threshold": tokens}]`: compact at this size.
    pub context_management: Option<Vec<Value>>,
    /// Passed to chat-completions providers (Anthropic has none).
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", ...}}`: the answer's
    /// format, passed to chat-completions providers as `response_format`.
    pub text: Option<Value>,
    /// `none`: no tools are offered; `auto` (default), `required` and a named function
    /// are passed on.
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    // Echoed in the response, not acted on:
    pub top_logprobs: Option<u32>,
    pub reasoning: Option<Value>,
    /// false: the response is not kept for `GET` or `previous_response_id` (the session's
    /// history, the agent's own, still is).
    pub store: Option<bool>,
    pub service_tier: Option<String>,
    pub safety_identifier: Option<String>,
    pub prompt_cache_key: Option<String>,
}

/// Turns `input` into history items, with ids assigned.
pub fn parse_input(input: Option<Value>) -> Result<Vec<Item>, ApiError> {
    let input = match input {
        None | Some(Value::Null) => {
            return Err(ApiError::missing_param("input"));
        }
        Some(v) => v,
    };
    let items = match input {
        Value::String(text) => vec![user_text(text)],
        Value::Array(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, v)| parse_item(v, &format!("input[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(ApiError::invalid_param("input", "'input' must be a string or an array of input items.")),
    };
    if items.is_empty() {
        return Err(ApiError::invalid_param("input", "'input' must not be empty."));
    }
    Ok(items)
}

fn user_text(text: String) -> Item {
    Item::Message(MessageItem {
        id: new_id("msg"),
        role: Role::User,
        content: vec![ContentPart::InputText { text }],
        status: "completed".into(),
    })
}

fn parse_item(v: Value, param: &str) -> Result<Item, ApiError> {
    let Value::Object(mut obj) = v else {
        return Err(ApiError::invalid_param(param, format!("'{param}' must be an object.")));
    };
    let kind = obj.get("type").and_then(Value::as_str).unwrap_or("message");
    match kind {
        "message" => parse_message(&mut obj, param),
        "function_call_output" => {
            let call_id = string_field(&obj, "call_id", param)?;
            let output = match obj.remove("output") {
                Some(Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => return Err(ApiError::missing_param(&format!("{param}.output"))),
            };
            Ok(Item::FunctionCallOutput(FunctionCallOutputItem {
                id: new_id("fco"),
                call_id,
                output,
                status: "completed".into(),
            }))
        }
        "function_call" | "reasoning" | "compaction" => {
            obj.entry("id").or_insert_with(|| new_id("item").into());
            serde_json::from_value(Value::Object(obj))
                .map_err(|e| ApiError::invalid_param(param, format!("Invalid '{param}': {e}.")))
        }
        other => {
            Err(ApiError::invalid_param(&format!("{param}.type"), format!("Unsupported input item type '{other}'.")))
        }
    }
}

fn parse_message(obj: &mut Map<String, Value>, param: &str) -> Result<Item, ApiError> {
    let role: Role = match obj.get("role") {
        None => return Err(ApiError::missing_param(&format!("{param}.role"))),
        Some(r) => serde_json::from_value(r.clone()).map_err(|_| {
            ApiError::invalid_param(
                &format!("{param}.role"),
                format!("Invalid '{param}.role': expected 'user', 'assistant', 'system' or 'developer'."),
            )
        })?,
    };
    let content = match obj.remove("content") {
        Some(Value::String(text)) => vec![text_part(role, text)],
        Some(Value::Array(parts)) => parts
            .into_iter()
            .enumerate()
            .map(|(j, p)| parse_part(p, role, &format!("{param}.content[{j}]")))
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::invalid_param(
                &format!("{param}.content"),
                format!("'{param}.content' must be a string or an array of content parts."),
            ))
        }
    };
    Ok(Item::Message(MessageItem { id: new_id("msg"), role, content, status: "completed".into() }))
}

fn parse_part(p: Value, role: Role, param: &str) -> Result<ContentPart, ApiError> {
    let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "input_image" if role == Role::User => return parse_image(&p, param),
        "input_file" if role == Role::User => return parse_file(&p, param),
        "input_image" | "input_file" => {
            return Err(ApiError::invalid_param(
                &format!("{param}.type"),
                format!("'{kind}' is taken in user messages only."),
            ))
        }
        _ => {}
    }
    match (kind, p.get("text").and_then(Value::as_str)) {
        ("input_text" | "output_text" | "text", Some(text)) => Ok(text_part(role, text.into())),
        ("input_text" | "output_text" | "text", None) => Err(ApiError::missing_param(&format!("{param}.text"))),
        _ => Err(ApiError::invalid_param(
            &format!("{param}.type"),
            format!("Unsupported content part type '{kind}': use input_text, input_image or input_file."),
        )),
    }
}

/// `{"type": "input_image", "image_url": "https://..." | "data:image/png;base64,...", "detail"}`.
fn parse_image(p: &Value, param: &str) -> Result<ContentPart, ApiError> {
    if p.get("file_id").is_some_and(|f| !f.is_null()) && p.get("image_url").is_none_or(Value::is_null) {
        return Err(ApiError::invalid_param(
            &format!("{param}.file_id"),
            "This agent keeps no uploaded files: send the image as 'image_url' (an https: or a base64 data: URL).",
        ));
    }
    let url = match p.get("image_url") {
        Some(Value::String(u)) => u.clone(),
        // The Chat Completions shape, `{"image_url": {"url": ...}}`.
        Some(Value::Object(o)) if o.get("url").is_some_and(Value::is_string) => o["url"].as_str().unwrap_or("").into(),
        None | Some(Value::Null) => return Err(ApiError::missing_param(&format!("{param}.image_url"))),
        Some(_) => {
            return Err(ApiError::invalid_param(
                &format!("{param}.image_url"),
                format!("'{param}.image_url' must be a string."),
            ))
        }
    };
    let ok = url.starts_with("https://")
        || url.starts_with("http://")
        || (url.starts_with("data:image/") && url.contains(";base64,"));
    if !ok {
        return Err(ApiError::invalid_param(
            &format!("{param}.image_url"),
            format!("'{param}.image_url' must be an http(s) URL or a data:image/...;base64, URL."),
        ));
    }
    let detail = match p.get("detail") {
        None | Some(Value::Null) => "auto".to_string(),
        Some(Value::String(d)) if matches!(d.as_str(), "low" | "high" | "auto") => d.clone(),
        Some(_) => {
            return Err(ApiError::invalid_param(
                &format!("{param}.detail"),
                format!("'{param}.detail' is low, high or auto."),
            ))
        }
    };
    Ok(ContentPart::InputImage { image_url: Some(url), detail })
}

/// `{"type": "input_file", "filename", "file_data": base64 or a data: URL}`: a text
/// file, given to the model as text under its name.
fn parse_file(p: &Value, param: &str) -> Result<ContentPart, ApiError> {
    use base64::Engine as _;
    let name = p.get("filename").and_then(Value::as_str).unwrap_or("file");
    let data = match p.get("file_data") {
        Some(Value::String(d)) => d.as_str(),
        Some(v) if !v.is_null() => {
            return Err(ApiError::invalid_param(
                &format!("{param}.file_data"),
                format!("'{param}.file_data' must be a string."),
            ))
        }
        _ => {
            let what = if p.get("file_url").is_some_and(|u| !u.is_null()) { "file_url" } else { "file_data" };
            return Err(ApiError::invalid_param(
                &format!("{param}.{what}"),
                format!("'{param}' needs the file's content in 'file_data' (base64, or a base64 data: URL): this agent keeps no uploaded files and fetches none."),
            ));
        }
    };
    let b64 = match data.strip_prefix("data:") {
        Some(rest) => rest.split_once(";base64,").map_or(rest, |(_, b)| b),
        None => data,
    };
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|e| {
        ApiError::invalid_param(&format!("{param}.file_data"), format!("'{param}.file_data' is not base64: {e}."))
    })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        ApiError::invalid_param(
            &format!("{param}.file_data"),
            format!("'{name}' is not a text file: this agent reads text (UTF-8) files; send images as input_image, or put the file in the instance and ask the agent to work on it."),
        )
    })?;
    Ok(ContentPart::InputText { text: format!("[File: {name}]\n{text}") })
}

fn text_part(role: Role, text: String) -> ContentPart {
    match role {
        Role::Assistant => ContentPart::output_text(text),
        _ => ContentPart::InputText { text },
    }
}

fn string_field(obj: &Map<String, Value>, key: &str, param: &str) -> Result<String, ApiError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => {
            Err(ApiError::invalid_param(&format!("{param}.{key}"), format!("'{param}.{key}' must be a string.")))
        }
        None => Err(ApiError::missing_param(&format!("{param}.{key}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_and_list_inputs_become_messages() {
        let items = parse_input(Some(json!("hi"))).unwrap();
        assert!(matches!(&items[0], Item::Message(m) if m.role == Role::User && m.text() == "hi"));
        let items = parse_input(Some(json!([
            {"role": "developer", "content": "be brief"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "yo"}]}
        ])))
        .unwrap();
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn bad_inputs_name_the_parameter() {
        assert_eq!(parse_input(None).unwrap_err().param.as_deref(), Some("input"));
        let e = parse_input(Some(json!(5))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input"));
        let e = parse_input(Some(json!([{"role": "wizard", "content": "x"}]))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input[0].role"));
    }
}
