//! Wire types of the instance plane (the OpenAI Responses API shapes plus berth's
//! `session_id`, and the session listing), shared by berth-agent (which serves them),
//! the server's managed LLM proxy (which reads the usage of Responses API answers), the
//! CLI (which reads a turn's status) and the tests. Serde shapes only: no I/O.

pub mod events;
pub mod items;
pub mod response;
pub mod sessions;

pub use items::{CompactionItem, ContentPart, FunctionCallItem, FunctionCallOutputItem, Item, MessageItem, Role};
pub use response::{Response, ResponseError, Status, Usage};
