//! One model call of the loop: provider events become output items and
//! stream events as they arrive (nothing is buffered).

use super::emitter::{Cancelled, Emitter};
use crate::api::events;
use crate::api::items::{ReasoningItem, ReasoningText};
use crate::api::{ContentPart, FunctionCallItem, Item, MessageItem, Response, Usage};
use crate::ids::new_id;
use crate::provider::{EventSource, ProviderError, ProviderEvent};
use std::collections::HashMap;

/// Why a step stopped before the model finished.
#[derive(Debug)]
pub enum StepError {
    Cancelled,
    Provider(ProviderError),
    /// The agent itself failed (its database).
    Internal(String),
}

impl From<Cancelled> for StepError {
    fn from(_: Cancelled) -> Self {
        StepError::Cancelled
    }
}

/// The output item being streamed, by its index in `response.output`.
#[derive(Clone, Copy, PartialEq)]
enum Open {
    Nothing,
    Message(usize),
    Reasoning(usize),
    Call(usize),
}

/// Streams one model answer into `response.output`. On return (even on
/// error) every item it added is closed: `completed`, or `incomplete` if cut off.
pub async fn run(
    stream: &mut impl EventSource,
    response: &mut Response,
    emitter: &mut Emitter,
) -> Result<(), StepError> {
    let mut step = Step { response, emitter, open: Open::Nothing, calls: HashMap::new() };
    let result = step.consume(stream).await;
    let status = if result.is_ok() { "completed" } else { "incomplete" };
    step.close(status).await?;
    result
}

struct Step<'a> {
    response: &'a mut Response,
    emitter: &'a mut Emitter,
    open: Open,
    /// Provider tool-call index → output index.
    calls: HashMap<usize, usize>,
}

impl Step<'_> {
    async fn consume(&mut self, stream: &mut impl EventSource) -> Result<(), StepError> {
        while let Some(ev) = stream.next().await {
            match ev.map_err(StepError::Provider)? {
                ProviderEvent::Text(t) => self.text(&t).await?,
                ProviderEvent::Reasoning(t) => self.reasoning(&t).await?,
                ProviderEvent::ToolCallStart { index, call_id, name } => self.start_call(index, call_id, name).await?,
                ProviderEvent::ToolCallArgs { index, delta } => self.call_args(index, &delta).await?,
                ProviderEvent::Usage { input, output } => {
                    self.response.usage.get_or_insert_with(Usage::default).add(input, output)
                }
            }
        }
        Ok(())
    }

    async fn open_item(&mut self, item: Item) -> Result<usize, Cancelled> {
        self.close("completed").await?;
        let idx = self.response.output.len();
        self.emitter.emit(events::item_added(idx, &item)).await?;
        self.response.output.push(item);
        Ok(idx)
    }

    async fn text(&mut self, delta: &str) -> Result<(), Cancelled> {
        let idx = match self.open {
            Open::Message(idx) => idx,
            _ => {
                let mut m = MessageItem::assistant(new_id("msg"), String::new());
                m.status = "in_progress".into();
                let content = std::mem::take(&mut m.content);
                let idx = self.open_item(Item::Message(m)).await?;
                let id = self.item_id(idx);
                self.emitter.emit(events::content_part_added(&id, idx)).await?;
                if let Item::Message(m) = &mut self.response.output[idx] {
                    m.content = content;
                }
                self.open = Open::Message(idx);
                idx
            }
        };
        if let Item::Message(m) = &mut self.response.output[idx] {
            if let Some(ContentPart::OutputText { text, .. }) = m.content.first_mut() {
                text.push_str(delta);
            }
        }
        let id = self.item_id(idx);
        self.emitter.emit(events::text_delta(&id, idx, delta)).await
    }

    async fn reasoning(&mut self, delta: &str) -> Result<(), Cancelled> {
        let idx = match self.open {
            Open::Reasoning(idx) => idx,
            _ => {
                let r = ReasoningItem { id: new_id("rs"), summary: Vec::new(), content: Vec::new() };
                let idx = self.open_item(Item::Reasoning(r)).await?;
                self.open = Open::Reasoning(idx);
                idx
            }
        };
        if let Item::Reasoning(r) = &mut self.response.output[idx] {
            match r.content.first_mut() {
                Some(t) => t.text.push_str(delta),
                None => r.content.push(ReasoningText { kind: "reasoning_text".into(), text: delta.into() }),
            }
        }
        let id = self.item_id(idx);
        self.emitter.emit(events::reasoning_delta(&id, idx, delta)).await
    }

    async fn start_call(&mut self, index: usize, call_id: String, name: String) -> Result<(), Cancelled> {
        let call = FunctionCallItem {
            id: new_id("fc"),
            call_id,
            name,
            arguments: String::new(),
            status: "in_progress".into(),
        };
        let idx = self.open_item(Item::FunctionCall(call)).await?;
        self.calls.insert(index, idx);
        self.open = Open::Call(idx);
        Ok(())
    }

    async fn call_args(&mut self, index: usize, delta: &str) -> Result<(), Cancelled> {
        if !self.calls.contains_key(&index) {
            self.start_call(index, new_id("call"), String::new()).await?;
        }
        let idx = self.calls[&index];
        if let Item::FunctionCall(c) = &mut self.response.output[idx] {
            c.arguments.push_str(delta);
        }
        // Arguments of a call already closed (interleaved parallel calls) are
        // kept but not streamed: its `.done` events have gone out.
        if self.open == Open::Call(idx) {
            let id = self.item_id(idx);
            self.emitter.emit(events::arguments_delta(&id, idx, delta)).await?;
        }
        Ok(())
    }

    /// Closes the open item with `status`, emitting its `.done` events.
    async fn close(&mut self, status: &str) -> Result<(), Cancelled> {
        let open = std::mem::replace(&mut self.open, Open::Nothing);
        let idx = match open {
            Open::Nothing => return Ok(()),
            Open::Message(i) | Open::Reasoning(i) | Open::Call(i) => i,
        };
        let id = self.item_id(idx);
        match &mut self.response.output[idx] {
            Item::Message(m) => {
                m.status = status.into();
                let text = m.text();
                self.emitter.emit(events::text_done(&id, idx, &text)).await?;
                self.emitter.emit(events::content_part_done(&id, idx, &text)).await?;
            }
            Item::Reasoning(r) => {
                let text = r.text();
                self.emitter.emit(events::reasoning_done(&id, idx, &text)).await?;
            }
            Item::FunctionCall(c) => {
                c.status = status.into();
                let (name, args) = (c.name.clone(), c.arguments.clone());
                self.emitter.emit(events::arguments_done(&id, idx, &name, &args)).await?;
            }
            Item::FunctionCallOutput(_) | Item::Compaction(_) => {}
        }
        self.emitter.emit(events::item_done(idx, &self.response.output[idx])).await
    }

    fn item_id(&self, idx: usize) -> String {
        match &self.response.output[idx] {
            Item::Message(m) => m.id.clone(),
            Item::Reasoning(r) => r.id.clone(),
            Item::FunctionCall(c) => c.id.clone(),
            Item::FunctionCallOutput(o) => o.id.clone(),
            Item::Compaction(c) => c.id.clone(),
        }
    }
}
