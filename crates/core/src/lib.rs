//! Domain of berth: identifiers, sizes, the instance state machine and money.
//!
//! No I/O lives here; every other crate builds on these types so that the API,
//! the store and the reconciler agree on what an instance is and what it may do.

pub mod egress;
pub mod ids;
pub mod lifecycle;
pub mod money;
pub mod size;
pub mod template;
pub mod text;
pub mod time;

pub use egress::Egress;
pub use ids::{InstanceId, KeyId, ShareId, TemplateId, WorkspaceId};
pub use lifecycle::{Action, InvalidTransition, Status};
pub use size::{Resources, Size, SizeSpec};
pub use template::{TemplateSpec, TemplateStatus};

/// Current unix time in whole seconds.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
