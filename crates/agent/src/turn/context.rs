//! Keeping a session inside its model's context window: the size of the next model
//! call is estimated before it is sent (the provider's count at the last call plus
//! what was added since, never less than ~4 bytes a token); past the compaction
//! threshold the older turns are summarised by the model into a `compaction` item
//! that the model is sent instead of them (they stay stored in full); what still does
//! not fit is dropped from the front with `truncation: "auto"`, or fails the turn
//! with `context_length_exceeded` before anything is sent.

use super::emitter::Emitter;
use super::step::StepError;
use super::Turn;
use crate::api::events;
use crate::api::{parse_input, CompactionItem, ContentPart, Item, MessageItem, Role, Usage};
use crate::error::ApiError;
use crate::ids::{new_id, now_secs};
use crate::provider::{ChatRequest, ModelOptions, Provider, ProviderError, ProviderEvent, ToolSpec};

/// What the summarising call is told to do.
const SUMMARY_SYSTEM: &str = "You compact conversations between a user and an AI agent that works on its own \
computer. Write a summary that lets the agent carry on as if it still had the whole conversation: what the user \
wants and prefers, what was decided, facts and results learned, files, commands and names that matter, and what is \
still open. Be specific and brief; write only the summary.";

const SUMMARY_REQUEST: &str = "Summarise the conversation so far, as instructed.";

/// Tokens a piece of JSON-ish text costs, estimated (~4 bytes a token).
pub(crate) fn text_tokens(text: &str) -> u64 {
    text.len() as u64 / 4
}

/// Estimated tokens of one history item as a provider is sent it.
pub(crate) fn item_tokens(item: &Item) -> u64 {
    let bytes = match item {
        // An image costs about as much as 1,000 tokens of text.
        Item::Message(m) => m
            .content
            .iter()
            .map(|p| match p {
                ContentPart::InputImage { .. } => 4000,
                p => p.text().len(),
            })
            .sum(),
        Item::FunctionCall(c) => c.name.len() + c.arguments.len() + c.call_id.len(),
        Item::FunctionCallOutput(o) => o.output.len() + o.call_id.len(),
        Item::Reasoning(_) => 0,
        Item::Compaction(c) => c.encrypted_content.len() + 80,
    };
    bytes as u64 / 4 + 4
}

pub(crate) fn items_tokens(items: &[Item]) -> u64 {
    items.iter().map(item_tokens).sum()
}

fn tools_tokens(tools: &[ToolSpec]) -> u64 {
    tools
        .iter()
        .map(|t| text_tokens(&t.name) + text_tokens(&t.description) + text_tokens(&t.parameters.to_string()))
        .sum()
}

fn is_user_message(item: &Item) -> bool {
    matches!(item, Item::Message(m) if m.role == Role::User)
}

/// Whether the history may be cut before item `i`: never between a tool call and
/// its result.
fn cuttable(history: &[Item], i: usize) -> bool {
    i > 0
        && i < history.len()
        && !matches!(history[i], Item::FunctionCallOutput(_))
        && !matches!(history[i - 1], Item::FunctionCall(_))
}

/// Where to cut `history` so that what follows costs at most `keep` tokens: at the
/// start of the oldest turn that fits, else at the start of the newest turn (the one
/// running), else (a turn alone outgrew the window) at the oldest point inside it
/// that fits. `first` is the lowest cut that summarises something new (2 when
/// `history[0]` is the session's summary already). None: nothing to summarise.
pub(crate) fn choose_cut(history: &[Item], first: usize, keep: u64) -> Option<usize> {
    let len = history.len();
    let mut tail = vec![0u64; len + 1];
    for i in (0..len).rev() {
        tail[i] = tail[i + 1] + item_tokens(&history[i]);
    }
    let last_user = (0..len).rev().find(|&i| is_user_message(&history[i]));
    let turn_starts = (first..len).filter(|&i| is_user_message(&history[i]) && cuttable(history, i));
    if let Some(i) = turn_starts.clone().find(|&i| tail[i] <= keep) {
        return Some(i);
    }
    if let Some(i) = last_user.filter(|&i| i >= first && cuttable(history, i)) {
        return Some(i);
    }
    let inside: Vec<usize> = (first..len).filter(|&i| cuttable(history, i)).collect();
    inside.iter().copied().find(|&i| tail[i] <= keep).or_else(|| inside.last().copied())
}

/// Shortens `items` (their text first, then the oldest ones) until they fit `budget`
/// tokens, for the summarising call: a summary of most of a long history beats none.
fn clip_to(items: &[Item], budget: u64) -> Vec<Item> {
    let mut out = items.to_vec();
    if items_tokens(&out) > budget && !out.is_empty() {
        let cap = ((budget * 4) / out.len() as u64).max(256) as usize;
        for item in &mut out {
            clip_item(item, cap);
        }
    }
    while out.len() > 1 && items_tokens(&out) > budget {
        out.remove(0);
    }
    out
}

fn clip_item(item: &mut Item, cap: usize) {
    let clip = |s: &mut String| {
        crate::ids::cut(s, cap, " …[cut]");
    };
    match item {
        Item::Message(m) => m.content.iter_mut().for_each(|p| match p {
            ContentPart::InputText { text } | ContentPart::OutputText { text, .. } => clip(text),
            ContentPart::InputImage { .. } => {}
        }),
        Item::FunctionCall(c) => clip(&mut c.arguments),
        Item::FunctionCallOutput(o) => clip(&mut o.output),
        Item::Compaction(c) => clip(&mut c.encrypted_content),
        Item::Reasoning(_) => {}
    }
}

/// Asks the model for a summary of `old`; answers the compaction item and the
/// call's token counts.
pub(crate) async fn summarise(
    provider: &Provider,
    model: &str,
    old: &[Item],
    window: u64,
) -> Result<(Item, Usage), ProviderError> {
    let max_output = (window / 8).clamp(256, 4096);
    let mut history = clip_to(old, (window * 8 / 10).saturating_sub(max_output + text_tokens(SUMMARY_SYSTEM) + 64));
    history.push(Item::Message(MessageItem {
        id: String::new(),
        role: Role::User,
        content: vec![ContentPart::InputText { text: SUMMARY_REQUEST.into() }],
        status: "completed".into(),
    }));
    let req = ChatRequest {
        model,
        system: SUMMARY_SYSTEM,
        history: &history,
        tools: &[],
        options: ModelOptions { max_output_tokens: Some(max_output as u32), ..Default::default() },
    };
    let mut stream = provider.start(&req).await?;
    let (mut text, mut usage) = (String::new(), Usage::default());
    while let Some(ev) = stream.next().await {
        match ev? {
            ProviderEvent::Text(t) => text.push_str(&t),
            ProviderEvent::Usage { input, output } => usage.add(input, output),
            _ => {}
        }
    }
    if text.trim().is_empty() {
        return Err(ProviderError::Malformed("the model answered an empty summary".into()));
    }
    Ok((Item::Compaction(CompactionItem { id: new_id("cmp"), encrypted_content: text.trim().to_string() }), usage))
}

/// How a request asked its context to be handled.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContextPolicy {
    /// `truncation: "auto"`: drop the oldest items of what does not fit.
    pub truncate: bool,
    /// `context_management: [{"type": "compaction", "compact_threshold": n}]`.
    pub compact_threshold: Option<u64>,
}

impl Turn {
    /// Makes the next model call fit its model's window, compacting the session when
    /// it passed its threshold; answers how many of the oldest history items to leave
    /// out of the call (`truncation: "auto"`).
    pub(super) async fn fit_context(&mut self, tools: &[ToolSpec], emitter: &mut Emitter) -> Result<usize, StepError> {
        let cfg = &self.state.config.context;
        let window = cfg.window(&self.response.model);
        let threshold = self.policy.compact_threshold.unwrap_or(window * cfg.compact_at_percent / 100).min(window);
        let reserve = self.response.max_output_tokens.map_or(0, u64::from).min(window / 4);
        let fixed = text_tokens(&self.system) + tools_tokens(tools);
        let compact = cfg.auto_compact || self.policy.compact_threshold.is_some();
        if compact && fixed + self.history_tokens() > threshold {
            // What stays verbatim is well under the threshold, so the next compaction
            // waits until as much again has come.
            let keep = (window / 4).min(threshold / 2);
            self.compact(window, keep, emitter).await?;
        }
        let needed = fixed + self.history_tokens() + reserve;
        if needed <= window {
            return Ok(0);
        }
        if !self.policy.truncate {
            return Err(StepError::Provider(ProviderError::ContextOverflow {
                model: self.response.model.clone(),
                estimated: needed,
                window,
            }));
        }
        let over = needed - window;
        let mut dropped = 0;
        let mut skip = 0;
        for i in 1..self.history.len() {
            dropped += item_tokens(&self.history[i - 1]);
            if cuttable(&self.history, i) {
                skip = i;
                if dropped >= over {
                    break;
                }
            }
        }
        tracing::info!(skip, window, "truncation: the oldest items of the session are left out of this call");
        Ok(skip)
    }

    /// The estimated tokens of the history: the provider's count at the last call
    /// plus what came since, or ~4 bytes a token, whichever is more.
    fn history_tokens(&self) -> u64 {
        let estimate = items_tokens(&self.history);
        match self.context_known {
            Some((tokens, len)) if len <= self.history.len() => {
                estimate.max(tokens + items_tokens(&self.history[len..]))
            }
            _ => estimate,
        }
    }

    /// Records the provider's input token count of the call just made, sent the
    /// whole history.
    pub(super) fn note_usage(&mut self, input_tokens: u64, sent: usize) {
        if input_tokens == 0 {
            return;
        }
        self.context_known = Some((input_tokens, sent));
        if let Err(e) = self.state.store.set_context_usage(&self.response.session_id, input_tokens, sent) {
            tracing::warn!("cannot record the context's size: {e}");
        }
    }

    /// Summarises the older turns into a compaction item, kept in the session and
    /// shown in the response's output. A failed summary is logged and the turn goes
    /// on (the window may still hold it).
    async fn compact(&mut self, window: u64, keep: u64, emitter: &mut Emitter) -> Result<(), StepError> {
        let first = if self.compacted { 2 } else { 1 };
        let Some(cut) = choose_cut(&self.history, first, keep) else {
            return Ok(());
        };
        // Not worth a model call for a sliver (a threshold the fixed part alone passes).
        if items_tokens(&self.history[first - 1..cut]) < keep / 2 {
            return Ok(());
        }
        let (item, usage) = match summarise(&self.provider, &self.response.model, &self.history[..cut], window).await {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(code = e.code(), "compaction failed: {e}");
                return Ok(());
            }
        };
        let summarised = cut - usize::from(self.compacted);
        self.state
            .store
            .compact(&self.response.session_id, &self.response.id, &item, summarised)
            .map_err(|e| StepError::Internal(format!("The agent could not save the session's compaction: {e}")))?;
        tracing::info!(summarised, kept = self.history.len() - cut, "session compacted");
        self.response.usage.get_or_insert_with(Usage::default).add(usage.input_tokens, usage.output_tokens);
        self.history.splice(..cut, [item.clone()]);
        self.compacted = true;
        self.context_known = None;
        let idx = self.response.output.len();
        emitter.emit(events::item_added(idx, &item)).await?;
        self.response.output.push(item.clone());
        emitter.emit(events::item_done(idx, &item)).await?;
        Ok(())
    }
}

/// `POST /v1/responses/compact`: a session's history (named by `session_id`,
/// `conversation` or `previous_response_id`), or a given `input`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct CompactRequest {
    pub model: Option<String>,
    pub input: Option<serde_json::Value>,
    pub session_id: Option<String>,
    pub conversation: Option<serde_json::Value>,
    pub previous_response_id: Option<String>,
    pub provider: Option<String>,
}

/// Compacts on demand. A session: everything before its newest turn is summarised into
/// a compaction item kept in the session (the items stay stored); the answer's `output`
/// is what the model is sent from then on (the item, then the newest turn). An `input`:
/// its user messages and a compaction item summarising all of it, for the client to
/// send as the next input (OpenAI's stateless flow).
pub async fn compact_on_demand(
    state: &std::sync::Arc<crate::state::AppState>,
    req: CompactRequest,
) -> Result<serde_json::Value, ApiError> {
    // The specification makes `model` required here (not on turns, where the agent's
    // default applies).
    let model = req.model.clone().filter(|m| !m.trim().is_empty()).ok_or_else(|| ApiError::missing_param("model"))?;
    let requested = match req.provider.as_deref() {
        None => None,
        Some(p) => Some(crate::config::ProviderKind::parse(p).ok_or_else(|| {
            ApiError::invalid_param("provider", format!("Unknown provider '{p}': use 'openai' or 'anthropic'."))
        })?),
    };
    let provider = state.provider_for(requested, &model);
    let window = state.config.context.window(&model);
    let id = new_id("cmp");
    let mut usage = Usage::default();
    let session = compact_target(state, &req)?;
    let output: Vec<Item> = match session {
        None => {
            let input = parse_input(req.input)?;
            let (item, u) = summarise(&provider, &model, &input, window).await.map_err(|e| ApiError::upstream(&e))?;
            usage = u;
            input.into_iter().filter(is_user_message).chain([item]).collect()
        }
        Some(session) => {
            let _busy = state.busy.try_claim(&session).ok_or_else(|| ApiError::session_busy(&session))?;
            let store = &state.store;
            let context = store.context(&session)?;
            let compacted = context.summary.is_some();
            let history: Vec<Item> = context.summary.into_iter().chain(context.items).collect();
            let first = if compacted { 2 } else { 1 };
            match history.iter().rposition(is_user_message).filter(|&i| i >= first) {
                // Nothing older than the newest turn: the history stands as it is.
                None => history,
                Some(cut) => {
                    let (item, u) = summarise(&provider, &model, &history[..cut], window)
                        .await
                        .map_err(|e| ApiError::upstream(&e))?;
                    usage = u;
                    store.compact(&session, &id, &item, cut - usize::from(compacted))?;
                    tracing::info!(session = %session, summarised = cut, "session compacted on request");
                    std::iter::once(item).chain(history[cut..].iter().cloned()).collect()
                }
            }
        }
    };
    Ok(serde_json::json!({
        "id": id,
        "object": "response.compaction",
        "created_at": now_secs(),
        "output": output,
        "usage": usage,
    }))
}

/// The session a compact request names, if any (checked to exist and agree).
fn compact_target(state: &crate::state::AppState, req: &CompactRequest) -> Result<Option<String>, ApiError> {
    let mut named: Vec<(&str, String)> = Vec::new();
    if let Some(id) = &req.session_id {
        named.push(("session_id", id.clone()));
    }
    match &req.conversation {
        None | Some(serde_json::Value::Null) => {}
        Some(c) => {
            let id = c.as_str().or_else(|| c.get("id").and_then(|v| v.as_str())).ok_or_else(|| {
                ApiError::invalid_param("conversation", "'conversation' is a conversation id or {\"id\": ...}.")
            })?;
            if state.store.session(id)?.is_none() {
                return Err(crate::routes::conversation_not_found(id));
            }
            named.push(("conversation", id.to_string()));
        }
    }
    if let Some(prev) = &req.previous_response_id {
        let r = state.store.response(prev)?.filter(|r| r.store).ok_or_else(|| {
            ApiError::not_found("previous_response_not_found", format!("Previous response with id '{prev}' not found."))
        })?;
        named.push(("previous_response_id", r.session_id));
    }
    let Some((param, id)) = named.first().cloned() else {
        return Ok(None);
    };
    if let Some((other, _)) = named.iter().find(|(_, s)| *s != id) {
        return Err(ApiError::invalid_param(other, format!("'{other}' and '{param}' name different sessions.")));
    }
    if req.input.is_some() {
        return Err(ApiError::invalid_param(
            "input",
            format!(
                "Compacting a stored session takes no 'input' ('{param}' names it); send the input in the next turn."
            ),
        ));
    }
    if state.store.session(&id)?.is_none() {
        return Err(ApiError::not_found("session_not_found", format!("No session with id '{id}'.")));
    }
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FunctionCallItem, FunctionCallOutputItem};

    fn msg(role: Role, text: &str) -> Item {
        Item::Message(MessageItem {
            id: String::new(),
            role,
            content: vec![ContentPart::InputText { text: text.into() }],
            status: "completed".into(),
        })
    }

    fn call() -> Item {
        Item::FunctionCall(FunctionCallItem {
            id: String::new(),
            call_id: "c".into(),
            name: "shell".into(),
            arguments: "{}".into(),
            status: "completed".into(),
        })
    }

    fn out(text: &str) -> Item {
        Item::FunctionCallOutput(FunctionCallOutputItem {
            id: String::new(),
            call_id: "c".into(),
            output: text.into(),
            status: "completed".into(),
        })
    }

    #[test]
    fn cuts_at_the_oldest_turn_that_fits_and_never_inside_a_tool_call() {
        let long = "x".repeat(400); // ~100 tokens
        let h = vec![
            msg(Role::User, &long),
            msg(Role::Assistant, &long),
            msg(Role::User, &long),
            call(),
            out(&long),
            msg(Role::Assistant, &long),
            msg(Role::User, "now"),
        ];
        // Room for the last turn and a half: the newest turn start that fits.
        assert_eq!(choose_cut(&h, 1, 250), Some(6));
        // Room for everything after the first turn.
        assert_eq!(choose_cut(&h, 1, 1000), Some(2));
        // The running turn is kept even when it alone is over the budget.
        assert_eq!(choose_cut(&h, 1, 1), Some(6));
        // One turn of many tool calls: cut inside it, between a result and what follows.
        let h = vec![msg(Role::User, "go"), call(), out(&long), call(), out(&long), msg(Role::Assistant, "done")];
        assert_eq!(choose_cut(&h, 1, 150), Some(3));
        assert_eq!(choose_cut(&h[..1], 1, 10), None, "nothing older than the running turn");
    }

    #[test]
    fn clipping_keeps_the_newest_items_whole_when_it_can() {
        let h = vec![msg(Role::User, &"a".repeat(40_000)), msg(Role::User, "short")];
        let clipped = clip_to(&h, 1000);
        assert!(items_tokens(&clipped) <= 1000, "{}", items_tokens(&clipped));
        assert!(matches!(clipped.last(), Some(Item::Message(m)) if m.text() == "short"));
    }
}
