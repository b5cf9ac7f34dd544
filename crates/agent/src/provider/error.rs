//! Provider failures, each with a stable code and a message a person can act on.

use std::time::Duration;

/// Why a model call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{}", status_message(*.status, .url, .detail))]
    Status { status: u16, url: String, detail: String },
    #[error("The model provider at {url} sent nothing for {}s; it may be overloaded. Try again, or raise BERTH_LLM_TIMEOUT_SECS.", .after.as_secs())]
    Timeout { url: String, after: Duration },
    #[error("Could not reach the model provider at {url}: {detail}. Check BERTH_LLM_BASE_URL and the network.")]
    Unreachable { url: String, detail: String },
    #[error("The model provider sent a response the agent cannot read ({0}). Check that the base URL points at an OpenAI-compatible or Anthropic API.")]
    Malformed(String),
    #[error("The model provider closed the stream before the answer was finished; try again.")]
    Interrupted,
    #[error("The model provider reported an error mid-answer: {0}")]
    Upstream(String),
    #[error("{0}")]
    NotConfigured(String),
    #[error("This turn needs about {estimated} tokens of context and model {model} takes {window}: compact the session (POST /v1/responses/compact), send 'truncation': 'auto' to drop its oldest items, or set BERTH_CONTEXT_WINDOW if the model's window is larger.")]
    ContextOverflow { model: String, estimated: u64, window: u64 },
}

fn status_message(status: u16, url: &str, detail: &str) -> String {
    let hint = match status {
        401 | 403 => "the API key was rejected; check BERTH_LLM_API_KEY (or the Anthropic key)",
        402 => "the LLM budget is exhausted; raise the budget or wait for it to reset",
        404 => "the model or endpoint does not exist; check the model name and the base URL",
        408 => "the provider timed out; try again",
        429 => "rate limited; wait a little and try again",
        400 | 422 => "the provider refused the request",
        500..=599 => "the provider is failing or overloaded; try again later",
        _ => "unexpected status",
    };
    let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
    format!("The model provider at {url} answered {status} ({hint}){detail}")
}

impl ProviderError {
    /// Stable snake_case code for `response.error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::Status { status, .. } => match status {
                401 | 403 => "provider_auth_failed",
                402 => "budget_exceeded",
                404 => "model_not_found",
                429 => "rate_limit_exceeded",
                400 | 422 => "provider_rejected_request",
                _ => "provider_unavailable",
            },
            ProviderError::Timeout { .. } => "provider_timeout",
            ProviderError::Unreachable { .. } => "provider_unreachable",
            ProviderError::Malformed(_) => "provider_bad_response",
            ProviderError::Interrupted => "provider_stream_interrupted",
            ProviderError::Upstream(_) => "provider_error",
            ProviderError::NotConfigured(_) => "provider_not_configured",
            ProviderError::ContextOverflow { .. } => "context_length_exceeded",
        }
    }

    /// Whether trying the same call again may help.
    pub fn retryable(&self) -> bool {
        match self {
            ProviderError::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            ProviderError::Timeout { .. }
            | ProviderError::Unreachable { .. }
            | ProviderError::Interrupted
            | ProviderError::Upstream(_) => true,
            ProviderError::Malformed(_) | ProviderError::NotConfigured(_) | ProviderError::ContextOverflow { .. } => {
                false
            }
        }
    }

    pub(crate) fn from_reqwest(url: &str, e: reqwest::Error) -> Self {
        if e.is_timeout() {
            return ProviderError::Timeout { url: url.into(), after: Duration::from_secs(0) };
        }
        if e.is_body() || e.is_decode() {
            return ProviderError::Interrupted;
        }
        // The whole source chain: reqwest's top-level text alone hides the cause.
        let mut detail = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            src = s.source();
        }
        ProviderError::Unreachable { url: url.into(), detail }
    }
}

/// The most useful part of an error body: `error.message`, `message`, or the text.
pub(crate) fn error_detail(body: &str) -> String {
    let v: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let msg = v.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .or_else(|| v.get("message"))
            .and_then(|m| m.as_str())
            .map(str::to_string)
    });
    let mut s = msg.unwrap_or_else(|| body.trim().to_string());
    crate::ids::cut(&mut s, 500, "…");
    s
}
