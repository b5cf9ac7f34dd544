//! Making a stored history safe to send: providers reject a tool call without
//! its result, or a result without its call.

use crate::api::{ContentPart, FunctionCallOutputItem, Item, MessageItem, Role};
use std::collections::HashSet;

/// The history as a provider may take it: every tool call answered (a turn
/// cut short leaves calls without results) and no result without its call.
pub fn normalize(history: &[Item]) -> Vec<Item> {
    let calls: HashSet<&str> = history
        .iter()
        .filter_map(|i| match i {
            Item::FunctionCall(c) => Some(c.call_id.as_str()),
            _ => None,
        })
        .collect();
    let answered: HashSet<&str> = history
        .iter()
        .filter_map(|i| match i {
            Item::FunctionCallOutput(o) => Some(o.call_id.as_str()),
            _ => None,
        })
        .collect();
    let mut out = Vec::with_capacity(history.len());
    let mut unanswered: Vec<String> = Vec::new();
    let flush = |out: &mut Vec<Item>, unanswered: &mut Vec<String>| {
        for call_id in unanswered.drain(..) {
            out.push(Item::FunctionCallOutput(FunctionCallOutputItem {
                id: String::new(),
                call_id,
                output: "(no result: the turn was interrupted before this tool finished)".into(),
                status: "incomplete".into(),
            }));
        }
    };
    for item in history {
        match item {
            Item::FunctionCall(c) => {
                if !answered.contains(c.call_id.as_str()) {
                    unanswered.push(c.call_id.clone());
                }
                out.push(item.clone());
            }
            Item::FunctionCallOutput(o) if !calls.contains(o.call_id.as_str()) => {
                flush(&mut out, &mut unanswered);
                let text = format!("Result of tool call {}: {}", o.call_id, o.output);
                out.push(Item::Message(MessageItem {
                    id: String::new(),
                    role: Role::User,
                    content: vec![ContentPart::InputText { text }],
                    status: "completed".into(),
                }));
            }
            Item::FunctionCallOutput(_) => out.push(item.clone()),
            Item::Compaction(c) => {
                flush(&mut out, &mut unanswered);
                out.push(Item::Message(MessageItem {
                    id: String::new(),
                    role: Role::User,
                    content: vec![ContentPart::InputText { text: summary_text(&c.encrypted_content) }],
                    status: "completed".into(),
                }));
            }
            _ => {
                flush(&mut out, &mut unanswered);
                out.push(item.clone());
            }
        }
    }
    flush(&mut out, &mut unanswered);
    out
}

/// How a compaction summary is put to the model: as a user message standing for
/// the turns it replaced.
pub fn summary_text(summary: &str) -> String {
    format!("[Summary of the earlier part of this conversation, which was compacted]\n{summary}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FunctionCallItem;

    fn call(id: &str) -> Item {
        Item::FunctionCall(FunctionCallItem {
            id: String::new(),
            call_id: id.into(),
            name: "shell".into(),
            arguments: "{}".into(),
            status: "completed".into(),
        })
    }

    fn output(id: &str) -> Item {
        Item::FunctionCallOutput(FunctionCallOutputItem {
            id: String::new(),
            call_id: id.into(),
            output: "ok".into(),
            status: "completed".into(),
        })
    }

    fn user(text: &str) -> Item {
        Item::Message(MessageItem {
            id: String::new(),
            role: Role::User,
            content: vec![ContentPart::InputText { text: text.into() }],
            status: "completed".into(),
        })
    }

    #[test]
    fn unanswered_calls_get_placeholders_and_orphans_become_text() {
        let h = normalize(&[call("a"), call("b"), output("b"), user("next"), output("zzz")]);
        let kinds: Vec<String> = h
            .iter()
            .map(|i| match i {
                Item::FunctionCall(c) => format!("call:{}", c.call_id),
                Item::FunctionCallOutput(o) => format!("out:{}:{}", o.call_id, o.status),
                Item::Message(m) => format!("msg:{}", m.text()),
                Item::Reasoning(_) => "reasoning".into(),
                Item::Compaction(_) => "compaction".into(),
            })
            .collect();
        assert_eq!(
            kinds,
            ["call:a", "call:b", "out:b:completed", "out:a:incomplete", "msg:next", "msg:Result of tool call zzz: ok"]
        );
    }
}
