//! The tools the model may call, acting on the instance's own computer.
//! Every tool answers with text for the model; failures are text too
//! (`error: ...`), so the model can see them and try something else.

pub mod confine;
mod files;
pub mod memory;
pub mod search;
mod shell;

pub use confine::ToolUser;
use files::FileOp;

use crate::config::Limits;
use crate::provider::ToolSpec;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What the tools act on.
#[derive(Debug, Clone)]
pub struct ToolContext {
    /// Where commands run and relative paths resolve.
    pub workdir: PathBuf,
    /// The memory notes file.
    pub memory_path: PathBuf,
    pub limits: Limits,
    /// Serialises memory writes from concurrent sessions.
    pub memory_lock: Arc<tokio::sync::Mutex<()>>,
    /// The user commands and file tools run as (`None`: the agent's own).
    pub user: Option<ToolUser>,
    /// Where `web_search` goes (`None`: the tool is not offered).
    pub web_search: Option<search::WebSearch>,
}

/// The tool descriptions offered to the model.
pub fn specs(ctx: &ToolContext) -> Vec<ToolSpec> {
    let mut specs = base_specs();
    if ctx.web_search.is_some() {
        specs.push(ToolSpec {
            name: "web_search".into(),
            description: "Search the web. Answers the search service's results (titles, links, snippets).".into(),
            parameters: json!({"type": "object", "properties": {
                "query": {"type": "string", "description": "What to search for."},
                "count": {"type": "integer", "description": "How many results (1-20, default 5)."}
            }, "required": ["query"]}),
        });
    }
    specs
}

fn base_specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "shell".into(),
            description: "Run a shell command (sh -c) on this computer. stdout and stderr are \
                returned together with the exit code. Long-running commands are killed at the timeout."
                .into(),
            parameters: json!({"type": "object", "properties": {
                "command": {"type": "string", "description": "The command line."},
                "cwd": {"type": "string", "description": "Working directory (default: the agent's)."},
                "timeout_secs": {"type": "integer", "description": "Time limit in seconds."}
            }, "required": ["command"]}),
        },
        ToolSpec {
            name: "read_file".into(),
            description: "Read a text file. Long files are cut; read on with offset.".into(),
            parameters: json!({"type": "object", "properties": {
                "path": {"type": "string"},
                "offset": {"type": "integer", "description": "Byte offset to start at."}
            }, "required": ["path"]}),
        },
        ToolSpec {
            name: "write_file".into(),
            description: "Write a text file (replacing it, or appending), creating parent directories.".into(),
            parameters: json!({"type": "object", "properties": {
                "path": {"type": "string"},
                "content": {"type": "string"},
                "append": {"type": "boolean", "description": "Append instead of replacing."}
            }, "required": ["path", "content"]}),
        },
        ToolSpec {
            name: "list_dir".into(),
            description: "List a directory: directories end in '/', files show their size.".into(),
            parameters: json!({"type": "object", "properties": {
                "path": {"type": "string", "description": "Directory (default: the working directory)."}
            }}),
        },
        ToolSpec {
            name: "memory_read".into(),
            description: "Read your persistent memory notes, kept across all sessions.".into(),
            parameters: json!({"type": "object", "properties": {}}),
        },
        ToolSpec {
            name: "memory_write".into(),
            description: "Save to your persistent memory notes: append a note, or replace all notes.".into(),
            parameters: json!({"type": "object", "properties": {
                "content": {"type": "string"},
                "mode": {"type": "string", "enum": ["append", "replace"]}
            }, "required": ["content"]}),
        },
    ]
}

/// Runs one tool call and returns its output for the model.
pub async fn run(ctx: &ToolContext, name: &str, arguments: &str) -> String {
    let args: Value = match serde_json::from_str(if arguments.trim().is_empty() { "{}" } else { arguments }) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return "error: arguments must be a JSON object".into(),
        Err(e) => return format!("error: arguments are not valid JSON ({e})"),
    };
    let str_arg = |k: &str| args.get(k).and_then(Value::as_str);
    let path_arg = |k: &str| files::resolve(&ctx.workdir, str_arg(k).unwrap_or("."));
    let cap = ctx.limits.output_cap;
    match name {
        "shell" => {
            let Some(command) = str_arg("command") else {
                return "error: missing 'command'".into();
            };
            let max = ctx.limits.shell_timeout;
            let timeout = args["timeout_secs"].as_u64().map(|s| Duration::from_secs(s.max(1)).min(max)).unwrap_or(max);
            shell::run(command, &path_arg("cwd"), timeout, cap, ctx.user).await
        }
        "read_file" if str_arg("path").is_some() => {
            let offset = args["offset"].as_u64().unwrap_or(0);
            confine::file_op(ctx.user, FileOp::Read { path: path_arg("path"), offset, cap }).await
        }
        "write_file" => match (str_arg("path"), str_arg("content")) {
            (Some(_), Some(content)) => {
                let append = args["append"].as_bool().unwrap_or(false);
                let op = FileOp::Write { path: path_arg("path"), content: content.to_string(), append };
                confine::file_op(ctx.user, op).await
            }
            _ => "error: 'path' and 'content' are required".into(),
        },
        "list_dir" => confine::file_op(ctx.user, FileOp::List { path: path_arg("path") }).await,
        "memory_read" => memory::read(&ctx.memory_path).await,
        "memory_write" => match str_arg("content") {
            Some(content) => {
                let _one_writer = ctx.memory_lock.lock().await;
                let replace = str_arg("mode") == Some("replace");
                memory::write(&ctx.memory_path, content, replace).await
            }
            None => "error: missing 'content'".into(),
        },
        "web_search" => match (&ctx.web_search, str_arg("query")) {
            (Some(s), Some(q)) => search::run(s, q, args["count"].as_u64().unwrap_or(5), cap).await,
            (None, _) => "error: web search is not available here".into(),
            (_, None) => "error: missing 'query'".into(),
        },
        "read_file" => "error: missing 'path'".into(),
        other => format!("error: there is no tool named '{other}'"),
    }
}
