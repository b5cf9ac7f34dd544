//! The edge: `http://{label}.{domain}` routes to the instance's agent (port 3737).
//!
//! The workspace key is checked before any byte reaches the instance (401 / 404 as
//! on the hosting API), then swapped for the instance's own gateway token. Request
//! and response bodies stream through unbuffered, so SSE arrives as produced and
//! the stream stays open until the instance closes it. A `cold_start` instance that
//! was stopped for idleness is started by the request, which waits for it.

use crate::auth::{hash_secret, presented_key};
use crate::instances::ops;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use berth_core::lifecycle::Action;
use berth_core::{now_secs, InstanceId, Status};
use berth_runtime::Observed;
use futures_util::TryStreamExt;
use serde_json::json;

/// The edge's router: every path of every host goes to [`proxy`].
pub fn router(state: AppState) -> Router {
    Router::new().fallback(proxy).with_state(state)
}

/// An error in the instance plane's (OpenAI-style) envelope.
fn edge_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        404 => "not_found_error",
        _ if status.is_server_error() => "server_error",
        _ => "invalid_request_error",
    };
    let body = json!({"error": {"message": message.into(), "type": kind, "code": code, "param": null}});
    (status, axum::Json(body)).into_response()
}

/// The instance a Host header names, if it is `{label}.{domain}`.
pub fn instance_of_host(host: &str, domain: &str) -> Option<InstanceId> {
    let host = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let label = host.strip_suffix(domain)?.strip_suffix('.')?;
    InstanceId::parse(&format!("inst_{label}"))
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn forwardable(name: &HeaderName) -> bool {
    !HOP_BY_HOP.contains(&name.as_str())
        && name != header::HOST
        && name != header::AUTHORIZATION
        && name.as_str() != "x-api-key"
        && name != header::CONTENT_LENGTH
}

async fn proxy(State(state): State<AppState>, req: Request) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let Some(id) = instance_of_host(&host, &state.settings.domain) else {
        return edge_error(
            StatusCode::NOT_FOUND,
            "instance_not_found",
            format!("no instance at host `{host}`; instance URLs are http://{{label}}.{}", state.settings.domain),
        );
    };
    let (parts, body) = req.into_parts();
    let Some(secret) = presented_key(&parts).filter(|s| !s.is_empty()) else {
        return edge_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing API key: send Authorization: Bearer sk_...",
        );
    };
    let key = match state.store.key_by_hash(&hash_secret(&secret)).await {
        Ok(Some(k)) => k,
        Ok(None) => return edge_error(StatusCode::UNAUTHORIZED, "unauthorized", "invalid API key"),
        Err(e) => return edge_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()),
    };
    let rec = match state.store.instance(Some(&key.workspace_id), &id).await {
        Ok(Some(r)) if r.status != Status::Deleted => r,
        Ok(_) => {
            return edge_error(
                StatusCode::NOT_FOUND,
                "instance_not_found",
                format!("no instance `{id}` in this workspace"),
            )
        }
        Err(e) => return edge_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()),
    };
    let rec = match rec.status {
        Status::Running => rec,
        Status::Stopped if rec.lifecycle_mode == "cold_start" => {
            // Wake it: the request waits for the agent instead of failing.
            let auth =
                crate::auth::Auth { workspace_id: key.workspace_id.clone(), key_id: key.id.clone(), admin: key.admin };
            match ops::detached(ops::act(state.clone(), auth, id.to_string(), Action::Start)).await {
                Ok(r) => r,
                Err(e) => {
                    return edge_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "instance_unavailable",
                        format!("could not wake the instance: {e}"),
                    )
                }
            }
        }
        other => {
            return edge_error(
                StatusCode::CONFLICT,
                "instance_not_running",
                format!("instance `{id}` is {other}; start it (POST /v1/instances/{id}/start) to reach its agent"),
            )
        }
    };
    let addr = match state.runtime.inspect(&rec.id).await {
        Ok(cs) if cs.observed == Observed::Running => cs.agent_addr,
        _ => None,
    };
    let Some(addr) = addr else {
        return edge_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "instance_unavailable",
            "the instance's agent is not reachable right now; retry shortly",
        );
    };
    let _ = state.store.touch_instance(&rec.id, now_secs()).await;

    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut headers = HeaderMap::new();
    for (name, value) in parts.headers.iter().filter(|(n, _)| forwardable(n)) {
        headers.append(name.clone(), value.clone());
    }
    let mut upstream = state
        .edge_http
        .request(parts.method.clone(), format!("http://{addr}{path}"))
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    if let Some(token) = &rec.gateway_token {
        upstream = upstream.bearer_auth(token);
    }
    let resp = match upstream.send().await {
        Ok(r) => r,
        Err(e) => {
            return edge_error(
                StatusCode::BAD_GATEWAY,
                "instance_unavailable",
                format!("the instance's agent did not answer: {e}"),
            )
        }
    };
    let mut out = Response::builder().status(resp.status().as_u16());
    for (name, value) in
        resp.headers().iter().filter(|(n, _)| !HOP_BY_HOP.contains(&n.as_str()) && *n != header::CONTENT_LENGTH)
    {
        out = out.header(name.as_str(), value.as_bytes());
    }
    let stream = resp.bytes_stream().map_err(std::io::Error::other);
    out.body(Body::from_stream(stream))
        .unwrap_or_else(|e| edge_error(StatusCode::BAD_GATEWAY, "bad_gateway", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::instance_of_host;

    #[test]
    fn hosts_map_to_instances() {
        assert_eq!(instance_of_host("ab12cd34ef.localhost:7071", "localhost").unwrap().as_str(), "inst_ab12cd34ef");
        assert_eq!(instance_of_host("ab12cd34ef.example.com", "example.com").unwrap().as_str(), "inst_ab12cd34ef");
        assert!(instance_of_host("localhost:7071", "localhost").is_none());
        assert!(instance_of_host("x.ab12cd34ef.localhost", "localhost").is_none());
        assert!(instance_of_host("ab12cd34efxlocalhost", "localhost").is_none());
        assert!(instance_of_host("AB12CD34EF.localhost", "localhost").is_none());
    }
}
