//! Turning a `POST /v1/responses` body into a ready [`Turn`]: validate, pick
//! the session, model and provider, claim the session, store the input.
//! Everything that can be refused with a 4xx is refused here, before any
//! stream starts.

use super::{ContextPolicy, Turn};
use crate::api::{parse_input, CreateResponse, Item, Response, Role, Status};
use crate::config::ProviderKind;
use crate::error::ApiError;
use crate::ids::{new_id, now_secs};
use crate::provider::ToolSpec;
use crate::state::AppState;
use std::sync::Arc;

/// Validates the request and sets the turn up.
pub fn prepare(state: &Arc<AppState>, req: CreateResponse) -> Result<Turn, ApiError> {
    prepare_on(state, req, &std::collections::HashSet::new())
}

/// [`prepare`], where the responses in `local` (made with `store: false` on the
/// WebSocket connection asking) may be continued too; other `store: false` responses
/// are not found.
pub fn prepare_on(
    state: &Arc<AppState>,
    mut req: CreateResponse,
    local: &std::collections::HashSet<String>,
) -> Result<Turn, ApiError> {
    let store = &state.store;
    let visible = |id: &str| -> Result<Option<Response>, ApiError> {
        Ok(store.response(id)?.filter(|r| r.store || local.contains(&r.id)))
    };
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
    let images = input.iter().any(|i| {
        matches!(i, Item::Message(m) if m.content.iter().any(|p| matches!(p, crate::api::ContentPart::InputImage { .. })))
    });
    if let (Some(d), true) = (&driver, images) {
        return Err(ApiError::invalid_param(
            "input",
            format!(
                "{} is given the turn's text only: send images to the agent's own loop ('agent': 'berth-agent').",
                d.name()
            ),
        ));
    }
    if driver.is_some() && prompt.trim().is_empty() {
        return Err(ApiError::invalid_param("input", "The agent needs a user message to answer."));
    }
    let policy = context_policy(&req)?;
    if req.background == Some(true) && req.store == Some(false) {
        return Err(ApiError::invalid_param(
            "store",
            "A background turn is fetched later, so it needs its response stored: 'store': false is refused with 'background': true.",
        ));
    }
    let text = text_param(req.text.take())?;
    let no_tools = tool_choice_param(req.tool_choice.as_ref())?;
    let given_tools = req.tools.take().unwrap_or_default();
    let client_tools = client_tools(&given_tools, &crate::tools::specs(&state.tools))?;
    if let (Some(d), false) = (&driver, client_tools.is_empty()) {
        return Err(ApiError::invalid_param(
            "tools",
            format!(
                "Tools the client runs need the agent's own loop ('agent': 'berth-agent'); {} runs its own tools.",
                d.name()
            ),
        ));
    }

    let conversation = match req.conversation.take() {
        None | Some(serde_json::Value::Null) => None,
        Some(c) => {
            let id = c.as_str().or_else(|| c.get("id").and_then(|v| v.as_str())).ok_or_else(|| {
                ApiError::invalid_param("conversation", "'conversation' is a conversation id or {\"id\": ...}.")
            })?;
            if req.previous_response_id.is_some() {
                return Err(ApiError::invalid_param(
                    "conversation",
                    "Give 'conversation' or 'previous_response_id', not both.",
                ));
            }
            if req.session_id.as_deref().is_some_and(|s| s != id) {
                return Err(ApiError::invalid_param(
                    "conversation",
                    "'conversation' and 'session_id' name different sessions.",
                ));
            }
            req.session_id = Some(id.to_string());
            Some(id.to_string())
        }
    };
    // A `previous_response_id` older than its session's newest response branches: a new
    // session starts from the history up to it (source session, response).
    let mut branch: Option<(String, String)> = None;
    let existing = match (&req.session_id, &req.previous_response_id) {
        (None, None) => None,
        (Some(id), prev) => {
            if store.session(id)?.is_none() {
                return Err(match conversation {
                    Some(_) => crate::routes::conversation_not_found(id),
                    None => ApiError::not_found("session_not_found", format!("No session with id '{id}'.")),
                });
            }
            if let Some(prev) = prev {
                let owner = visible(prev)?.map(|r| r.session_id);
                if owner.as_deref() != Some(id.as_str()) {
                    return Err(ApiError::invalid_param(
                        "previous_response_id",
                        format!("Response '{prev}' does not belong to session '{id}'."),
                    ));
                }
            }
            Some(id.clone())
        }
        (None, Some(prev)) => match visible(prev)? {
            Some(r) => {
                let newest = store.newest_response_id(&r.session_id)?;
                if newest.as_deref() == Some(prev.as_str()) {
                    Some(r.session_id)
                } else {
                    branch = Some((r.session_id, prev.clone()));
                    None
                }
            }
            None => {
                return Err(ApiError::not_found(
                    "previous_response_not_found",
                    format!("Previous response with id '{prev}' not found."),
                ))
            }
        },
    };

    let now = now_secs();
    let new_session = existing.is_none();
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
            match &branch {
                Some((from, upto)) => {
                    if !store.branch_session(from, upto, &id, now)? {
                        return Err(ApiError::not_found(
                            "previous_response_not_found",
                            format!("Previous response with id '{upto}' not found."),
                        ));
                    }
                }
                None => store.create_session(&id, &title(&input), now)?,
            }
            (id, busy)
        }
    };

    let context = store.context(&session_id)?;
    let compacted = context.summary.is_some();
    let mut history: Vec<Item> = context.summary.into_iter().chain(context.items).collect();
    let context_known = store.context_usage(&session_id)?;
    let response = Response {
        id: new_id("resp"),
        object: "response".into(),
        created_at: now,
        completed_at: None,
        status: Status::InProgress,
        model,
        output: Vec::new(),
        usage: None,
        error: None,
        incomplete_details: None,
        instructions: req.instructions.clone(),
        metadata: req.metadata.take().unwrap_or_default(),
        previous_response_id: req.previous_response_id.take(),
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        background: req.background.unwrap_or(false),
        tool_choice: req.tool_choice.take().unwrap_or_else(|| "auto".into()),
        tools: given_tools.iter().map(echo_tool).collect(),
        truncation: if policy.truncate { "auto" } else { "disabled" }.into(),
        temperature: req.temperature,
        top_p: req.top_p,
        presence_penalty: req.presence_penalty.unwrap_or(0.0),
        frequency_penalty: req.frequency_penalty.unwrap_or(0.0),
        top_logprobs: req.top_logprobs.unwrap_or(0),
        text,
        reasoning: req.reasoning.take().filter(|r| !r.is_null()),
        max_output_tokens: req.max_output_tokens,
        max_tool_calls: req.max_tool_calls,
        store: req.store.unwrap_or(true),
        service_tier: req.service_tier.take().unwrap_or_else(|| "default".into()),
        safety_identifier: req.safety_identifier.take(),
        prompt_cache_key: req.prompt_cache_key.take(),
        session_id: session_id.clone(),
        conversation: conversation.map(|id| serde_json::json!({"id": id})),
    };
    if let Err(e) = answers_known_calls(&history, &input) {
        if new_session {
            store.delete_session(&session_id)?;
        }
        return Err(e);
    }
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
        client_tools,
        live: None,
        policy,
        no_tools,
        compacted,
        context_known,
        finished: false,
    })
}

/// The function tools of a request (`tools[i]` with `type: "function"`), checked:
/// a name of 1-64 letters, digits, `_` or `-`, unique, not one of the agent's own
/// tools; `parameters` a JSON schema object. Both the Responses shape
/// (`{"type":"function","name",...}`) and the Chat Completions one (`"function": {...}`)
/// are taken; tools of other types are not offered.
fn client_tools(tools: &[serde_json::Value], own: &[ToolSpec]) -> Result<Vec<ToolSpec>, ApiError> {
    let mut out: Vec<ToolSpec> = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let param = format!("tools[{i}]");
        let Some(obj) = t.as_object() else {
            return Err(ApiError::invalid_param(&param, format!("'{param}' must be an object.")));
        };
        match obj.get("type").and_then(|v| v.as_str()) {
            Some("function") => {}
            Some(_) => continue,
            None => return Err(ApiError::missing_param(&format!("{param}.type"))),
        }
        let f = obj.get("function").and_then(|f| f.as_object()).unwrap_or(obj);
        let name = match f.get("name").and_then(|v| v.as_str()) {
            Some(n) => n,
            None => return Err(ApiError::missing_param(&format!("{param}.name"))),
        };
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(ApiError::invalid_param(
                &format!("{param}.name"),
                format!("Tool name '{name}' must be 1-64 letters, digits, '_' or '-'."),
            ));
        }
        if own.iter().any(|s| s.name == name) {
            return Err(ApiError::invalid_param(
                &format!("{param}.name"),
                format!("'{name}' is one of the agent's own tools; name yours differently."),
            ));
        }
        if out.iter().any(|s| s.name == name) {
            return Err(ApiError::invalid_param(&format!("{param}.name"), format!("Tool '{name}' is given twice.")));
        }
        let description = match f.get("description") {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(d)) => d.clone(),
            Some(_) => {
                return Err(ApiError::invalid_param(
                    &format!("{param}.description"),
                    format!("'{param}.description' must be a string."),
                ))
            }
        };
        let parameters = match f.get("parameters") {
            None | Some(serde_json::Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
            Some(p @ serde_json::Value::Object(_)) => p.clone(),
            Some(_) => {
                return Err(ApiError::invalid_param(
                    &format!("{param}.parameters"),
                    format!("'{param}.parameters' must be a JSON schema object."),
                ))
            }
        };
        out.push(ToolSpec { name: name.to_string().into(), description: description.into(), parameters });
    }
    Ok(out)
}

/// Each `function_call_output` of the input answers a `function_call` of the history or
/// of the input before it.
fn answers_known_calls(history: &[Item], input: &[Item]) -> Result<(), ApiError> {
    for (i, item) in input.iter().enumerate() {
        let Item::FunctionCallOutput(o) = item else { continue };
        let known =
            history.iter().chain(&input[..i]).any(|c| matches!(c, Item::FunctionCall(c) if c.call_id == o.call_id));
        if !known {
            return Err(ApiError::invalid_param(
                &format!("input[{i}].call_id"),
                format!("No tool call with call_id '{}' in this conversation to answer.", o.call_id),
            ));
        }
    }
    Ok(())
}

/// `truncation` and `context_management`, checked.
fn context_policy(req: &CreateResponse) -> Result<ContextPolicy, ApiError> {
    let truncate = match req.truncation.as_deref() {
        None | Some("disabled") => false,
        Some("auto") => true,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "truncation",
                format!("'truncation' is 'auto' or 'disabled', not '{other}'."),
            ))
        }
    };
    let mut compact_threshold = None;
    for (i, entry) in req.context_management.iter().flatten().enumerate() {
        let param = format!("context_management[{i}]");
        match entry.get("type").and_then(|t| t.as_str()) {
            Some("compaction") => {}
            Some(other) => {
                return Err(ApiError::invalid_param(
                    &format!("{param}.type"),
                    format!("Unsupported context management '{other}': only 'compaction' is."),
                ))
            }
            None => return Err(ApiError::missing_param(&format!("{param}.type"))),
        }
        match entry.get("compact_threshold") {
            None | Some(serde_json::Value::Null) => {}
            Some(v) => match v.as_u64().filter(|n| *n >= 1000) {
                Some(n) => compact_threshold = Some(n),
                None => {
                    return Err(ApiError::invalid_param(
                        &format!("{param}.compact_threshold"),
                        format!("'{param}.compact_threshold' is a number of tokens, 1000 or more."),
                    ))
                }
            },
        }
    }
    Ok(ContextPolicy { truncate, compact_threshold })
}

/// `text`, checked: its `format.type` is `text`, `json_object` or `json_schema` (with a
/// `name` and a `schema`).
fn text_param(text: Option<serde_json::Value>) -> Result<serde_json::Value, ApiError> {
    let Some(mut text) = text.filter(|t| !t.is_null()) else {
        return Ok(berth_responses::response::text_format());
    };
    let Some(obj) = text.as_object_mut() else {
        return Err(ApiError::invalid_param(
            "text",
            "'text' must be an object like {\"format\": {\"type\": \"text\"}}.",
        ));
    };
    let format = obj.entry("format").or_insert_with(|| serde_json::json!({"type": "text"}));
    match format.get("type").and_then(|t| t.as_str()) {
        Some("text" | "json_object") => {}
        Some("json_schema") => {
            if !format.get("name").is_some_and(|n| n.is_string()) {
                return Err(ApiError::missing_param("text.format.name"));
            }
            if !format.get("schema").is_some_and(|s| s.is_object()) {
                return Err(ApiError::missing_param("text.format.schema"));
            }
        }
        Some(other) => {
            return Err(ApiError::invalid_param(
                "text.format.type",
                format!("Unknown text format '{other}': use 'text', 'json_object' or 'json_schema'."),
            ))
        }
        None => return Err(ApiError::missing_param("text.format.type")),
    }
    Ok(text)
}

/// `tool_choice`, checked; answers whether it is `none` (no tools offered).
fn tool_choice_param(choice: Option<&serde_json::Value>) -> Result<bool, ApiError> {
    match choice {
        None | Some(serde_json::Value::Null) => Ok(false),
        Some(serde_json::Value::String(s)) => match s.as_str() {
            "none" => Ok(true),
            "auto" | "required" => Ok(false),
            other => Err(ApiError::invalid_param(
                "tool_choice",
                format!("'tool_choice' is 'none', 'auto', 'required' or {{\"type\": \"function\", \"name\": ...}}, not '{other}'."),
            )),
        },
        Some(serde_json::Value::Object(o)) if o.get("type").and_then(|t| t.as_str()).is_some() => Ok(false),
        Some(_) => Err(ApiError::invalid_param("tool_choice", "'tool_choice' must be a string or an object with a 'type'.")),
    }
}

/// A request's tool as the response echoes it: a function in the Responses shape with
/// every field the specification requires (`description`, `parameters`, `strict`).
fn echo_tool(tool: &serde_json::Value) -> serde_json::Value {
    if tool.get("type").and_then(|t| t.as_str()) != Some("function") {
        return tool.clone();
    }
    let f = tool.get("function").filter(|f| f.is_object()).unwrap_or(tool);
    serde_json::json!({
        "type": "function",
        "name": f.get("name"),
        "description": f.get("description"),
        "parameters": f.get("parameters"),
        "strict": f.get("strict").or(tool.get("strict")),
    })
}

/// A session's title: the start of its first user message.
pub fn title(input: &[Item]) -> String {
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
