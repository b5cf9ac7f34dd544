//! Turning a `POST /v1/responses` body into a ready [`Turn`]: validate, pick
//! the session, model and provider, claim the session, store the input.
//! Everything that can be refused with a 4xx is refused here, before any
//! stream starts.

use super::Turn;
use crate::api::{parse_input, CreateResponse, Item, Response, Role, Status};
use crate::config::ProviderKind;
use crate::error::ApiError;
use crate::ids::{new_id, now_secs};
use crate::state::AppState;
use std::sync::Arc;

/// Validates the request and sets the turn up.
pub fn prepare(state: &Arc<AppState>, mut req: CreateResponse) -> Result<Turn, ApiError> {
    let input = parse_input(req.input.take())?;
    let model = req
        .model
        .take()
        .filter(|m| !m.trim().is_empty())
        .or_else(|| state.config.llm.default_model.clone())
        .ok_or_else(|| {
            ApiError::invalid_param("model", "No 'model' given and the agent has no default (set BERTH_MODEL).")
        })?;
    let requested = match req.provider.as_deref() {
        None => None,
        Some(p) => Some(ProviderKind::parse(p).ok_or_else(|| {
            ApiError::invalid_param(
                "provider",
                format!("Unknown provider '{p}': use 'openai' (chat completions) or 'anthropic'."),
            )
        })?),
    };
    let provider = state.provider_for(requested, &model);
    let drivers = &state.config.drivers;
    let driver = match req.agent.as_deref().map(str::trim) {
        None | Some("") => drivers.first().cloned(),
        Some("berth-agent") => None,
        Some(name) => match drivers.iter().find(|d| d.name() == name) {
            Some(d) => Some(d.clone()),
            None => {
                let have: Vec<String> = std::iter::once("berth-agent")
                    .chain(drivers.iter().map(|d| d.name()))
                    .map(|n| format!("`{n}`"))
                    .collect();
                return Err(ApiError::invalid_param(
                    "agent",
                    format!("This instance has no agent '{name}': it has {}.", have.join(", ")),
                ));
            }
        },
    };
    // A driven agent takes the turn's new user text as its prompt.
    let prompt = input
        .iter()
        .filter_map(|i| match i {
            Item::Message(m) if m.role == Role::User => Some(m.text()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n\n");
    if driver.is_some() && prompt.trim().is_empty() {
        return Err(ApiError::invalid_param("input", "The agent needs a user message to answer."));
    }

    let store = &state.store;
    let existing = match (&req.session_id, &req.previous_response_id) {
        (None, None) => None,
        (Some(id), prev) => {
            if store.session(id)?.is_none() {
                return Err(ApiError::not_found("session_not_found", format!("No session with id '{id}'.")));
            }
            if let Some(prev) = prev {
                let owner = store.response(prev)?.map(|r| r.session_id);
                if owner.as_deref() != Some(id.as_str()) {
                    return Err(ApiError::invalid_param(
                        "previous_response_id",
                        format!("Response '{prev}' does not belong to session '{id}'."),
                    ));
                }
            }
            Some(id.clone())
        }
        (None, Some(prev)) => match store.response(prev)? {
            Some(r) => Some(r.session_id),
            None => {
                return Err(ApiError::not_found(
                    "previous_response_not_found",
                    format!("Previous response with id '{prev}' not found."),
                ))
            }
        },
    };

    let now = now_secs();
    let (session_id, busy) = match existing {
        Some(id) => {
            let busy = state.busy.try_claim(&id).ok_or_else(|| ApiError::session_busy(&id))?;
            // It may have been deleted between the check and the claim.
            if store.session(&id)?.is_none() {
                return Err(ApiError::not_found("session_not_found", format!("No session with id '{id}'.")));
            }
            (id, busy)
        }
        None => {
            let id = new_id("sess");
            let busy = state.busy.try_claim(&id).ok_or_else(|| ApiError::session_busy(&id))?;
            store.create_session(&id, &title(&input), now)?;
            (id, busy)
        }
    };

    let mut history: Vec<Item> = store.history(&session_id)?.into_iter().map(|h| h.item).collect();
    let response = Response {
        id: new_id("resp"),
        object: "response".into(),
        created_at: now,
        status: Status::InProgress,
        model,
        output: Vec::new(),
        usage: None,
        error: None,
        incomplete_details: None,
        instructions: req.instructions.clone(),
        metadata: req.metadata.take().unwrap_or_default(),
        previous_response_id: req.previous_response_id.take(),
        parallel_tool_calls: true,
        background: req.background.unwrap_or(false),
        tool_choice: "auto".into(),
        tools: Vec::new(),
        temperature: req.temperature,
        top_p: req.top_p,
        max_output_tokens: req.max_output_tokens,
        session_id: session_id.clone(),
    };
    store.put_response(&response)?;
    store.append_items(&session_id, &response.id, &input)?;
    history.extend(input);

    let limits = &state.config.limits;
    let max_steps = req.max_tool_calls.map(|n| (n + 1).min(limits.max_steps)).unwrap_or(limits.max_steps).max(1);
    tracing::info!(session = %session_id, response = %response.id, model = %response.model,
        provider = ?provider.kind, "turn starts");
    Ok(Turn {
        state: state.clone(),
        _busy: busy,
        system: system_prompt(state, req.instructions.as_deref()),
        response,
        history,
        provider,
        max_steps,
        driver,
        prompt,
        live: None,
        finished: false,
    })
}

/// A session's title: the start of its first user message.
fn title(input: &[Item]) -> String {
    let text = input
        .iter()
        .find_map(|i| match i {
            Item::Message(m) if m.role == Role::User => Some(m.text()),
            _ => None,
        })
        .unwrap_or_default();
    let line = text.lines().next().unwrap_or("").trim();
    match line.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

fn system_prompt(state: &AppState, instructions: Option<&str>) -> String {
    let mut s = format!(
        "You are an agent with your own computer. Use your tools to act on it: `shell` runs \
         a command, `read_file`, `write_file` and `list_dir` work on files, and `memory_read` / \
         `memory_write` keep notes that persist across all your sessions. The working directory \
         is {}. Do what is asked, check the results, then answer briefly.",
        state.config.workdir.display()
    );
    if let Some(extra) = instructions.filter(|i| !i.trim().is_empty()) {
        s.push_str("\n\n");
        s.push_str(extra);
    }
    s
}
