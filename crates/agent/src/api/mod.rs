//! Wire types of the instance plane (SPEC §4): the Responses API shapes live in
//! `berth-responses` (shared with the server's LLM proxy, the CLI and the tests);
//! parsing a request's `input` into items is the agent's own.

pub mod request;

pub use berth_responses::{events, items, response, sessions};
pub use berth_responses::{
    CompactionItem, ContentPart, FunctionCallItem, FunctionCallOutputItem, Item, MessageItem, Role,
};
pub use berth_responses::{Response, ResponseError, Status, Usage};
pub use request::{parse_input, CreateResponse};
