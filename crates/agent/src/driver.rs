//! Other agents behind the same Responses API: berth-agent runs the agent's own
//! non-interactive CLI once per turn and translates what it streams.
//!
//! Claude Code (`claude -p PROMPT --output-format stream-json --verbose
//! --include-partial-messages [--resume ID]`) prints one JSON object per line: a
//! `system`/`init` line naming its session, `stream_event` lines relaying the
//! Anthropic Messages stream of each model call (decoded like the agent's own
//! Anthropic provider, so text arrives as deltas and tool calls as calls), `user`
//! lines carrying the results of the tools it ran, and a last `result` line. The
//! agent's session id is kept with the berth session (`Store::set_external_session`),
//! so the next turn resumes it. Its model traffic goes where the agent's own does:
//! `ANTHROPIC_BASE_URL` and `ANTHROPIC_API_KEY` come from the agent's Anthropic settings.
//!
//! OpenClaw is kept running as its own Gateway and asked per turn (`crate::openclaw`).

use crate::provider::{AnthropicEvents, EventSource, ProviderError, ProviderEvent};
use crate::tools::ToolUser;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// An agent berth-agent drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    /// Claude Code, its `claude` executable.
    ClaudeCode { bin: PathBuf },
    /// OpenAI's Codex CLI, its `codex` executable (`codex exec --json`).
    Codex { bin: PathBuf },
    /// Nous Research's Hermes Agent, its `hermes` executable, spoken to in ACP
    /// (`hermes acp`: JSON-RPC on stdio).
    Hermes { bin: PathBuf },
    /// OpenClaw, its `openclaw` executable: its Gateway, asked per turn, its model
    /// calls through a relay.
    OpenClaw { bin: PathBuf },
}

/// What a driven turn needs from the agent's settings.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    pub prompt: &'a str,
    pub model: &'a str,
    /// The agent's own session to resume, from an earlier turn.
    pub resume: Option<&'a str>,
    pub workdir: &'a Path,
    pub user: Option<ToolUser>,
    pub base_url: &'a str,
    pub api_key: Option<&'a str>,
    pub instructions: Option<&'a str>,
    /// The client the model relay forwards with (OpenClaw).
    pub http: reqwest::Client,
}

/// What a driven agent reports, in order.
#[derive(Debug)]
pub enum DriverEvent {
    /// The agent's own session id.
    Session(String),
    /// Part of a model answer.
    Model(ProviderEvent),
    /// A model answer is complete.
    ModelEnd,
    /// A tool the agent ran returned.
    ToolResult { call_id: String, output: String },
    /// The turn is over: `Err` says why it failed.
    Done(Result<(), String>),
}

impl Driver {
    /// The driver named by `BERTH_AGENT_DRIVER` (`claude-code`), with its executable
    /// (`BERTH_AGENT_DRIVER_BIN`, default `claude` on the PATH).
    pub fn from_env(name: &str, bin: Option<String>) -> Result<Self, String> {
        match name.trim() {
            "claude-code" | "claude" => Ok(Driver::ClaudeCode { bin: bin.unwrap_or_else(|| "claude".into()).into() }),
            "codex" => Ok(Driver::Codex { bin: bin.unwrap_or_else(|| "codex".into()).into() }),
            "hermes" => Ok(Driver::Hermes { bin: bin.unwrap_or_else(|| "hermes".into()).into() }),
            "openclaw" => Ok(Driver::OpenClaw { bin: bin.unwrap_or_else(|| "openclaw".into()).into() }),
            other => Err(format!(
                "unknown agent `{other}` (BERTH_AGENT_DRIVER): this agent drives `claude-code`, `codex`, `hermes` and `openclaw`"
            )),
        }
    }

    /// The agent's name, as requests and `/health` give it.
    pub fn name(&self) -> &'static str {
        match self {
            Driver::ClaudeCode { .. } => "claude-code",
            Driver::Codex { .. } => "codex",
            Driver::Hermes { .. } => "hermes",
            Driver::OpenClaw { .. } => "openclaw",
        }
    }

    /// Starts the agent's CLI for one turn; its events arrive on the receiver. The
    /// process is killed when the receiver goes (the client went away).
    pub fn start(&self, l: &Launch<'_>) -> std::io::Result<mpsc::Receiver<DriverEvent>> {
        let (mut cmd, key_var, mut t) = match self {
            Driver::ClaudeCode { bin } => {
                let mut cmd = tokio::process::Command::new(bin);
                cmd.arg("-p")
                    .arg(l.prompt)
                    .args(["--output-format", "stream-json", "--verbose", "--include-partial-messages"])
                    .args(["--model", l.model])
                    // berth-agent's own tools ask nobody either; the instance is the sandbox.
                    .arg("--dangerously-skip-permissions");
                if let Some(id) = l.resume {
                    cmd.args(["--resume", id]);
                }
                if let Some(extra) = l.instructions.filter(|i| !i.trim().is_empty()) {
                    cmd.args(["--append-system-prompt", extra]);
                }
                cmd.env("ANTHROPIC_BASE_URL", l.base_url.trim_end_matches('/').trim_end_matches("/v1"))
                    .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
                    .env("DISABLE_AUTOUPDATER", "1")
                    .env("DISABLE_TELEMETRY", "1");
                (cmd, "ANTHROPIC_API_KEY", Translator::new(Kind::ClaudeCode))
            }
            Driver::Codex { bin } => {
                let mut cmd = tokio::process::Command::new(bin);
                // A model provider of berth's: the OpenAI Responses API at the agent's base URL.
                let provider = format!(
                    "model_providers.berth={{name=\"berth\", base_url={}, env_key=\"BERTH_CODEX_API_KEY\", wire_api=\"responses\"}}",
                    toml_string(l.base_url.trim_end_matches('/'))
                );
                cmd.args(["exec", "--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox"])
                    .args(["-m", l.model, "-c", "model_provider=berth", "-c", &provider]);
                if let Some(extra) = l.instructions.filter(|i| !i.trim().is_empty()) {
                    cmd.args(["-c", &format!("developer_instructions={}", toml_string(extra))]);
                }
                if let Some(id) = l.resume {
                    cmd.args(["resume", id]);
                }
                cmd.arg(l.prompt);
                (cmd, "BERTH_CODEX_API_KEY", Translator::new(Kind::Codex))
            }
            Driver::Hermes { bin } => {
                let mut cmd = tokio::process::Command::new(bin);
                cmd.args(["acp", "--accept-hooks"])
                    .env("HERMES_INFERENCE_PROVIDER", "openai-api")
                    .env("HERMES_INFERENCE_MODEL", l.model)
                    .env("OPENAI_BASE_URL", l.base_url.trim_end_matches('/'));
                (cmd, "OPENAI_API_KEY", Translator::acp(l.prompt, l.workdir, l.resume))
            }
            // Not a CLI per turn: its Gateway, kept running.
            Driver::OpenClaw { bin } => return Ok(crate::openclaw::start(bin, l)),
        };
        cmd.current_dir(l.workdir)
            .env("HOME", l.workdir)
            .stdin(if matches!(self, Driver::Hermes { .. }) { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        crate::tools::confine::confine(&mut cmd, l.user);
        // After `confine`, which keeps the agent's own keys from tools: this one is the CLI's.
        if let Some(key) = l.api_key {
            cmd.env(key_var, key);
        }
        let mut child = cmd.spawn()?;
        let mut stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let errors = tokio::spawn(async move {
                let mut text = String::new();
                let _ = (&mut stderr).take(64 * 1024).read_to_string(&mut text).await;
                text
            });
            let mut lines = BufReader::new(stdout).lines();
            let mut ended = false;
            loop {
                // What the translator has to say to the agent (ACP requests and replies).
                if let Some(input) = &mut stdin {
                    for w in t.writes() {
                        if input.write_all(format!("{w}\n").as_bytes()).await.is_err() {
                            break;
                        }
                    }
                    let _ = input.flush().await;
                }
                if ended && t.kind == Kind::Acp {
                    // The turn's answer is in: the ACP server would wait for more.
                    break;
                }
                let Ok(Some(line)) = lines.next_line().await else { break };
                for ev in t.line(&line) {
                    ended |= matches!(ev, DriverEvent::Done(_));
                    if tx.send(ev).await.is_err() {
                        // The turn is gone: `child` drops here, which kills it.
                        return;
                    }
                }
            }
            if t.kind == Kind::Acp {
                drop(stdin);
                let _ = child.start_kill();
            }
            let status = child.wait().await;
            if !ended {
                let stderr = errors.await.unwrap_or_default();
                let tail: String = stderr
                    .trim()
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join(" | ");
                let code = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                let _ = tx
                    .send(DriverEvent::Done(Err(format!("the agent ended without an answer ({code}): {tail}"))))
                    .await;
            }
        });
        Ok(rx)
    }
}

/// A TOML basic string (for `codex -c key=value`).
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Which CLI's lines a [`Translator`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ClaudeCode,
    Codex,
    /// The Agent Client Protocol (Hermes).
    Acp,
}

/// Turns the CLI's lines into [`DriverEvent`]s.
pub struct Translator {
    kind: Kind,
    /// The model answer being relayed (Claude Code).
    message: Option<AnthropicEvents>,
    /// The ACP conversation, for Hermes.
    acp: Option<Acp>,
}

/// Where an ACP turn stands: `initialize` (1), then `session/load` of the session to
/// resume (2) or `session/new` (4; also when the load fails), then `session/prompt`
/// (3), whose answer ends the turn.
struct Acp {
    prompt: String,
    cwd: String,
    resume: Option<String>,
    /// The prompt was sent: updates from now on are this turn's (a load replays history).
    prompting: bool,
    /// A message is being streamed.
    open: bool,
    writes: Vec<String>,
}

impl Translator {
    pub fn new(kind: Kind) -> Self {
        Translator { kind, message: None, acp: None }
    }

    /// An ACP turn: `prompt` in a session at `cwd`, resuming `resume` when given.
    pub fn acp(prompt: &str, cwd: &Path, resume: Option<&str>) -> Self {
        let init = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": 1,
            "clientCapabilities": {"fs": {"readTextFile": false, "writeTextFile": false}, "terminal": false}}});
        let acp = Acp {
            prompt: prompt.to_string(),
            cwd: cwd.display().to_string(),
            resume: resume.map(str::to_string),
            prompting: false,
            open: false,
            writes: vec![init.to_string()],
        };
        Translator { kind: Kind::Acp, message: None, acp: Some(acp) }
    }

    /// Lines to write to the agent's standard input now.
    pub fn writes(&mut self) -> Vec<String> {
        self.acp.as_mut().map(|a| std::mem::take(&mut a.writes)).unwrap_or_default()
    }

    /// The events of one line (none for lines it has no use for).
    pub fn line(&mut self, line: &str) -> Vec<DriverEvent> {
        let Ok(v) = serde_json::from_str::<Value>(line.trim()) else { return Vec::new() };
        match self.kind {
            Kind::ClaudeCode => self.claude_line(&v),
            Kind::Codex => codex_line(&v),
            Kind::Acp => self.acp.as_mut().map(|a| a.line(&v)).unwrap_or_default(),
        }
    }

    fn claude_line(&mut self, v: &Value) -> Vec<DriverEvent> {
        let mut out = Vec::new();
        match v["type"].as_str() {
            Some("system") if v["subtype"] == "init" => {
                if let Some(id) = v["session_id"].as_str() {
                    out.push(DriverEvent::Session(id.to_string()));
                }
            }
            // Sub-agents' own model calls (`parent_tool_use_id` set) stay inside their tool call.
            Some("stream_event") if v["parent_tool_use_id"].is_null() => {
                let ev = &v["event"];
                if ev["type"] == "message_start" {
                    self.message = Some(AnthropicEvents::default());
                }
                if let Some(decoder) = &mut self.message {
                    match decoder.decode(ev) {
                        Ok(events) => out.extend(events.into_iter().map(DriverEvent::Model)),
                        Err(e) => out.push(DriverEvent::Done(Err(e.to_string()))),
                    }
                }
                if ev["type"] == "message_stop" && self.message.take().is_some() {
                    out.push(DriverEvent::ModelEnd);
                }
            }
            Some("user") if v["parent_tool_use_id"].is_null() => {
                for block in v["message"]["content"].as_array().into_iter().flatten() {
                    if block["type"] == "tool_result" {
                        out.push(DriverEvent::ToolResult {
                            call_id: block["tool_use_id"].as_str().unwrap_or_default().to_string(),
                            output: result_text(&block["content"], block["is_error"].as_bool() == Some(true)),
                        });
                    }
                }
            }
            Some("result") => {
                if self.message.take().is_some() {
                    out.push(DriverEvent::ModelEnd);
                }
                let failed =
                    v["is_error"].as_bool() == Some(true) || v["subtype"].as_str().is_some_and(|s| s != "success");
                out.push(DriverEvent::Done(if failed {
                    let why = v["result"].as_str().or(v["subtype"].as_str()).unwrap_or("the agent failed");
                    Err(why.to_string())
                } else {
                    Ok(())
                }));
            }
            _ => {}
        }
        out
    }
}

/// One line of `codex exec --json`: `thread.started` (its session), items as they
/// start and complete (the agent's messages and reasoning whole, its commands and other
/// actions as calls with their results), and `turn.completed` / `turn.failed`.
fn codex_line(v: &Value) -> Vec<DriverEvent> {
    let mut out = Vec::new();
    let item = &v["item"];
    let id = item["id"].as_str().unwrap_or_default().to_string();
    let call = |out: &mut Vec<DriverEvent>, name: &str, args: Value| {
        out.push(DriverEvent::Model(ProviderEvent::ToolCallStart { index: 0, call_id: id.clone(), name: name.into() }));
        out.push(DriverEvent::Model(ProviderEvent::ToolCallArgs { index: 0, delta: args.to_string() }));
        out.push(DriverEvent::ModelEnd);
    };
    match (v["type"].as_str(), item["type"].as_str()) {
        (Some("thread.started"), _) => {
            if let Some(id) = v["thread_id"].as_str() {
                out.push(DriverEvent::Session(id.to_string()));
            }
        }
        (Some("item.completed"), Some("agent_message")) => {
            out.push(DriverEvent::Model(ProviderEvent::Text(item["text"].as_str().unwrap_or_default().into())));
            out.push(DriverEvent::ModelEnd);
        }
        (Some("item.completed"), Some("reasoning")) => {
            out.push(DriverEvent::Model(ProviderEvent::Reasoning(item["text"].as_str().unwrap_or_default().into())));
            out.push(DriverEvent::ModelEnd);
        }
        (Some("item.started"), Some("command_execution")) => {
            call(&mut out, "exec_command", serde_json::json!({"cmd": item["command"]}));
        }
        (Some("item.completed"), Some("command_execution")) => {
            let mut text = item["aggregated_output"].as_str().unwrap_or_default().to_string();
            if let Some(code) = item["exit_code"].as_i64().filter(|c| *c != 0) {
                text.push_str(&format!("\n[exit code {code}]"));
            }
            out.push(DriverEvent::ToolResult { call_id: id, output: text });
        }
        // Its warnings ("model metadata not found") are not part of the answer.
        (Some("item.started" | "item.completed"), Some("error" | "todo_list")) => {}
        (Some("item.started"), Some(kind)) => call(&mut out, kind, item.clone()),
        (Some("item.completed"), Some(_)) => {
            let status = item["status"].as_str().unwrap_or("completed");
            out.push(DriverEvent::ToolResult { call_id: id, output: status.to_string() });
        }
        (Some("turn.completed"), _) => {
            let u = &v["usage"];
            let input = u["input_tokens"].as_u64().unwrap_or(0);
            let output = u["output_tokens"].as_u64().unwrap_or(0);
            out.push(DriverEvent::Model(ProviderEvent::Usage { input, output }));
            out.push(DriverEvent::ModelEnd);
            out.push(DriverEvent::Done(Ok(())));
        }
        (Some("turn.failed"), _) => {
            let why = v["error"]["message"].as_str().unwrap_or("the agent's turn failed");
            out.push(DriverEvent::Done(Err(why.to_string())));
        }
        (Some("error"), _) => {
            let why = v["message"].as_str().unwrap_or("the agent failed");
            out.push(DriverEvent::Done(Err(why.to_string())));
        }
        _ => {}
    }
    out
}

impl Acp {
    fn send(&mut self, id: u64, method: &str, params: Value) {
        self.writes
            .push(serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string());
    }

    fn new_session(&mut self) {
        let cwd = self.cwd.clone();
        self.send(4, "session/new", serde_json::json!({"cwd": cwd, "mcpServers": []}));
    }

    fn prompt(&mut self, out: &mut Vec<DriverEvent>, session: String) {
        out.push(DriverEvent::Session(session.clone()));
        let prompt = serde_json::json!([{"type": "text", "text": self.prompt}]);
        self.send(3, "session/prompt", serde_json::json!({"sessionId": session, "prompt": prompt}));
        self.prompting = true;
    }

    fn close(&mut self, out: &mut Vec<DriverEvent>) {
        if std::mem::take(&mut self.open) {
            out.push(DriverEvent::ModelEnd);
        }
    }

    fn line(&mut self, v: &Value) -> Vec<DriverEvent> {
        let mut out = Vec::new();
        // The agent asks the client: permissions are granted (the instance is the
        // sandbox, as for berth-agent's own tools); nothing else is offered.
        if let (Some(method), Some(id)) = (v["method"].as_str(), v.get("id")) {
            let reply = match method {
                "session/request_permission" => {
                    let options = v["params"]["options"].as_array().cloned().unwrap_or_default();
                    let pick = options
                        .iter()
                        .find(|o| o["kind"].as_str().is_some_and(|k| k.starts_with("allow")))
                        .or(options.first())
                        .and_then(|o| o["optionId"].as_str())
                        .unwrap_or_default()
                        .to_string();
                    serde_json::json!({"jsonrpc": "2.0", "id": id,
                        "result": {"outcome": {"outcome": "selected", "optionId": pick}}})
                }
                _ => serde_json::json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32601, "message": format!("{method} is not offered by berth-agent")}}),
            };
            self.writes.push(reply.to_string());
            return out;
        }
        if v["method"] == "session/update" {
            if self.prompting {
                self.update(&v["params"]["update"], &mut out);
            }
            return out;
        }
        let error = v["error"]["message"].as_str().map(str::to_string);
        match (v["id"].as_u64(), error) {
            (Some(1), None) => match self.resume.clone() {
                Some(id) => {
                    let cwd = self.cwd.clone();
                    self.send(2, "session/load", serde_json::json!({"sessionId": id, "cwd": cwd, "mcpServers": []}));
                }
                None => self.new_session(),
            },
            (Some(2), None) => {
                let id = self.resume.clone().unwrap_or_default();
                self.prompt(&mut out, id);
            }
            // A session that cannot be loaded (gone): a new one.
            (Some(2), Some(_)) => self.new_session(),
            (Some(4), None) => match v["result"]["sessionId"].as_str() {
                Some(id) => self.prompt(&mut out, id.to_string()),
                None => out.push(DriverEvent::Done(Err("the agent opened no session".into()))),
            },
            (Some(3), None) => {
                self.close(&mut out);
                let u = &v["result"]["usage"];
                let (input, output) = (u["inputTokens"].as_u64().unwrap_or(0), u["outputTokens"].as_u64().unwrap_or(0));
                out.push(DriverEvent::Model(ProviderEvent::Usage { input, output }));
                out.push(DriverEvent::ModelEnd);
                out.push(DriverEvent::Done(match v["result"]["stopReason"].as_str() {
                    Some("refusal") => Err("the agent refused".into()),
                    _ => Ok(()),
                }));
            }
            (Some(_), Some(e)) => {
                self.close(&mut out);
                out.push(DriverEvent::Done(Err(e)));
            }
            _ => {}
        }
        out
    }

    fn update(&mut self, u: &Value, out: &mut Vec<DriverEvent>) {
        let text = || u["content"]["text"].as_str().unwrap_or_default().to_string();
        match u["sessionUpdate"].as_str() {
            Some("agent_message_chunk") => {
                self.open = true;
                out.push(DriverEvent::Model(ProviderEvent::Text(text())));
            }
            Some("agent_thought_chunk") => {
                self.open = true;
                out.push(DriverEvent::Model(ProviderEvent::Reasoning(text())));
            }
            Some("tool_call") => {
                self.close(out);
                let id = u["toolCallId"].as_str().unwrap_or_default().to_string();
                let title = u["title"].as_str().unwrap_or_default();
                // `terminal: echo hi`: the tool's name, then what it does.
                let name = title.split(':').next().unwrap_or(title).trim();
                let name = if name.is_empty() { u["kind"].as_str().unwrap_or("tool") } else { name };
                let args = match u.get("rawInput") {
                    Some(raw) if !raw.is_null() => raw.clone(),
                    _ => serde_json::json!({"title": title}),
                };
                out.push(DriverEvent::Model(ProviderEvent::ToolCallStart { index: 0, call_id: id, name: name.into() }));
                out.push(DriverEvent::Model(ProviderEvent::ToolCallArgs { index: 0, delta: args.to_string() }));
                out.push(DriverEvent::ModelEnd);
            }
            Some("tool_call_update") if matches!(u["status"].as_str(), Some("completed" | "failed")) => {
                self.close(out);
                let texts: Vec<String> = u["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["content"]["text"].as_str().map(str::to_string))
                    .collect();
                let mut output = texts.join("\n");
                if u["status"] == "failed" {
                    output = format!("error: {output}");
                }
                let call_id = u["toolCallId"].as_str().unwrap_or_default().to_string();
                out.push(DriverEvent::ToolResult { call_id, output });
            }
            _ => {}
        }
    }
}

/// A tool result's content (a string, or text blocks) as one text.
pub(crate) fn result_text(content: &Value, is_error: bool) -> String {
    let text = match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks.iter().filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    if is_error {
        format!("error: {text}")
    } else {
        text
    }
}

/// One model answer out of a driven agent's events, for the step that streams it.
/// Anything else that arrives before the answer ends is kept for the turn.
pub struct AnswerSource<'a> {
    pub first: Option<ProviderEvent>,
    pub rx: &'a mut mpsc::Receiver<DriverEvent>,
    pub leftover: Option<DriverEvent>,
}

impl EventSource for AnswerSource<'_> {
    async fn next(&mut self) -> Option<Result<ProviderEvent, ProviderError>> {
        if let Some(ev) = self.first.take() {
            return Some(Ok(ev));
        }
        if self.leftover.is_some() {
            return None;
        }
        match self.rx.recv().await {
            Some(DriverEvent::Model(ev)) => Some(Ok(ev)),
            Some(DriverEvent::ModelEnd) => None,
            Some(DriverEvent::Done(Err(e))) => {
                self.leftover = Some(DriverEvent::Done(Err(e.clone())));
                Some(Err(ProviderError::Upstream(e)))
            }
            Some(other) => {
                self.leftover = Some(other);
                None
            }
            None => Some(Err(ProviderError::Interrupted)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(lines: &[&str]) -> Vec<DriverEvent> {
        let mut t = Translator::new(Kind::ClaudeCode);
        lines.iter().flat_map(|l| t.line(l)).collect()
    }

    #[test]
    fn codexs_items_become_messages_calls_and_results() {
        let mut t = Translator::new(Kind::Codex);
        let got: Vec<DriverEvent> = [
            r#"{"type":"thread.started","thread_id":"th-1"}"#,
            r#"{"type":"item.completed","item":{"id":"item_0","type":"error","message":"Model metadata not found"}}"#,
            r#"{"type":"turn.started"}"#,
            r#"{"type":"item.started","item":{"id":"item_1","type":"command_execution","command":"bash -lc 'false'","status":"in_progress"}}"#,
            r#"{"type":"item.completed","item":{"id":"item_1","type":"command_execution","aggregated_output":"oops\n","exit_code":1}}"#,
            r#"{"type":"item.completed","item":{"id":"item_2","type":"agent_message","text":"done"}}"#,
            r#"{"type":"turn.completed","usage":{"input_tokens":10,"output_tokens":6}}"#,
        ]
        .iter()
        .flat_map(|l| t.line(l))
        .collect();
        let shown: Vec<String> = got.iter().map(|e| format!("{e:?}")).collect();
        assert!(matches!(&got[0], DriverEvent::Session(s) if s == "th-1"), "{shown:#?}");
        assert!(
            matches!(&got[1], DriverEvent::Model(ProviderEvent::ToolCallStart { call_id, name, .. }) if call_id == "item_1" && name == "exec_command"),
            "{shown:#?}"
        );
        assert!(
            matches!(&got[4], DriverEvent::ToolResult { output, .. } if output == "oops\n\n[exit code 1]"),
            "{shown:#?}"
        );
        assert!(matches!(&got[5], DriverEvent::Model(ProviderEvent::Text(t)) if t == "done"), "{shown:#?}");
        assert!(matches!(got.last(), Some(DriverEvent::Done(Ok(())))), "{shown:#?}");
        let failed = t.line(r#"{"type":"turn.failed","error":{"message":"stream disconnected"}}"#);
        assert!(matches!(&failed[0], DriverEvent::Done(Err(e)) if e == "stream disconnected"));
    }

    #[test]
    fn claude_codes_stream_becomes_deltas_calls_results_and_an_end() {
        let got = events(&[
            r#"{"type":"system","subtype":"init","session_id":"s-1"}"#,
            r#"{"type":"stream_event","parent_tool_use_id":null,"event":{"type":"message_start","message":{"usage":{"input_tokens":5}}}}"#,
            r#"{"type":"stream_event","parent_tool_use_id":null,"event":{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"Bash"}}}"#,
            r#"{"type":"stream_event","parent_tool_use_id":null,"event":{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"command\":\"echo hi\"}"}}}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"tool_use","id":"toolu_1"}]}}"#,
            r#"{"type":"stream_event","parent_tool_use_id":null,"event":{"type":"message_stop"}}"#,
            r#"{"type":"user","parent_tool_use_id":null,"message":{"content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"hi"}]}]}}"#,
            r#"{"type":"stream_event","parent_tool_use_id":"toolu_9","event":{"type":"message_start"}}"#,
            r#"{"type":"stream_event","parent_tool_use_id":null,"event":{"type":"message_start","message":{}}}"#,
            r#"{"type":"stream_event","parent_tool_use_id":null,"event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"done"}}}"#,
            r#"{"type":"stream_event","parent_tool_use_id":null,"event":{"type":"message_stop"}}"#,
            "not json at all",
            r#"{"type":"result","subtype":"success","is_error":false,"result":"done"}"#,
        ]);
        let shown: Vec<String> = got.iter().map(|e| format!("{e:?}")).collect();
        assert!(matches!(&got[0], DriverEvent::Session(s) if s == "s-1"), "{shown:#?}");
        assert!(
            matches!(&got[2], DriverEvent::Model(ProviderEvent::ToolCallStart { call_id, name, .. }) if call_id == "toolu_1" && name == "Bash"),
            "{shown:#?}"
        );
        assert!(matches!(&got[4], DriverEvent::ModelEnd), "{shown:#?}");
        assert!(
            matches!(&got[5], DriverEvent::ToolResult { call_id, output } if call_id == "toolu_1" && output == "hi")
        );
        assert!(matches!(&got[7], DriverEvent::Model(ProviderEvent::Text(t)) if t == "done"), "{shown:#?}");
        assert!(matches!(&got[8], DriverEvent::ModelEnd));
        assert!(matches!(&got[9], DriverEvent::Done(Ok(()))));
        assert_eq!(got.len(), 10, "a sub-agent's stream and unknown lines add nothing: {shown:#?}");
    }

    #[test]
    fn an_acp_turn_opens_or_loads_a_session_prompts_and_relays_updates() {
        let mut t = Translator::acp("run it", Path::new("/home/agent"), Some("s-old"));
        let sent = |t: &mut Translator| -> Vec<Value> {
            t.writes().iter().map(|w| serde_json::from_str(w).unwrap()).collect()
        };
        assert_eq!(sent(&mut t)[0]["method"], "initialize");
        assert!(t.line(r#"{"jsonrpc":"2.0","id":1,"result":{"agentCapabilities":{"loadSession":true}}}"#).is_empty());
        let load = sent(&mut t);
        assert_eq!(
            (load[0]["method"].as_str(), load[0]["params"]["sessionId"].as_str()),
            (Some("session/load"), Some("s-old"))
        );
        // The load replays history: not this turn's. A failed load opens a new session.
        assert!(t.line(r#"{"jsonrpc":"2.0","method":"session/update","params":{"update":{"sessionUpdate":"agent_message_chunk","content":{"text":"old"}}}}"#).is_empty());
        assert!(t.line(r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32002,"message":"no such session"}}"#).is_empty());
        assert_eq!(sent(&mut t)[0]["method"], "session/new");
        let got = t.line(r#"{"jsonrpc":"2.0","id":4,"result":{"sessionId":"s-new"}}"#);
        assert!(matches!(&got[0], DriverEvent::Session(s) if s == "s-new"));
        let prompt = sent(&mut t);
        assert_eq!(
            (prompt[0]["method"].as_str(), prompt[0]["params"]["prompt"][0]["text"].as_str()),
            (Some("session/prompt"), Some("run it"))
        );
        // The agent asks for permission: granted with an allow option.
        t.line(r#"{"jsonrpc":"2.0","id":7,"method":"session/request_permission","params":{"options":[{"optionId":"no","kind":"reject_once"},{"optionId":"yes","kind":"allow_once"}]}}"#);
        assert_eq!(sent(&mut t)[0]["result"]["outcome"]["optionId"], "yes");
        let lines = [
            r#"{"jsonrpc":"2.0","method":"session/update","params":{"update":{"sessionUpdate":"tool_call","toolCallId":"tc-1","title":"terminal: echo hi","kind":"execute"}}}"#,
            r#"{"jsonrpc":"2.0","method":"session/update","params":{"update":{"sessionUpdate":"tool_call_update","toolCallId":"tc-1","status":"completed","content":[{"type":"content","content":{"type":"text","text":"hi"}}]}}}"#,
            r#"{"jsonrpc":"2.0","method":"session/update","params":{"update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"done"}}}}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{"stopReason":"end_turn","usage":{"inputTokens":5,"outputTokens":3}}}"#,
        ];
        let got: Vec<DriverEvent> = lines.iter().flat_map(|l| t.line(l)).collect();
        let shown: Vec<String> = got.iter().map(|e| format!("{e:?}")).collect();
        assert!(
            matches!(&got[0], DriverEvent::Model(ProviderEvent::ToolCallStart { call_id, name, .. }) if call_id == "tc-1" && name == "terminal"),
            "{shown:#?}"
        );
        assert!(matches!(&got[3], DriverEvent::ToolResult { output, .. } if output == "hi"), "{shown:#?}");
        assert!(matches!(&got[4], DriverEvent::Model(ProviderEvent::Text(t)) if t == "done"), "{shown:#?}");
        assert!(matches!(got.last(), Some(DriverEvent::Done(Ok(())))), "{shown:#?}");
    }

    #[test]
    fn a_failed_result_says_why() {
        let got = events(&[
            r#"{"type":"result","subtype":"error_during_execution","is_error":true,"result":"API Error: 500"}"#,
        ]);
        assert!(matches!(&got[0], DriverEvent::Done(Err(e)) if e == "API Error: 500"));
    }
}
