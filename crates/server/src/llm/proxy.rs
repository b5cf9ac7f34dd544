//! The proxy's HTTP side: authenticate the instance by its token, check its model,
//! reserve, forward to the operator's upstream with the operator's key, meter what the
//! provider reports and settle into the ledger.

use super::meter::{Limits, Refusal, Reservation};
use super::usage::{may_carry_usage, Usage};
use super::LlmProxy;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::extract::{Path, RawQuery};
use axum::http::Method;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use berth_core::money::format_usd as usd;
use berth_core::{InstanceId, Status};
use berth_store::{InstanceRecord, LedgerEntry};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;

/// Largest output limit a reservation counts (no model writes more in one call).
const MAX_OUTPUT_TOKENS: u64 = 10_000_000;

/// Largest request body the proxy takes (long conversations with images).
const REQUEST_LIMIT: usize = 32 * 1024 * 1024;
/// Largest non-streamed answer it buffers to read the usage.
const RESPONSE_LIMIT: usize = 64 * 1024 * 1024;

/// The API a request speaks, by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Responses,
    Messages,
}

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::Chat => "/chat/completions",
            Api::Responses => "/responses",
            Api::Messages => "/messages",
        }
    }

    /// The field an output limit is set in when the request names none.
    fn limit_field(self) -> &'static str {
        match self {
            Api::Chat => "max_completion_tokens",
            Api::Responses => "max_output_tokens",
            Api::Messages => "max_tokens",
        }
    }

    /// The output-token limit the request names, in this API's field.
    fn output_limit(self, body: &Value) -> Option<u64> {
        let fields: &[&str] = match self {
            Api::Chat => &["max_completion_tokens", "max_tokens"],
            Api::Responses => &["max_output_tokens"],
            Api::Messages => &["max_tokens"],
        };
        fields.iter().find_map(|f| body[*f].as_u64())
    }
}

/// The proxy's routes (`/v1/...`, as `BERTH_LLM_BASE_URL` ends in `/v1`).
pub fn router(proxy: Arc<LlmProxy>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(|s, h, b| call(s, h, b, Api::Chat)))
        .route("/v1/responses", post(|s, h, b| call(s, h, b, Api::Responses)))
        .route("/v1/messages", post(|s, h, b| call(s, h, b, Api::Messages)))
        .route("/v1/models", get(models))
        .route("/tools/{name}", any(tool_call))
        .route("/tools/{name}/{*rest}", any(tool_call))
        .fallback(|| async {
            error(
                Api::Chat,
                StatusCode::NOT_FOUND,
                "not_found",
                "the managed LLM proxy serves POST /v1/chat/completions, /v1/responses and /v1/messages".into(),
            )
        })
        .layer(DefaultBodyLimit::max(REQUEST_LIMIT))
        .with_state(proxy)
}

/// What callers from outside the instances' network get: 403, whatever they ask.
pub fn outsiders() -> Router {
    Router::new().fallback(|| async {
        error(
            Api::Chat,
            StatusCode::FORBIDDEN,
            "forbidden",
            "the managed LLM proxy serves berth's instances only".into(),
        )
    })
}

/// An error in the shape the caller's SDK reads: OpenAI's, or Anthropic's on `/messages`.
fn error(api: Api, status: StatusCode, code: &str, message: String) -> Response {
    let body = match api {
        Api::Messages => json!({"type": "error", "error": {"type": code, "code": code, "message": message}}),
        _ => json!({"error": {"type": code, "code": code, "message": message}}),
    };
    (status, Json(body)).into_response()
}

/// The instance a request's token belongs to (`Authorization: Bearer` or `x-api-key`).
async fn authenticate(p: &LlmProxy, headers: &HeaderMap) -> Option<InstanceRecord> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    let token = bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))?.trim();
    let id = InstanceId::parse(p.seal.llm_token_instance(token)?)?;
    let rec = p.store.instance(None, &id).await.ok().flatten()?;
    (rec.status != Status::Deleted).then_some(rec)
}

async fn models(State(p): State<Arc<LlmProxy>>, headers: HeaderMap) -> Response {
    let Some(rec) = authenticate(&p, &headers).await else {
        return error(
            Api::Chat,
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "missing or invalid instance token".into(),
        );
    };
    let data: Vec<Value> = p
        .cfg
        .prices
        .models
        .keys()
        .filter(|m| rec.budget_models.as_ref().is_none_or(|allowed| allowed.contains(m)))
        .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "berth"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn call(State(p): State<Arc<LlmProxy>>, headers: HeaderMap, body: Bytes, api: Api) -> Response {
    let Some(rec) = authenticate(&p, &headers).await else {
        return error(api, StatusCode::UNAUTHORIZED, "invalid_api_key", "missing or invalid instance token".into());
    };
    let mut req: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return error(api, StatusCode::BAD_REQUEST, "invalid_request", "the body must be a JSON object".into()),
    };
    let Some(model) = req["model"].as_str().map(str::to_string) else {
        return error(api, StatusCode::BAD_REQUEST, "invalid_request", "`model` is required (a string)".into());
    };
    if let Some(allowed) = &rec.budget_models {
        if !allowed.contains(&model) {
            return error(
                api,
                StatusCode::FORBIDDEN,
                "model_not_allowed",
                format!("model `{model}` is not in this instance's budget.models ({})", allowed.join(", ")),
            );
        }
    }
    let Some(price) = p.cfg.price(&model) else {
        return error(
            api,
            StatusCode::BAD_REQUEST,
            "model_not_priced",
            format!("model `{model}` has no price on this server; priced models: {}", priced(&p)),
        );
    };
    let Some((upstream, upstream_model)) = p.cfg.route(&model) else {
        return error(
            api,
            StatusCode::BAD_REQUEST,
            "model_not_routed",
            format!("no upstream serves `{model}`; name one as UPSTREAM/{model}"),
        );
    };
    let upstream = upstream.clone();
    req["model"] = json!(upstream_model);
    let stream = req["stream"].as_bool() == Some(true);
    // Streams must end with the usage; a client that did not ask for it does not get it.
    let client_wants_usage = req["stream_options"]["include_usage"].as_bool() == Some(true);
    if stream && api == Api::Chat && !client_wants_usage {
        if !req["stream_options"].is_object() {
            req["stream_options"] = json!({});
        }
        req["stream_options"]["include_usage"] = json!(true);
    }

    // The bound: the output limit the call names (or the default), and for the input
    // the larger of a quarter of the body's bytes and what the instance's last call used.
    // A call that names no output limit gets the reserved one, so the bound holds.
    let output_limit = match api.output_limit(&req) {
        Some(n) => n.min(MAX_OUTPUT_TOKENS),
        None => {
            let n = u64::from(p.cfg.reserve_tokens);
            req[api.limit_field()] = json!(n);
            n
        }
    };
    // `n` choices each write up to the limit.
    let choices = req["n"].as_u64().unwrap_or(1).clamp(1, 128);
    let input_estimate = (body.len() as u64 / 4).max(p.last_input(&rec.id));
    let bound = price.cost(input_estimate, output_limit.saturating_mul(choices));
    let reservation = match reserve(&p, &rec, bound, api, "this call may cost up to").await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let call = Call { proxy: p.clone(), rec, model, price, reservation: Some(reservation), flat: None };
    // From here the provider may bill: the exchange runs on a task of its own, so a
    // client that leaves mid-call does not cancel it before it is metered.
    let exchange = forward(p, call, upstream, api, req, headers, stream, client_wants_usage);
    tokio::spawn(exchange).await.unwrap_or_else(|_| {
        error(api, StatusCode::BAD_GATEWAY, "upstream_failed", "the call to the LLM provider failed".into())
    })
}

/// Reserves `bound` for a call of `rec` against its cap and, with `--billing`, its
/// wallet; the refusal (402, or 503 when the wallet cannot be read) as the answer.
/// `what` says what the call costs in the message (`this call may cost up to`).
async fn reserve(
    p: &LlmProxy,
    rec: &InstanceRecord,
    bound: i64,
    api: Api,
    what: &str,
) -> Result<Reservation, Response> {
    let wallet = if p.cfg.billing {
        match p.store.balance(&rec.workspace_id).await {
            Ok(b) => Some(b.unwrap_or(0)),
            Err(e) => {
                tracing::error!(error = %e, "reading the wallet");
                let message = "the database failed; try again".into();
                return Err(error(api, StatusCode::SERVICE_UNAVAILABLE, "unavailable", message));
            }
        }
    } else {
        None
    };
    let limits = Limits {
        cap: rec.budget_cap_micros.map(|c| c.saturating_add(rec.topup_micros)),
        used: rec.managed_used_micros,
        wallet,
    };
    p.meter.reserve(&rec.id, &rec.workspace_id, limits, bound).map_err(|refusal| match refusal {
        Refusal::Budget { available, needed } => error(
            api,
            StatusCode::PAYMENT_REQUIRED,
            "budget_exceeded",
            format!(
                "this instance's managed LLM budget is exhausted: {} left, {what} {}; raise budget.managed_cap_usd \
                 or add budget.topup_micros",
                usd(available),
                usd(needed)
            ),
        ),
        Refusal::Funds { available, needed } => error(
            api,
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_funds",
            format!("the workspace's wallet holds {}, {what} {}; top the wallet up", usd(available), usd(needed)),
        ),
    })
}

/// Sends a reserved call upstream and answers what came back (metered as it goes).
#[allow(clippy::too_many_arguments)]
async fn forward(
    p: Arc<LlmProxy>,
    call: Call,
    upstream: super::config::Upstream,
    api: Api,
    req: Value,
    headers: HeaderMap,
    stream: bool,
    client_wants_usage: bool,
) -> Response {
    let mut out = p.http.post(format!("{}{}", upstream.base_url, api.path())).json(&req);
    match (api, &upstream.key) {
        (Api::Messages, Some(key)) => out = out.header("x-api-key", key),
        (_, Some(key)) => out = out.bearer_auth(key),
        _ => {}
    }
    if api == Api::Messages {
        let version = headers.get("anthropic-version").cloned().unwrap_or(HeaderValue::from_static("2023-06-01"));
        out = out.header("anthropic-version", version);
        if let Some(beta) = headers.get("anthropic-beta") {
            out = out.header("anthropic-beta", beta.clone());
        }
    }
    let resp = match out.send().await {
        Ok(r) => r,
        Err(e) => {
            settle_detached(call, Usage::default(), false).await;
            tracing::warn!(upstream = %upstream.name, error = %e, "managed LLM upstream unreachable");
            return error(
                api,
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                format!("the LLM provider `{}` could not be reached", upstream.name),
            );
        }
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp.headers().get(reqwest::header::CONTENT_TYPE).cloned();
    let with_type = |mut r: Response| {
        if let Some(ct) = &content_type {
            r.headers_mut().insert(axum::http::header::CONTENT_TYPE, ct.clone());
        }
        r
    };
    if !status.is_success() {
        // Providers do not charge refused calls: the reservation goes back.
        settle_detached(call, Usage::default(), false).await;
        let body = read_limited(resp).await.unwrap_or_default();
        return with_type((status, body).into_response());
    }
    if !stream {
        let Some(body) = read_limited(resp).await else {
            settle_detached(call, Usage::default(), true).await;
            return error(
                api,
                StatusCode::BAD_GATEWAY,
                "upstream_failed",
                "the LLM provider's answer was cut off".into(),
            );
        };
        let mut usage = Usage::default();
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            usage.observe(&v);
        }
        settle_detached(call, usage, true).await;
        return with_type((status, body).into_response());
    }

    // A stream: forwarded event by event as it arrives; the usage is read on the way.
    // When the client leaves, the upstream is still read to its end so the call is
    // charged what the provider reports rather than a guess.
    let stream = MeteredStream {
        upstream: Some(resp.bytes_stream().boxed()),
        framer: berth_sse::Decoder::default(),
        usage: Usage::default(),
        drop_usage_chunk: api == Api::Chat && !client_wants_usage,
        complete: true,
        call: Some(call),
    };
    let mut r = with_type(Response::new(Body::from_stream(stream)));
    *r.status_mut() = status;
    r.headers_mut().insert(axum::http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// A streamed answer on its way to the client, read by the client's own connection
/// task (no task in between): every poll takes all the upstream has delivered, forwards
/// its complete events in one piece and reads the usage on the way. At the end the call
/// is settled; if the client leaves first, a task reads the upstream to its end so the
/// call is charged what the provider reports.
struct MeteredStream {
    upstream: Option<futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>>,
    framer: berth_sse::Decoder,
    usage: Usage,
    /// The client did not ask for the usage chunk that berth asked for on its behalf.
    drop_usage_chunk: bool,
    /// The upstream ended cleanly (not cut).
    complete: bool,
    call: Option<Call>,
}

impl MeteredStream {
    /// The complete events received so far, as they are to be forwarded.
    fn events(&mut self) -> bytes::BytesMut {
        let mut out = bytes::BytesMut::new();
        while let Some(ev) = self.framer.next_event() {
            self.take(ev, &mut out);
        }
        out
    }

    /// Reads an event's usage and adds it to `out` unless it is the usage chunk the
    /// client did not ask for.
    fn take(&mut self, ev: berth_sse::Event, out: &mut bytes::BytesMut) {
        if may_carry_usage(&ev.data) {
            if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                self.usage.observe(&v);
                if self.drop_usage_chunk && v["choices"].as_array().is_some_and(|c| c.is_empty()) {
                    return;
                }
            }
        }
        out.extend_from_slice(&ev.raw);
    }

    /// The stream ended: an unterminated last event counts too.
    fn finish(&mut self, out: &mut bytes::BytesMut) {
        if let Some(last) = self.framer.finish() {
            self.take(last, out);
        }
    }

    fn settle(&mut self) {
        if let Some(call) = self.call.take() {
            let (usage, served) = (self.usage, self.complete || self.usage.seen);
            tokio::spawn(call.settle(usage, served));
        }
    }
}

impl futures_util::Stream for MeteredStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            let Some(upstream) = this.upstream.as_mut() else { return Poll::Ready(None) };
            let (mut arrived, mut ended) = (false, false);
            // Everything the upstream has delivered goes out in one write.
            loop {
                match upstream.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(chunk))) => {
                        this.framer.push(&chunk);
                        arrived = true;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        tracing::debug!(error = %e, "managed LLM stream cut");
                        this.complete = false;
                        ended = true;
                        break;
                    }
                    Poll::Ready(None) => {
                        ended = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            let mut out = this.events();
            if ended {
                this.finish(&mut out);
                this.upstream = None;
                this.settle();
                if !out.is_empty() {
                    return Poll::Ready(Some(Ok(out.freeze())));
                }
                // A stream the provider cut ends in an error, so the client can tell.
                return Poll::Ready((!this.complete).then(|| {
                    Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the LLM provider cut the stream"))
                }));
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(out.freeze())));
            }
            if !arrived {
                return Poll::Pending;
            }
            // Bytes came but no complete event yet: poll again (registers the waker).
        }
    }
}

impl Drop for MeteredStream {
    fn drop(&mut self) {
        // The client left before the end: read the rest for the usage, then settle.
        let Some(mut upstream) = self.upstream.take() else { return };
        let Some(call) = self.call.take() else { return };
        let mut rest = MeteredStream {
            upstream: None,
            framer: std::mem::take(&mut self.framer),
            usage: self.usage,
            drop_usage_chunk: self.drop_usage_chunk,
            complete: true,
            call: Some(call),
        };
        tokio::spawn(async move {
            while let Some(chunk) = upstream.next().await {
                match chunk {
                    Ok(c) => {
                        rest.framer.push(&c);
                        rest.events();
                    }
                    Err(_) => {
                        rest.complete = false;
                        break;
                    }
                }
            }
            rest.finish(&mut bytes::BytesMut::new());
            rest.settle();
        });
    }
}

/// `/tools/NAME/...`: a metered tool API, called with the operator's key and charged its
/// price per call (a call the tool refuses, non-2xx, costs nothing).
async fn tool_call(
    State(p): State<Arc<LlmProxy>>,
    method: Method,
    path: Path<Vec<(String, String)>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let api = Api::Chat;
    let Some(rec) = authenticate(&p, &headers).await else {
        return error(api, StatusCode::UNAUTHORIZED, "invalid_api_key", "missing or invalid instance token".into());
    };
    let name = path.0.iter().find(|(k, _)| k == "name").map(|(_, v)| v.clone()).unwrap_or_default();
    let rest = path.0.iter().find(|(k, _)| k == "rest").map(|(_, v)| v.clone()).unwrap_or_default();
    let Some(tool) = p.cfg.tools.get(&name).cloned() else {
        let known: Vec<&str> = p.cfg.tools.keys().map(String::as_str).collect();
        return error(
            api,
            StatusCode::NOT_FOUND,
            "unknown_tool",
            format!(
                "no tool `{name}` on this server; tools: {}",
                if known.is_empty() { "none".into() } else { known.join(", ") }
            ),
        );
    };
    let what = format!("a `{name}` call costs");
    let reservation = match reserve(&p, &rec, tool.price, api, &what).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let call = Call {
        proxy: p.clone(),
        rec,
        model: format!("tool:{name}"),
        price: berth_core::money::Price { input_per_m: 0, output_per_m: 0 },
        reservation: Some(reservation),
        flat: Some(tool.price),
    };
    let Some(url) = tool_url(&tool.base_url, &rest, query.as_deref()) else {
        return error(
            api,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("`{rest}` is not a path under the tool"),
        );
    };
    // Like a model call, the exchange outlives a client that leaves.
    let exchange = tool_forward(p, call, tool, name, url, method, headers, body);
    tokio::spawn(exchange).await.unwrap_or_else(|_| {
        error(api, StatusCode::BAD_GATEWAY, "upstream_failed", "the call to the tool failed".into())
    })
}

/// `base` with the path segments of `rest` (each percent-encoded; `.` and `..` refused,
/// so a call cannot leave the tool's base path) and the raw query.
fn tool_url(base: &str, rest: &str, query: Option<&str>) -> Option<reqwest::Url> {
    let mut url = reqwest::Url::parse(base).ok()?;
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return None;
    }
    url.path_segments_mut().ok()?.pop_if_empty().extend(segments);
    url.set_query(query);
    Some(url)
}

/// Sends a reserved tool call and answers what came back.
#[allow(clippy::too_many_arguments)]
async fn tool_forward(
    p: Arc<LlmProxy>,
    call: Call,
    tool: super::config::ToolUpstream,
    name: String,
    url: reqwest::Url,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let api = Api::Chat;
    let reqwest_method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut out = p.http.request(reqwest_method, url).body(body);
    for h in ["content-type", "accept"] {
        if let Some(v) = headers.get(h) {
            out = out.header(h, v.clone());
        }
    }
    match (&tool.header, &tool.key) {
        (Some(h), Some(key)) => out = out.header(h.as_str(), key),
        (None, Some(key)) => out = out.bearer_auth(key),
        _ => {}
    }
    let resp = match out.send().await {
        Ok(r) => r,
        Err(e) => {
            settle_detached(call, Usage::default(), false).await;
            tracing::warn!(tool = %name, error = %e, "metered tool unreachable");
            return error(
                api,
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                format!("the tool `{name}` could not be reached"),
            );
        }
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp.headers().get(reqwest::header::CONTENT_TYPE).cloned();
    let body = read_limited(resp).await;
    settle_detached(call, Usage::default(), status.is_success() && body.is_some()).await;
    let mut r = (status, body.unwrap_or_default()).into_response();
    if let Some(ct) = content_type {
        r.headers_mut().insert(axum::http::header::CONTENT_TYPE, ct);
    }
    r
}

/// Settles on a task of its own: the ledger is written even if the client leaves
/// while it is being written (the handler's future is dropped then).
async fn settle_detached(call: Call, usage: Usage, served: bool) {
    let _ = tokio::spawn(call.settle(usage, served)).await;
}

/// A call in flight: settles its reservation exactly once.
struct Call {
    proxy: Arc<LlmProxy>,
    rec: InstanceRecord,
    model: String,
    price: berth_core::money::Price,
    reservation: Option<Reservation>,
    /// A tool call's price per call (instead of tokens).
    flat: Option<i64>,
}

impl Call {
    /// Charges the call what the provider reported; when it reported nothing for a call
    /// it served (`served`), the reserved bound (the provider bills it; berth cannot
    /// know less). A call that was not served costs nothing.
    async fn settle(mut self, usage: Usage, served: bool) {
        let Some(r) = self.reservation.take() else { return };
        let p = &self.proxy;
        let cost = match (self.flat, usage.seen, served) {
            (Some(price), _, true) => price,
            (Some(_), _, false) => 0,
            (None, true, _) => self.price.cost(usage.input, usage.output),
            (None, false, true) => r.micros,
            (None, false, false) => 0,
        };
        p.meter.settle(&r, cost);
        if usage.seen {
            p.remember_input(&self.rec.id, usage.input);
        }
        if !served && !usage.seen {
            return;
        }
        let description = if self.flat.is_some() {
            format!("{}: one call", self.model)
        } else if usage.seen {
            format!("{}: {} input + {} output tokens", self.model, usage.input, usage.output)
        } else {
            format!("{}: the provider reported no usage; charged the reserved bound", self.model)
        };
        let entry = LedgerEntry {
            workspace_id: self.rec.workspace_id.clone(),
            instance_id: Some(self.rec.id.clone()),
            kind: if self.flat.is_some() { "tool_usage" } else { "managed_usage" }.into(),
            amount_micros: -cost,
            description,
            model: Some(self.model.clone()),
            input_tokens: usage.seen.then_some(usage.input as i64),
            output_tokens: usage.seen.then_some(usage.output as i64),
        };
        match p.store.post_ledger(&entry).await {
            Ok(r) => p.webhooks.after_entry(&r),
            Err(e) => {
                tracing::error!(instance = %self.rec.id, micros = cost, error = %e, "could not record managed usage")
            }
        }
        p.meter.committed(&self.rec.workspace_id, cost);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // A handler that ended without settling (the client went away mid-request):
        // nothing was forwarded for certain, so the reservation is released uncharged.
        if let Some(r) = self.reservation.take() {
            self.proxy.meter.settle(&r, 0);
        }
    }
}

async fn read_limited(resp: reqwest::Response) -> Option<Bytes> {
    let mut body = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        body.extend_from_slice(&chunk.ok()?);
        if body.len() > RESPONSE_LIMIT {
            return None;
        }
    }
    Some(body.into())
}

fn priced(p: &LlmProxy) -> String {
    let names: Vec<&str> = p.cfg.prices.models.keys().map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::tool_url;

    #[test]
    fn tool_paths_stay_under_the_tool() {
        let base = "https://search.example/api/v1";
        assert_eq!(tool_url(base, "", Some("q=x")).unwrap().as_str(), "https://search.example/api/v1?q=x");
        assert_eq!(tool_url(base, "web/search", None).unwrap().as_str(), "https://search.example/api/v1/web/search");
        // A decoded `?` or `#` stays part of the path; traversal is refused.
        assert_eq!(tool_url(base, "a?b#c", None).unwrap().path(), "/api/v1/a%3Fb%23c");
        assert!(tool_url(base, "../../admin", None).is_none());
        assert!(tool_url(base, "a/./b", None).is_none());
        assert!(tool_url(base, "a/../../b", None).is_none());
    }
}
