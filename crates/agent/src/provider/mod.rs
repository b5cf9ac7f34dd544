//! LLM providers: one HTTP client, two wire protocols (OpenAI-compatible chat
//! completions, Anthropic Messages), both streamed and decoded into
//! [`ProviderEvent`]s as the bytes arrive.

mod anthropic;
mod error;
mod history;
mod openai;

pub(crate) use error::error_detail;
pub use error::ProviderError;

use crate::api::Item;
use crate::config::ProviderKind;
use berth_sse::{Decoder as SseParser, Event as SseEvent};
use serde_json::Value;
use std::collections::VecDeque;
use std::time::Duration;

/// A tool the model may call, described as a JSON-schema function.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    pub name: std::borrow::Cow<'static, str>,
    pub description: std::borrow::Cow<'static, str>,
    pub parameters: Value,
}

/// One model call: the whole conversation so far plus the tools offered.
#[derive(Debug)]
pub struct ChatRequest<'a> {
    pub model: &'a str,
    pub system: &'a str,
    pub history: &'a [Item],
    pub tools: &'a [ToolSpec],
    pub options: ModelOptions,
}

/// How the model should answer: sampling, length and format, each left to the
/// provider's default when unset.
#[derive(Debug, Clone, Default)]
pub struct ModelOptions {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_output_tokens: Option<u32>,
    /// Chat completions only (Anthropic has no such parameters).
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// The Responses API's `text.format` (`json_object`, `json_schema`); chat
    /// completions only.
    pub format: Option<Value>,
}

/// What a model stream yields, provider-neutral.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderEvent {
    Text(String),
    Reasoning(String),
    /// A tool call begins; `index` identifies it for the argument deltas.
    ToolCallStart {
        index: usize,
        call_id: String,
        name: String,
    },
    ToolCallArgs {
        index: usize,
        delta: String,
    },
    Usage {
        input: u64,
        output: u64,
    },
}

/// Where a step reads a model's answer from: an HTTP stream from a provider
/// ([`ModelStream`]), or an agent CLI relaying one (`crate::driver`).
pub trait EventSource: Send {
    /// The next event; `None` once the answer is complete.
    fn next(&mut self) -> impl std::future::Future<Output = Option<Result<ProviderEvent, ProviderError>>> + Send;
}

impl EventSource for ModelStream {
    async fn next(&mut self) -> Option<Result<ProviderEvent, ProviderError>> {
        ModelStream::next(self).await
    }
}

/// Decodes Anthropic Messages stream events given as JSON (as an agent CLI that
/// speaks the protocol relays them, one per line).
#[derive(Debug, Default)]
pub struct AnthropicEvents(anthropic::Decoder);

impl AnthropicEvents {
    /// The provider-neutral events of one Messages stream event.
    pub fn decode(&mut self, event: &Value) -> Result<Vec<ProviderEvent>, ProviderError> {
        let ev = SseEvent {
            event: event["type"].as_str().unwrap_or_default().to_string(),
            data: event.to_string(),
            has_data: true,
            ..Default::default()
        };
        let mut out = VecDeque::new();
        self.0.decode(&ev, &mut out)?;
        Ok(out.into())
    }
}

/// Decodes a chat-completions SSE stream from its bytes, as they pass through a
/// relay (`crate::relay`) on their way to the agent that asked for them.
#[derive(Default)]
pub struct ChatEvents {
    parser: SseParser,
    decoder: openai::Decoder,
}

impl ChatEvents {
    /// The provider-neutral events of the next bytes of the stream.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<ProviderEvent>, ProviderError> {
        let events = self.parser.feed(chunk);
        self.decode(events)
    }

    /// Whether the stream said it is over (`data: [DONE]`).
    pub fn done(&self) -> bool {
        self.decoder.done
    }

    /// The events of whatever the stream's last bytes left unterminated.
    pub fn finish(&mut self) -> Result<Vec<ProviderEvent>, ProviderError> {
        let events: Vec<SseEvent> = self.parser.finish().into_iter().collect();
        self.decode(events)
    }

    fn decode(&mut self, events: Vec<SseEvent>) -> Result<Vec<ProviderEvent>, ProviderError> {
        let mut out = VecDeque::new();
        for ev in events.iter().filter(|e| !e.is_empty()) {
            self.decoder.decode(ev, &mut out)?;
        }
        Ok(out.into())
    }
}

/// A configured endpoint of one protocol.
#[derive(Debug, Clone)]
pub struct Provider {
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_key: Option<String>,
    pub http: reqwest::Client,
    pub idle_timeout: Duration,
}

/// Decodes one protocol's SSE events.
enum Decoder {
    OpenAi(openai::Decoder),
    Anthropic(anthropic::Decoder),
}

/// A model answer being streamed; pull events with [`ModelStream::next`].
pub struct ModelStream {
    body: reqwest::Response,
    url: String,
    idle_timeout: Duration,
    parser: SseParser,
    decoder: Decoder,
    queue: VecDeque<ProviderEvent>,
    /// No more bytes will be read.
    finished: bool,
    /// An error was returned; nothing more is.
    failed: bool,
}

impl Provider {
    /// Sends the request and returns once the provider has accepted it.
    pub async fn start(&self, req: &ChatRequest<'_>) -> Result<ModelStream, ProviderError> {
        let history = history::normalize(req.history);
        let (url, builder, decoder) = match self.kind {
            ProviderKind::OpenAi => {
                let url = format!("{}/chat/completions", self.base_url.trim_end_matches('/'));
                let mut b = self.http.post(&url).json(&openai::body(req, &history));
                if let Some(key) = &self.api_key {
                    b = b.bearer_auth(key);
                }
                (url, b, Decoder::OpenAi(Default::default()))
            }
            ProviderKind::Anthropic => {
                let url = anthropic::endpoint(&self.base_url, "messages");
                let b = anthropic::headers(self.http.post(&url), self.api_key.as_deref())
                    .json(&anthropic::body(req, &history));
                (url, b, Decoder::Anthropic(Default::default()))
            }
        };
        let body = self.send(&url, builder).await?;
        Ok(ModelStream {
            body,
            url,
            idle_timeout: self.idle_timeout,
            parser: SseParser::default(),
            decoder,
            queue: VecDeque::new(),
            finished: false,
            failed: false,
        })
    }

    /// Model ids the provider reports.
    pub async fn list_models(&self) -> Result<Vec<String>, ProviderError> {
        let (url, builder) = match self.kind {
            ProviderKind::OpenAi => {
                let url = format!("{}/models", self.base_url.trim_end_matches('/'));
                let mut b = self.http.get(&url);
                if let Some(key) = &self.api_key {
                    b = b.bearer_auth(key);
                }
                (url, b)
            }
            ProviderKind::Anthropic => {
                let url = anthropic::endpoint(&self.base_url, "models");
                (url.clone(), anthropic::headers(self.http.get(&url), self.api_key.as_deref()))
            }
        };
        let resp = self.send(&url, builder.timeout(Duration::from_secs(5))).await?;
        let v: Value = resp.json().await.map_err(|e| ProviderError::Malformed(e.to_string()))?;
        let ids = v["data"].as_array().map(Vec::as_slice).unwrap_or_default();
        Ok(ids.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect())
    }

    async fn send(&self, url: &str, b: reqwest::RequestBuilder) -> Result<reqwest::Response, ProviderError> {
        let resp = match tokio::time::timeout(self.idle_timeout, b.send()).await {
            Err(_) => return Err(ProviderError::Timeout { url: url.into(), after: self.idle_timeout }),
            Ok(r) => r.map_err(|e| ProviderError::from_reqwest(url, e))?,
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(ProviderError::Status { status: status.as_u16(), url: url.into(), detail: error::error_detail(&body) })
    }
}

impl ModelStream {
    /// The next event; `None` once the answer is complete. After an error,
    /// the stream yields nothing more.
    pub async fn next(&mut self) -> Option<Result<ProviderEvent, ProviderError>> {
        let r = self.pull().await;
        if matches!(r, Some(Err(_))) {
            self.finished = true;
            self.failed = true;
            self.queue.clear();
        }
        r
    }

    async fn pull(&mut self) -> Option<Result<ProviderEvent, ProviderError>> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(e) = self.queue.pop_front() {
                return Some(Ok(e));
            }
            if self.finished {
                return (!self.complete()).then_some(Err(ProviderError::Interrupted));
            }
            let mut events = Vec::new();
            match tokio::time::timeout(self.idle_timeout, self.body.chunk()).await {
                Err(_) => {
                    return Some(Err(ProviderError::Timeout { url: self.url.clone(), after: self.idle_timeout }));
                }
                Ok(Err(e)) => return Some(Err(ProviderError::from_reqwest(&self.url, e))),
                Ok(Ok(Some(bytes))) => events.extend(self.parser.feed(&bytes).into_iter().filter(|e| !e.is_empty())),
                Ok(Ok(None)) => {
                    self.finished = true;
                    events.extend(self.parser.finish());
                }
            }
            if let Err(e) = self.decode(&events) {
                return Some(Err(e));
            }
        }
    }

    fn decode(&mut self, events: &[SseEvent]) -> Result<(), ProviderError> {
        for ev in events {
            match &mut self.decoder {
                Decoder::OpenAi(d) => d.decode(ev, &mut self.queue)?,
                Decoder::Anthropic(d) => d.decode(ev, &mut self.queue)?,
            }
            if self.complete() {
                // The protocol says the answer is over: stop reading.
                self.finished = true;
                break;
            }
        }
        Ok(())
    }

    fn complete(&self) -> bool {
        match &self.decoder {
            Decoder::OpenAi(d) => d.done || (self.finished && d.saw_finish),
            Decoder::Anthropic(d) => d.done,
        }
    }
}
