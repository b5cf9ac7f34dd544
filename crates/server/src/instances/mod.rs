//! Instance operations shared by the API handlers and the reconciler:
//! validation of client input, presentation of records, and the lifecycle
//! operations that drive the runtime and record the outcome.

pub mod drive;
pub mod exec;
pub mod ops;
pub mod present;
pub mod stdin;
pub mod validate;

/// The one system template of this build.
pub const SYSTEM_TEMPLATE: &str = "berth-agent";
/// Its version: a new agent build is a new template version.
pub const SYSTEM_TEMPLATE_VERSION: u32 = 1;
