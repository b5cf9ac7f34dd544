//! The HTTP client of the hosting API: base URL, bearer auth, and errors decoded
//! from the API's `{"error": {...}}` envelope into messages a person can act on.

use berth_api_types::{ErrorBody, ErrorDetail};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Where the server is, how to authenticate, how to print: shared by every client command.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Client options")]
pub struct ClientArgs {
    /// Base URL of the berth server.
    #[arg(long, env = "BERTH_URL", default_value = "http://127.0.0.1:7070", global = true)]
    pub url: String,
    /// Workspace API key (`sk_...`).
    #[arg(long, env = "BERTH_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Why a call to the hosting API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no API key: set BERTH_API_KEY (or pass --api-key)\n  \
         the server prints the admin key at its first start and writes it to DATA_DIR/admin.key \
         (./.berth/admin.key by default)"
    )]
    MissingKey,
    #[error(
        "cannot reach the berth server at {url} ({cause})\n  \
         is `berth server` running there? Point the CLI at it with BERTH_URL or --url"
    )]
    Unreachable { url: String, cause: String },
    #[error(
        "cannot reach the instance at {url} ({cause})\n  \
         is it running? `berth instances get ID` shows its status and URL"
    )]
    InstanceUnreachable { url: String, cause: String },
    #[error("{}", api_message(.0))]
    Api(ErrorDetail),
    #[error("unexpected answer from {url}: HTTP {status}: {body}")]
    Unexpected { url: String, status: u16, body: String },
    #[error("request to {url} failed: {cause}")]
    Transport { url: String, cause: String },
}

/// `<message> (<code>)`, then each detail (`field`, `current_status`, ...) on its own line.
fn api_message(e: &ErrorDetail) -> String {
    let mut out = format!("{} ({})", e.message, e.code);
    for (key, value) in &e.details {
        let value = value.as_str().map_or_else(|| value.to_string(), str::to_string);
        out.push_str(&format!("\n  {key}: {value}"));
    }
    if e.code == "unauthorized" {
        out.push_str("\n  check BERTH_API_KEY (or --api-key)");
    }
    out
}

/// A client of one berth server, or of one instance's own API, authenticated by one key.
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
    /// Talks to an instance through the edge (the instance plane), not to the hosting API.
    instance: bool,
}

impl Client {
    /// A client for `args.url`; fails when no key is configured.
    pub fn new(args: &ClientArgs) -> Result<Self, ClientError> {
        let key = args.api_key.as_deref().map(str::trim).filter(|k| !k.is_empty());
        let key = key.ok_or(ClientError::MissingKey)?.to_string();
        // Accept the URL with or without the `/v1` suffix.
        let base = args.url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base).to_string();
        let http = builder().build().map_err(|e| ClientError::Transport { url: base.clone(), cause: e.to_string() })?;
        Ok(Self { http, base, key, instance: false })
    }

    /// A client of the instance plane at an instance's `url` (`http://{label}.localhost:7071`),
    /// with the same key. `*.localhost` names are sent to 127.0.0.1 without asking the
    /// system resolver (which often knows only `localhost` itself); the `Host` header
    /// keeps the name, which is what the edge routes by.
    pub fn instance(url: &str, key: &str) -> Result<Self, ClientError> {
        let base = url.trim_end_matches('/').to_string();
        let invalid = |cause: String| ClientError::Transport { url: base.clone(), cause };
        let parsed = reqwest::Url::parse(&base).map_err(|e| invalid(format!("bad instance URL: {e}")))?;
        let mut http = builder();
        if let Some(host) = parsed.host_str().filter(|h| h.ends_with(".localhost")) {
            // reqwest dials the URL's port; the one given here is only a placeholder.
            let port = parsed.port_or_known_default().unwrap_or(80);
            http = http.resolve(host, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
        let http = http.build().map_err(|e| invalid(e.to_string()))?;
        Ok(Self { http, base, key: key.to_string(), instance: true })
    }

    /// `GET /v1{path}?{query}`.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.send(self.request(Method::GET, path).query(query)).await
    }

    /// `POST /v1{path}` with a JSON body, or none.
    pub async fn post(&self, path: &str, body: Option<&impl serde::Serialize>) -> Result<Value, ClientError> {
        let req = self.request(Method::POST, path);
        self.send(match body {
            Some(body) => req.json(body),
            None => req,
        })
        .await
    }

    /// `PATCH /v1{path}` with a JSON body.
    pub async fn patch(&self, path: &str, body: &impl serde::Serialize) -> Result<Value, ClientError> {
        self.send(self.request(Method::PATCH, path).json(body)).await
    }

    /// `GET /v1{path}?{query}` answered by a stream (Server-Sent Events): the open
    /// response once its status is a success, the decoded API error otherwise.
    pub async fn get_stream(&self, path: &str, query: &[(&str, String)]) -> Result<Response, ClientError> {
        self.open(self.request(Method::GET, path).query(query)).await
    }

    /// `POST /v1{path}` with a JSON body, answered by a stream; see [`Client::get_stream`].
    pub async fn post_stream(&self, path: &str, body: &impl serde::Serialize) -> Result<Response, ClientError> {
        self.open(self.request(Method::POST, path).json(body)).await
    }

    /// The `ws://` URL of `/v1{path}?{query}` (from an `http://` base URL).
    pub fn ws_url(&self, path: &str, query: &[(&str, String)]) -> Result<reqwest::Url, ClientError> {
        let invalid = |cause: String| ClientError::Transport { url: self.base.clone(), cause };
        let mut url = reqwest::Url::parse_with_params(&format!("{}/v1{path}", self.base), query)
            .map_err(|e| invalid(format!("bad server URL: {e}")))?;
        let scheme = match url.scheme() {
            "http" => "ws",
            "https" => "wss",
            other => return Err(invalid(format!("unsupported URL scheme `{other}` (use http://)"))),
        };
        url.set_scheme(scheme).map_err(|()| invalid(format!("cannot use `{scheme}` with this URL")))?;
        Ok(url)
    }

    /// The key, for requests made outside reqwest (the shell's WebSocket upgrade).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The base URL, for error messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `DELETE /v1{path}?{query}`.
    pub async fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.send(self.request(Method::DELETE, path).query(query)).await
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}/v1{path}", self.base)).bearer_auth(&self.key)
    }

    async fn send(&self, req: RequestBuilder) -> Result<Value, ClientError> {
        let resp = req.send().await.map_err(|e| self.transport(&e))?;
        let status = resp.status();
        let url = resp.url().to_string();
        let text = resp.text().await.map_err(|e| self.transport(&e))?;
        if status.is_success() {
            if let Ok(value) = serde_json::from_str(&text) {
                return Ok(value);
            }
        }
        Err(decode_error(url, status.as_u16(), &text))
    }

    async fn open(&self, req: RequestBuilder) -> Result<Response, ClientError> {
        let resp = req.send().await.map_err(|e| self.transport(&e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let url = resp.url().to_string();
        let text = resp.text().await.map_err(|e| self.transport(&e))?;
        Err(decode_error(url, status, &text))
    }

    /// The error for a failure while reading a stream that had started.
    pub fn transport(&self, err: &reqwest::Error) -> ClientError {
        let url = self.base.clone();
        let cause = root_cause(err);
        if err.is_connect() && self.instance {
            ClientError::InstanceUnreachable { url, cause }
        } else if err.is_connect() {
            ClientError::Unreachable { url, cause }
        } else {
            ClientError::Transport { url, cause }
        }
    }
}

/// The shared settings of every client: connect timeout (no overall one: streams and
/// agent turns run long) and user agent.
fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("berth-cli/", env!("CARGO_PKG_VERSION")))
}

/// A failed answer: the API's error envelope when it is one, else the raw status and body.
/// The instance plane's OpenAI envelope (`{"error":{"message","type","code","param"}}`,
/// `code` possibly null) reads as the same `<message> (<code>)`.
pub fn decode_error(url: String, status: u16, text: &str) -> ClientError {
    if !(200..300).contains(&status) {
        if let Ok(body) = serde_json::from_str::<ErrorBody>(text) {
            return ClientError::Api(body.error);
        }
        if let Some(detail) = openai_error(text) {
            return ClientError::Api(detail);
        }
    }
    let body = text.chars().take(300).collect();
    ClientError::Unexpected { url, status, body }
}

/// An OpenAI-style error envelope whose `code` is missing or null: its `type` stands in.
fn openai_error(text: &str) -> Option<ErrorDetail> {
    let body: Value = serde_json::from_str(text).ok()?;
    let error = body.get("error")?;
    let message = error.get("message")?.as_str()?.to_string();
    let code = ["code", "type"].iter().find_map(|k| error.get(*k).and_then(Value::as_str)).unwrap_or("error");
    Some(ErrorDetail { code: code.to_string(), message, details: serde_json::Map::new() })
}

/// The innermost cause, which names what actually happened ("connection refused").
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    match cur.downcast_ref::<std::io::Error>().map(std::io::Error::kind) {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".into(),
        _ => cur.to_string(),
    }
}
