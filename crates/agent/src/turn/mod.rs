//! One turn of the agent: the user's input goes into the session, then the
//! loop calls the model, runs the tools it asks for and feeds their results
//! back, until the model answers or the step limit is hit.

pub(crate) mod context;
pub mod emitter;
mod prepare;
mod step;

pub use context::ContextPolicy;
pub use emitter::Emitter;
pub use prepare::{prepare, prepare_on, title};

use crate::api::events;
use crate::api::response::IncompleteDetails;
use crate::api::{FunctionCallOutputItem, Item, Response, ResponseError, Status};
use crate::busy::SessionGuard;
use crate::driver::{AnswerSource, Driver, DriverEvent, Launch};
use crate::ids::new_id;
use crate::provider::{ChatRequest, Provider, ProviderError, ToolSpec};
use crate::state::AppState;
use std::sync::Arc;
use step::StepError;

/// A validated turn, its session claimed and its input stored.
pub struct Turn {
    state: Arc<AppState>,
    _busy: SessionGuard,
    response: Response,
    history: Vec<Item>,
    provider: Provider,
    system: String,
    max_steps: u32,
    /// Another agent answering this turn (its CLI run once), instead of the loop.
    driver: Option<crate::driver::Driver>,
    /// The turn's user text, for a driven agent.
    prompt: String,
    /// Tools the client runs itself: a call to one ends the turn with the call in the
    /// output, for the client to answer with a `function_call_output`.
    client_tools: Vec<ToolSpec>,
    /// Its event log, when it streams or runs in the background: ended with the turn.
    live: Option<Arc<crate::live::LiveTurn>>,
    /// `tool_choice: "none"`: the model is offered no tools.
    no_tools: bool,
    /// How the request wants its context kept inside the model's window.
    policy: ContextPolicy,
    /// `history[0]` is the session's stored compaction summary.
    compacted: bool,
    /// The provider's input token count at the last model call, and how many history
    /// items it was sent.
    context_known: Option<(u64, usize)>,
    finished: bool,
}

/// How the loop ended.
enum End {
    Completed,
    StepLimit,
    Failed(ResponseError),
    Cancelled,
}

impl Turn {
    /// A span naming the session and response, so one grep follows the turn.
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!("turn", session = %self.response.session_id, response = %self.response.id)
    }

    /// The response as it stands (`in_progress` before the turn runs).
    pub fn response(&self) -> &Response {
        &self.response
    }

    /// Registers the turn's event log; it is ended when the turn ends, however it does.
    pub fn attach(&mut self, live: Arc<crate::live::LiveTurn>) {
        self.live = Some(live);
    }

    /// Runs the loop to its end and returns the final response.
    pub async fn run(mut self, mut emitter: Emitter) -> Response {
        emitter.keep_in(&self.state.store, &self.response.id);
        let end = match self.steps(&mut emitter).await {
            Ok(end) => end,
            Err(StepError::Cancelled) => End::Cancelled,
            Err(StepError::Provider(e)) => End::Failed(ResponseError { code: e.code().into(), message: e.to_string() }),
            Err(StepError::Internal(message)) => End::Failed(ResponseError { code: "internal_error".into(), message }),
        };
        let kind = match end {
            End::Completed => {
                self.response.status = Status::Completed;
                "response.completed"
            }
            End::StepLimit => {
                self.response.status = Status::Incomplete;
                self.response.incomplete_details = Some(IncompleteDetails { reason: "max_steps".into() });
                "response.incomplete"
            }
            End::Failed(err) => {
                tracing::warn!(code = %err.code, "turn failed: {}", err.message);
                self.response.status = Status::Failed;
                self.response.error = Some(err);
                "response.failed"
            }
            End::Cancelled => {
                tracing::info!("client went away; turn cancelled");
                self.response.status = Status::Cancelled;
                ""
            }
        };
        self.response.completed_at = Some(crate::ids::now_secs());
        if let Err(e) = self.state.store.put_response(&self.response) {
            tracing::error!("cannot store response: {e}");
        }
        self.finished = true;
        if !kind.is_empty() {
            let _ = emitter.emit(events::lifecycle(kind, &self.response)).await;
        }
        drop(emitter);
        if let Some(live) = &self.live {
            live.finish();
        }
        self.response.clone()
    }

    async fn steps(&mut self, emitter: &mut Emitter) -> Result<End, StepError> {
        emitter.emit(events::lifecycle("response.created", &self.response)).await?;
        emitter.emit(events::lifecycle("response.in_progress", &self.response)).await?;
        if let Some(driver) = self.driver.clone() {
            return self.driven(&driver, emitter).await;
        }
        let mut tools = crate::tools::specs(&self.state.tools);
        // A client's tool of the same name wins over an MCP server's.
        let mcp = self.state.mcp.specs().await;
        tools.extend(mcp.into_iter().filter(|t| !self.client_tools.iter().any(|c| c.name == t.name)));
        tools.extend(self.client_tools.iter().cloned());
        for step in 1..=self.max_steps {
            // The last step offers no tools, so the model has to answer.
            let offered: &[ToolSpec] = if step < self.max_steps && !self.no_tools { &tools } else { &[] };
            let skip = self.fit_context(offered, emitter).await?;
            let first_new = self.response.output.len();
            let input_before = self.response.usage.as_ref().map_or(0, |u| u.input_tokens);
            let result = self.model_call(offered, skip, emitter).await;
            if skip == 0 {
                let input = self.response.usage.as_ref().map_or(0, |u| u.input_tokens) - input_before;
                self.note_usage(input, self.history.len());
            }
            let calls = self.keep_completed(first_new)?;
            result?;
            if calls.is_empty() {
                return Ok(End::Completed);
            }
            let mut for_client = false;
            for (name, call_id, arguments) in calls {
                if !offered.is_empty() && self.client_tools.iter().any(|t| t.name == name) {
                    // The client runs it and answers in its next request.
                    for_client = true;
                    continue;
                }
                self.tool_output_started(emitter, &call_id).await?;
                tracing::debug!(tool = %name, call = %call_id, "running tool");
                let output = if offered.is_empty() && self.no_tools {
                    "not run: this turn offered no tools (tool_choice: none)".to_string()
                } else if offered.is_empty() {
                    "not run: the step limit of this turn was reached".to_string()
                } else {
                    let timeout = self.state.config.limits.shell_timeout;
                    match self.state.mcp.call(&name, &arguments, timeout).await {
                        Some(output) => output,
                        None => crate::tools::run(&self.state.tools, &name, &arguments).await,
                    }
                };
                self.tool_output_done(emitter, call_id, output).await?;
            }
            if for_client {
                return Ok(End::Completed);
            }
            if offered.is_empty() {
                return Ok(End::StepLimit);
            }
        }
        Ok(End::StepLimit)
    }

    /// The turn answered by a driven agent: its model answers streamed as they come,
    /// the tools it ran and their results as items, its session kept for the next turn.
    async fn driven(&mut self, driver: &Driver, emitter: &mut Emitter) -> Result<End, StepError> {
        let store = self.state.store.clone();
        let session = self.response.session_id.clone();
        let internal = |e: crate::store::StoreError| StepError::Internal(format!("The agent's store failed: {e}"));
        let resume = store.external_session(&session, driver.name()).map_err(internal)?;
        let llm = &self.state.config.llm;
        let (base_url, api_key) = match driver {
            // The OpenAI settings: Codex speaks the Responses API (so does the managed
            // proxy), Hermes chat completions.
            Driver::Codex { .. } | Driver::Hermes { .. } | Driver::OpenClaw { .. } => {
                (&llm.openai_base_url, llm.openai_api_key.as_ref())
            }
            // Its Anthropic settings when it has them, else berth's LLM settings (the
            // managed proxy speaks Messages too, with the instance's token as the key).
            Driver::ClaudeCode { .. } => match (&llm.anthropic_api_key, &llm.openai_api_key) {
                (None, Some(key)) => (&llm.openai_base_url, Some(key)),
                (key, _) => (&llm.anthropic_base_url, key.as_ref()),
            },
        };
        let launch = Launch {
            prompt: &self.prompt,
            model: &self.response.model,
            resume: resume.as_deref(),
            workdir: &self.state.config.workdir,
            user: self.state.config.tool_user,
            base_url,
            api_key: api_key.map(String::as_str),
            instructions: self.response.instructions.as_deref(),
            http: self.state.http(),
        };
        let mut rx = driver.start(&launch).map_err(|e| {
            StepError::Provider(ProviderError::Upstream(format!("{} could not be started: {e}", driver.name())))
        })?;
        let mut pending: Option<DriverEvent> = None;
        loop {
            let ev = match pending.take() {
                Some(ev) => ev,
                None => rx.recv().await.ok_or(StepError::Provider(ProviderError::Interrupted))?,
            };
            match ev {
                DriverEvent::Session(id) => {
                    if resume.as_deref() != Some(id.as_str()) {
                        store.set_external_session(&session, driver.name(), &id).map_err(internal)?;
                    }
                }
                DriverEvent::Model(first) => {
                    let first_new = self.response.output.len();
                    let mut answer = AnswerSource { first: Some(first), rx: &mut rx, leftover: None };
                    let result = step::run(&mut answer, &mut self.response, emitter).await;
                    pending = answer.leftover.take();
                    self.keep_completed(first_new)?;
                    result?;
                }
                DriverEvent::ModelEnd => {}
                DriverEvent::ToolResult { call_id, output } => {
                    self.tool_output_started(emitter, &call_id).await?;
                    self.tool_output_done(emitter, call_id, output).await?;
                }
                DriverEvent::Done(Ok(())) => return Ok(End::Completed),
                DriverEvent::Done(Err(message)) => {
                    return Ok(End::Failed(ResponseError { code: "agent_error".into(), message }))
                }
            }
        }
    }

    /// One model call, sent the history but its first `skip` items.
    async fn model_call(&mut self, tools: &[ToolSpec], skip: usize, emitter: &mut Emitter) -> Result<(), StepError> {
        let req = ChatRequest {
            model: &self.response.model,
            system: &self.system,
            history: &self.history[skip..],
            tools,
            options: self.model_options(),
        };
        let mut stream = self.provider.start(&req).await.map_err(StepError::Provider)?;
        step::run(&mut stream, &mut self.response, emitter).await
    }

    /// The request's sampling, length and format, as the response records them.
    fn model_options(&self) -> crate::provider::ModelOptions {
        let r = &self.response;
        let nonzero = |v: f64| (v != 0.0).then_some(v);
        crate::provider::ModelOptions {
            temperature: r.temperature,
            top_p: r.top_p,
            max_output_tokens: r.max_output_tokens,
            presence_penalty: nonzero(r.presence_penalty),
            frequency_penalty: nonzero(r.frequency_penalty),
            format: r.text.get("format").filter(|f| f["type"] != "text").cloned(),
        }
    }

    /// Stores the completed items of the last model call in the session
    /// (cut-off ones stay only in the response) and returns its tool calls.
    fn keep_completed(&mut self, first_new: usize) -> Result<Vec<(String, String, String)>, StepError> {
        let done: Vec<Item> = self.response.output[first_new..]
            .iter()
            .filter(|i| match i {
                Item::Message(m) => m.status == "completed",
                Item::FunctionCall(c) => c.status == "completed",
                _ => true,
            })
            .cloned()
            .collect();
        self.persist(&done)?;
        Ok(done
            .into_iter()
            .filter_map(|i| match i {
                Item::FunctionCall(c) => Some((c.name, c.call_id, c.arguments)),
                _ => None,
            })
            .collect())
    }

    /// Appends items to the session, and stores the response as it stands so
    /// `GET /v1/responses/{id}` shows a turn's progress.
    fn persist(&mut self, items: &[Item]) -> Result<(), StepError> {
        let store = &self.state.store;
        store
            .append_items(&self.response.session_id, &self.response.id, items)
            .and_then(|()| store.put_response(&self.response))
            .map_err(|e| StepError::Internal(format!("The agent could not save the session: {e}")))?;
        self.history.extend_from_slice(items);
        Ok(())
    }

    async fn tool_output_started(&mut self, emitter: &mut Emitter, call_id: &str) -> Result<(), StepError> {
        let item = Item::FunctionCallOutput(FunctionCallOutputItem {
            id: new_id("fco"),
            call_id: call_id.into(),
            output: String::new(),
            status: "in_progress".into(),
        });
        emitter.emit(events::item_added(self.response.output.len(), &item)).await?;
        self.response.output.push(item);
        Ok(())
    }

    async fn tool_output_done(
        &mut self,
        emitter: &mut Emitter,
        call_id: String,
        output: String,
    ) -> Result<(), StepError> {
        let item = FunctionCallOutputItem { id: String::new(), call_id, output, status: "completed".into() };
        // Fill in the placeholder `tool_output_started` pushed last.
        let idx = self.response.output.len() - 1;
        let item = match &mut self.response.output[idx] {
            Item::FunctionCallOutput(o) => {
                *o = FunctionCallOutputItem { id: o.id.clone(), ..item };
                Item::FunctionCallOutput(o.clone())
            }
            _ => return Err(StepError::Internal("tool output out of order".into())),
        };
        self.persist(std::slice::from_ref(&item))?;
        emitter.emit(events::item_done(idx, &item)).await?;
        Ok(())
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Dropped mid-turn: the client disconnected, or the turn was cancelled, and
        // the task was aborted. Stored first, so a follower that sees the end reads it.
        if !self.finished {
            tracing::info!(response = %self.response.id, "turn dropped; marking it cancelled");
            let _ = self.state.store.cancel_response(&self.response.id);
            if let Some(live) = &self.live {
                live.finish();
            }
        }
    }
}
