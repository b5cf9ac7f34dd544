//! Tools from MCP servers configured in the instance, offered to the model beside the
//! agent's own and listed in `GET /v1/tools`.
//!
//! `DATA/mcp.json` (`~/.berth/mcp.json` in an instance) names the servers, in the
//! shape Claude Code and other MCP clients read:
//!
//! ```json
//! {"mcpServers": {
//!   "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "."], "env": {}},
//!   "search": {"url": "http://127.0.0.1:8931/mcp", "headers": {"Authorization": "Bearer ..."}}
//! }}
//! ```
//!
//! A `command` is started over stdio like a tool (as the tool user, without the agent's
//! secrets, in the work directory); a `url` is reached over streamable HTTP. The file is
//! read when a turn starts and again whenever it changes; servers that fail to start are
//! reported in `GET /v1/tools` and left out. A server's tool `t` is offered as
//! `{server}__{t}`. The official Rust SDK (`rmcp`) speaks the protocol.

use crate::provider::ToolSpec;
use crate::tools::ToolUser;
use futures_util::StreamExt as _;
use rmcp::model::{CallToolRequestParams, ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::service::{RoleClient, RunningService, ServiceExt};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpClientTransportConfig, StreamableHttpError, StreamableHttpPostResponse,
};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long a server may take to start and list its tools.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The servers of one reading of `mcp.json`.
#[derive(Deserialize)]
struct McpFile {
    #[serde(default, rename = "mcpServers", alias = "servers")]
    servers: BTreeMap<String, ServerConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerConfig {
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// `stdio` or `http` (also `streamable-http`); implied by `command` / `url`.
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// One running server and the tools it offers.
struct Server {
    name: String,
    client: RunningService<RoleClient, ()>,
    /// (name offered to the model, the server's own name, description, input schema).
    tools: Vec<(String, String, String, Value)>,
}

#[derive(Default)]
struct Loaded {
    /// Modification time and length of the file read (None: there was none).
    stamp: Option<(SystemTime, u64)>,
    read: bool,
    servers: Vec<Arc<Server>>,
    /// Servers that could not be started, and why.
    errors: Vec<(String, String)>,
}

/// The MCP servers of the instance, started on first use.
pub struct Mcp {
    path: PathBuf,
    workdir: PathBuf,
    user: Option<ToolUser>,
    /// For streamable-HTTP servers, built when the first one starts.
    http: std::sync::OnceLock<reqwest::Client>,
    loaded: tokio::sync::Mutex<Loaded>,
}

impl Mcp {
    pub fn new(path: PathBuf, workdir: PathBuf, user: Option<ToolUser>) -> Self {
        Mcp { path, workdir, user, http: Default::default(), loaded: Default::default() }
    }

    /// The servers as the file now says, (re)started when it changed.
    async fn current(&self) -> tokio::sync::MutexGuard<'_, Loaded> {
        let mut loaded = self.loaded.lock().await;
        let stamp =
            std::fs::metadata(&self.path).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if loaded.read && loaded.stamp == stamp {
            return loaded;
        }
        for old in std::mem::take(&mut loaded.servers) {
            tracing::info!(server = %old.name, "stopping an MCP server (mcp.json changed)");
            old.client.cancellation_token().cancel();
        }
        loaded.errors.clear();
        loaded.stamp = stamp;
        loaded.read = true;
        if stamp.is_none() {
            return loaded;
        }
        let file: McpFile = match std::fs::read_to_string(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "mcp.json is unreadable: {e}");
                loaded.errors.push(("mcp.json".into(), format!("{} is unreadable: {e}", self.path.display())));
                return loaded;
            }
        };
        let starts = file.servers.into_iter().map(|(name, cfg)| async move {
            let started = tokio::time::timeout(START_TIMEOUT, self.start(&name, cfg)).await;
            (name, started.unwrap_or_else(|_| Err(format!("did not start within {}s", START_TIMEOUT.as_secs()))))
        });
        for (name, started) in futures_util::future::join_all(starts).await {
            match started {
                Ok(server) => {
                    tracing::info!(server = %name, tools = server.tools.len(), "MCP server ready");
                    loaded.servers.push(Arc::new(server));
                }
                Err(e) => {
                    tracing::warn!(server = %name, "MCP server not started: {e}");
                    loaded.errors.push((name, e));
                }
            }
        }
        loaded
    }

    async fn start(&self, name: &str, cfg: ServerConfig) -> Result<Server, String> {
        let client = match (cfg.command, cfg.url, cfg.kind.as_deref()) {
            (Some(command), None, None | Some("stdio")) => {
                let mut cmd = tokio::process::Command::new(&command);
                cmd.args(&cfg.args)
                    .envs(&cfg.env)
                    .current_dir(cfg.cwd.unwrap_or_else(|| self.workdir.clone()))
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true);
                crate::tools::confine::confine(&mut cmd, self.user);
                let transport = TokioChildProcess::new(cmd).map_err(|e| format!("cannot run `{command}`: {e}"))?;
                ().serve(transport).await.map_err(|e| format!("`{command}` did not speak MCP: {e}"))?
            }
            (None, Some(url), None | Some("http" | "streamable-http" | "streamableHttp")) => {
                let mut headers = HashMap::new();
                for (k, v) in &cfg.headers {
                    let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| format!("header name '{k}' is not valid"))?;
                    let value = reqwest::header::HeaderValue::from_str(v)
                        .map_err(|_| format!("the value of header '{k}' is not valid"))?;
                    headers.insert(name, value);
                }
                let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                config.custom_headers = headers;
                let transport =
                    StreamableHttpClientTransport::with_client(Http(crate::state::http_client(&self.http)), config);
                ().serve(transport).await.map_err(|e| format!("{url} did not speak MCP: {e}"))?
            }
            (Some(_), Some(_), _) => return Err("give 'command' or 'url', not both".into()),
            (None, None, _) => return Err("give a 'command' (stdio) or a 'url' (streamable HTTP)".into()),
            (_, _, Some(kind)) => return Err(format!("transport type '{kind}' does not fit; use stdio or http")),
        };
        let tools = client.list_all_tools().await.map_err(|e| format!("listing its tools failed: {e}"))?;
        let tools = tools
            .into_iter()
            .filter_map(|t| {
                let t = serde_json::to_value(&t).ok()?;
                let own = t["name"].as_str()?.to_string();
                let description = t["description"].as_str().unwrap_or_default().to_string();
                let schema =
                    t.get("inputSchema").cloned().filter(Value::is_object).unwrap_or_else(|| json!({"type": "object"}));
                Some((offered_name(name, &own), own, description, schema))
            })
            .collect();
        Ok(Server { name: name.to_string(), client, tools })
    }

    /// The MCP tools to offer the model this turn.
    pub async fn specs(&self) -> Vec<ToolSpec> {
        let loaded = self.current().await;
        loaded
            .servers
            .iter()
            .flat_map(|s| s.tools.iter())
            .map(|(offered, _, description, schema)| ToolSpec {
                name: offered.clone().into(),
                description: description.clone().into(),
                parameters: schema.clone(),
            })
            .collect()
    }

    /// `GET /v1/tools`' MCP part: the tools, and the servers that did not start.
    pub async fn listing(&self) -> (Vec<Value>, Vec<Value>) {
        let loaded = self.current().await;
        let tools = loaded
            .servers
            .iter()
            .flat_map(|s| s.tools.iter().map(move |t| (s, t)))
            .map(|(s, (offered, own, description, schema))| {
                json!({"type": "function", "name": offered, "description": description, "parameters": schema,
                       "source": "mcp", "server": s.name, "server_tool": own})
            })
            .collect();
        let errors = loaded.errors.iter().map(|(s, e)| json!({"server": s, "error": e})).collect();
        (tools, errors)
    }

    /// Runs an MCP tool by the name the model was offered; None when it is not one.
    pub async fn call(&self, offered: &str, arguments: &str, timeout: Duration) -> Option<String> {
        let (server, own) = {
            let loaded = self.loaded.lock().await;
            loaded
                .servers
                .iter()
                .find_map(|s| s.tools.iter().find(|t| t.0 == offered).map(|t| (s.clone(), t.1.clone())))?
        };
        let args: serde_json::Map<String, Value> = match serde_json::from_str::<Value>(arguments) {
            Ok(Value::Object(m)) => m,
            Ok(Value::Null) | Err(_) if arguments.trim().is_empty() => Default::default(),
            _ => return Some(format!("error: the arguments of {offered} must be a JSON object")),
        };
        let mut params = CallToolRequestParams::new(own);
        params.arguments = Some(args);
        let answer = match tokio::time::timeout(timeout, server.client.call_tool(params)).await {
            Err(_) => return Some(format!("error: {offered} gave no result within {}s", timeout.as_secs())),
            Ok(Err(e)) => return Some(format!("error: the MCP server '{}' failed: {e}", server.name)),
            Ok(Ok(result)) => serde_json::to_value(&result).unwrap_or_default(),
        };
        Some(result_text(&answer))
    }
}

/// `{server}__{tool}`, in the letters, digits, `_` and `-` tool names may use, at most 64.
fn offered_name(server: &str, tool: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
    };
    let mut name = format!("{}__{}", clean(server), clean(tool));
    name.truncate(64);
    name
}

/// A tool result as text for the model: its text content, what else it holds named.
fn result_text(result: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in result["content"].as_array().map(Vec::as_slice).unwrap_or_default() {
        match c["type"].as_str() {
            Some("text") => parts.push(c["text"].as_str().unwrap_or_default().to_string()),
            Some("resource") => parts.push(
                c["resource"]["text"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("[resource {}]", c["resource"]["uri"])),
            ),
            Some(other) => parts.push(format!("[{other} content]")),
            None => {}
        }
    }
    if parts.is_empty() {
        if let Some(s) = result.get("structuredContent").filter(|s| !s.is_null()) {
            parts.push(s.to_string());
        }
    }
    let text = parts.join("\n");
    if result["isError"].as_bool() == Some(true) {
        format!("error: {text}")
    } else {
        text
    }
}

/// rmcp's streamable HTTP transport over the agent's own HTTP client (reqwest 0.12).
#[derive(Clone)]
struct Http(reqwest::Client);

type HttpResult<T> = Result<T, StreamableHttpError<reqwest::Error>>;

const SESSION_HEADER: &str = "mcp-session-id";

impl Http {
    fn request(
        &self,
        method: reqwest::Method,
        uri: &str,
        session: Option<&str>,
        auth: Option<String>,
        headers: HashMap<reqwest::header::HeaderName, reqwest::header::HeaderValue>,
    ) -> reqwest::RequestBuilder {
        let mut b = self.0.request(method, uri).header(reqwest::header::ACCEPT, "application/json, text/event-stream");
        if let Some(s) = session {
            b = b.header(SESSION_HEADER, s);
        }
        if let Some(a) = auth {
            b = b.bearer_auth(a);
        }
        for (k, v) in headers {
            b = b.header(k, v);
        }
        b
    }
}

fn content_type(resp: &reqwest::Response) -> Option<String> {
    resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase)
}

impl StreamableHttpClient for Http {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<reqwest::header::HeaderName, reqwest::header::HeaderValue>,
    ) -> HttpResult<StreamableHttpPostResponse> {
        let resp = self
            .request(reqwest::Method::POST, &uri, session_id.as_deref(), auth_header, custom_headers)
            .json(&message)
            .send()
            .await
            .map_err(StreamableHttpError::Client)?;
        let status = resp.status();
        if status == reqwest::StatusCode::ACCEPTED || status == reqwest::StatusCode::NO_CONTENT {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if status == reqwest::StatusCode::NOT_FOUND && session_id.is_some() {
            return Err(StreamableHttpError::SessionExpired);
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            return Err(StreamableHttpError::UnexpectedServerResponse(format!("HTTP {status}: {body}").into()));
        }
        let session = resp.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
        match content_type(&resp) {
            Some(ct) if ct.starts_with("text/event-stream") => Ok(StreamableHttpPostResponse::Sse(
                sse_stream::SseStream::from_bytes_stream(resp.bytes_stream()).boxed(),
                session,
            )),
            Some(ct) if ct.starts_with("application/json") => {
                let bytes = resp.bytes().await.map_err(StreamableHttpError::Client)?;
                let message: ServerJsonRpcMessage = serde_json::from_slice(&bytes)?;
                Ok(StreamableHttpPostResponse::Json(message, session))
            }
            other => Err(StreamableHttpError::UnexpectedContentType(other)),
        }
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<reqwest::header::HeaderName, reqwest::header::HeaderValue>,
    ) -> HttpResult<()> {
        let resp = self
            .request(reqwest::Method::DELETE, &uri, Some(&session_id), auth_header, custom_headers)
            .send()
            .await
            .map_err(StreamableHttpError::Client)?;
        if resp.status() == reqwest::StatusCode::METHOD_NOT_ALLOWED {
            return Ok(());
        }
        resp.error_for_status().map(|_| ()).map_err(StreamableHttpError::Client)
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<reqwest::header::HeaderName, reqwest::header::HeaderValue>,
    ) -> HttpResult<futures_util::stream::BoxStream<'static, Result<sse_stream::Sse, sse_stream::Error>>> {
        let mut b = self.request(reqwest::Method::GET, &uri, session_id.as_deref(), auth_header, custom_headers);
        if let Some(id) = last_event_id {
            b = b.header("last-event-id", id);
        }
        let resp = b.send().await.map_err(StreamableHttpError::Client)?;
        if resp.status() == reqwest::StatusCode::METHOD_NOT_ALLOWED {
            return Err(StreamableHttpError::ServerDoesNotSupportSse);
        }
        let resp = resp.error_for_status().map_err(StreamableHttpError::Client)?;
        match content_type(&resp) {
            Some(ct) if ct.starts_with("text/event-stream") => {
                Ok(sse_stream::SseStream::from_bytes_stream(resp.bytes_stream()).boxed())
            }
            other => Err(StreamableHttpError::UnexpectedContentType(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_names_are_valid_tool_names() {
        assert_eq!(offered_name("files", "read_file"), "files__read_file");
        assert_eq!(offered_name("my server", "do.it"), "my_server__do_it");
        assert_eq!(offered_name(&"s".repeat(50), &"t".repeat(50)).len(), 64);
    }

    #[test]
    fn results_become_text_and_errors_say_so() {
        let r = json!({"content": [{"type": "text", "text": "42"}, {"type": "image", "data": "..."}]});
        assert_eq!(result_text(&r), "42\n[image content]");
        let r = json!({"content": [{"type": "text", "text": "no such file"}], "isError": true});
        assert_eq!(result_text(&r), "error: no such file");
        assert_eq!(result_text(&json!({"content": [], "structuredContent": {"n": 1}})), "{\"n\":1}");
    }
}
