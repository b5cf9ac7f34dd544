//! Wire types of the instance plane (SPEC §4): the OpenAI Responses API shapes
//! plus berth's `session_id`, and the session listing. No I/O here.

pub mod events;
pub mod items;
pub mod request;
pub mod response;
pub mod sessions;

pub use items::{ContentPart, FunctionCallItem, FunctionCallOutputItem, Item, MessageItem, Role};
pub use request::{parse_input, CreateResponse};
pub use response::{Response, ResponseError, Status, Usage};
