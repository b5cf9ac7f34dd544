//! `berth chat ID "message"`: one turn with an instance's agent, through the edge to
//! the instance's `POST /v1/responses`; the reply streamed to stdout as it is written,
//! tool activity on stderr, and the session id to continue with at the end.

use crate::client::{Client, ClientArgs};
use crate::output;
use crate::progress::spin;
use crate::sse::SseStream;
use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// Longest tool call or tool output line shown on stderr, in characters.
const TOOL_LINE_MAX: usize = 160;

/// `berth chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Instance id (`inst_...`).
    pub id: String,
    /// What to say to the agent.
    pub message: String,
    /// Continue this session (the `session: ...` an earlier chat printed); default: a new one.
    #[arg(long, value_name = "SESSION_ID")]
    pub session: Option<String>,
    /// The model for this turn (default: the instance's).
    #[arg(long, value_name = "M")]
    pub model: Option<String>,
    /// Instructions (system prompt) for this turn.
    #[arg(long, value_name = "TEXT")]
    pub instructions: Option<String>,
    // Last: its help heading would otherwise also title the flags declared after it.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The body of `POST /v1/responses`.
#[derive(Debug, Serialize)]
struct ResponseRequest<'a> {
    input: &'a str,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<&'a str>,
}

/// Run `berth chat`; answers the exit code (1 when the turn failed).
pub async fn run(args: ChatArgs) -> anyhow::Result<i32> {
    let hosting = Client::new(&args.client)?;
    let json = args.client.json;
    let inst = hosting.get(&format!("/instances/{}", args.id), &[]).await?;
    let Some(url) = inst.get("url").and_then(Value::as_str).filter(|u| !u.is_empty()) else {
        let status = inst.get("status").and_then(Value::as_str).unwrap_or("unknown");
        bail!("instance {} has no URL (status: {status})", args.id);
    };
    let client = Client::instance(url, hosting.key())?;
    let body = ResponseRequest {
        input: &args.message,
        stream: !json,
        session_id: args.session.as_deref(),
        model: args.model.as_deref(),
        instructions: args.instructions.as_deref(),
    };
    if json {
        let answer = spin(format!("waiting for {}", args.id), client.post("/responses", Some(&body))).await?;
        output::json(&answer)?;
        // Only the status is read: agents other than berth-agent may leave fields out.
        let status = answer.get("status").and_then(|s| serde_json::from_value(s.clone()).ok());
        return Ok(if status == Some(berth_responses::Status::Failed) { 1 } else { 0 });
    }
    // Opening can be slow: the edge wakes a stopped `cold_start` instance first.
    let resp = spin(format!("connecting to {}", args.id), client.post_stream("/responses", &body)).await?;
    let mut events = SseStream::new(&client, resp);
    let mut chat = Chat::default();
    while let Some(ev) = events.next().await? {
        if ev.data == "[DONE]" {
            break;
        }
        let data: Value = serde_json::from_str(&ev.data).with_context(|| format!("unexpected `{}` event", ev.event))?;
        // Named by the `event:` line, or else by the payload's `type`.
        let kind = match ev.event.as_str() {
            "message" => data.get("type").and_then(Value::as_str).unwrap_or_default(),
            name => name,
        };
        if let Some(code) = chat.event(kind, &data)? {
            return Ok(code);
        }
    }
    chat.end_line();
    bail!("the instance closed the stream before the reply was complete")
}

/// What one streamed turn has shown so far.
#[derive(Debug)]
struct Chat {
    /// Tool names by the id of their `function_call` item.
    calls: HashMap<String, String>,
    /// Items already shown on stderr (a call is announced by two events).
    shown: HashSet<String>,
    /// Whether the reply on stdout ends with a newline (or is empty).
    at_line_start: bool,
}

impl Default for Chat {
    fn default() -> Self {
        Self { calls: HashMap::new(), shown: HashSet::new(), at_line_start: true }
    }
}

impl Chat {
    /// Show one event; answers the exit code once the turn has ended.
    fn event(&mut self, kind: &str, data: &Value) -> anyhow::Result<Option<i32>> {
        let str_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        match kind {
            "response.output_text.delta" => {
                let delta = str_of(data, "delta");
                if !delta.is_empty() {
                    output::stdout(delta.as_bytes());
                    self.at_line_start = delta.ends_with('\n');
                }
            }
            "response.output_item.added" | "response.output_item.done" => {
                let item = data.get("item").unwrap_or(&Value::Null);
                let done = kind.ends_with("done") || str_of(item, "status") == "completed";
                match item.get("type").and_then(Value::as_str) {
                    Some("function_call") => {
                        let id = str_of(item, "id");
                        self.calls.insert(id.clone(), str_of(item, "name"));
                        if done {
                            self.show_call(&id, &str_of(item, "name"), &str_of(item, "arguments"));
                        }
                    }
                    Some("function_call_output") if done => {
                        self.show_output(&str_of(item, "id"), &str_of(item, "output"));
                    }
                    _ => {}
                }
            }
            "response.function_call_arguments.done" => {
                let id = str_of(data, "item_id");
                let name =
                    self.calls.get(&id).cloned().filter(|n| !n.is_empty()).unwrap_or_else(|| str_of(data, "name"));
                self.show_call(&id, &name, &str_of(data, "arguments"));
            }
            "response.completed" | "response.incomplete" => {
                self.end_line();
                let response = data.get("response").unwrap_or(&Value::Null);
                if kind == "response.incomplete" {
                    let reason = response.pointer("/incomplete_details/reason").and_then(Value::as_str);
                    eprintln!("berth: the reply stopped early ({})", reason.unwrap_or("incomplete"));
                }
                eprintln!("session: {}", str_of(response, "session_id"));
                return Ok(Some(0));
            }
            "response.failed" => {
                self.end_line();
                let error = data.pointer("/response/error").unwrap_or(&Value::Null);
                bail!("{}", describe(error, "the response failed"));
            }
            "error" => {
                self.end_line();
                // The Responses API puts the fields at the top; some servers nest them.
                bail!("{}", describe(data.get("error").filter(|e| e.is_object()).unwrap_or(data), "the stream failed"));
            }
            _ => {}
        }
        Ok(None)
    }

    /// `[tool] name(arguments)`, once per call.
    fn show_call(&mut self, id: &str, name: &str, arguments: &str) {
        if id.is_empty() || self.shown.insert(id.to_string()) {
            let name = if name.is_empty() { "tool" } else { name };
            self.tool_line(&format!("[tool] {name}({})", short(arguments.trim(), TOOL_LINE_MAX)));
        }
    }

    /// The first line of a tool's output, once per output.
    fn show_output(&mut self, id: &str, output: &str) {
        if id.is_empty() || self.shown.insert(id.to_string()) {
            self.tool_line(&format!("  → {}", summary(output)));
        }
    }

    /// A line on stderr, after ending the reply's line so the two do not run together.
    fn tool_line(&mut self, line: &str) {
        self.end_line();
        output::stderr(format!("{line}\n").as_bytes());
    }

    /// End the reply on stdout with a newline, unless it already ends with one.
    fn end_line(&mut self) {
        if !self.at_line_start {
            output::stdout(b"\n");
            self.at_line_start = true;
        }
    }
}

/// `<message> (<code>)` of an error object, `fallback` when it has no message.
fn describe(error: &Value, fallback: &str) -> String {
    let message = error.get("message").and_then(Value::as_str).unwrap_or(fallback);
    match error.get("code").and_then(Value::as_str) {
        Some(code) if !code.is_empty() => format!("{message} ({code})"),
        _ => message.to_string(),
    }
}

/// The first non-blank line of a tool's output, shortened, with `…` when there is more.
fn summary(output: &str) -> String {
    let mut lines = output.lines().map(str::trim_end).filter(|l| !l.trim().is_empty());
    let Some(first) = lines.next() else { return "(no output)".into() };
    let line = short(first, TOOL_LINE_MAX);
    if lines.next().is_some() && !line.ends_with('…') {
        format!("{line} …")
    } else {
        line
    }
}

/// `text` cut to `max` characters, `…` marking the cut.
fn short(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_output_shows_its_first_line_shortened() {
        assert_eq!(summary(""), "(no output)");
        assert_eq!(summary("\n  \nfile1\nfile2\n"), "file1 …");
        assert_eq!(summary("only\n"), "only");
        assert_eq!(short("héllo", 2), "hé…");
        assert_eq!(short("héllo", 5), "héllo");
    }

    #[test]
    fn errors_read_as_message_and_code() {
        assert_eq!(describe(&json!({"message": "boom", "code": "model_error"}), "x"), "boom (model_error)");
        assert_eq!(describe(&json!({"message": "boom", "code": null}), "x"), "boom");
        assert_eq!(describe(&Value::Null, "the response failed"), "the response failed");
    }

    #[test]
    fn a_call_is_shown_once_and_failures_are_errors() {
        let mut chat = Chat::default();
        let item = json!({"type": "function_call", "id": "fc_1", "name": "shell", "arguments": ""});
        assert!(chat.event("response.output_item.added", &json!({"item": item})).unwrap().is_none());
        let args = json!({"item_id": "fc_1", "arguments": "{}"});
        chat.event("response.function_call_arguments.done", &args).unwrap();
        assert!(chat.shown.contains("fc_1"));
        let done = json!({"item": {"type": "function_call", "id": "fc_1", "name": "shell", "arguments": "{}"}});
        chat.event("response.output_item.done", &done).unwrap();
        assert_eq!(chat.shown.len(), 1);

        let completed = json!({"response": {"session_id": "sess_1"}});
        assert_eq!(chat.event("response.completed", &completed).unwrap(), Some(0));
        let failed = json!({"response": {"error": {"message": "boom", "code": "model_error"}}});
        let err = chat.event("response.failed", &failed).unwrap_err();
        assert_eq!(err.to_string(), "boom (model_error)");
    }
}
