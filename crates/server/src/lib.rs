//! The berth control plane: the hosting API (axum), auth, the reconciler and the
//! wiring between the store and the runtime. Handlers never talk to Docker or
//! SQL directly; they go through [`instances`] operations, which use the
//! `Store` and `Runtime` traits.

pub mod acme;
pub mod activity;
pub mod admission;
pub mod agent_bin;
pub mod agents;
pub mod auth;
pub mod bootstrap;
pub mod builds;
pub mod compute;
pub mod config;
pub mod db;
pub mod edge;
pub mod error;
pub mod extract;
pub mod firewall;
pub mod instances;
pub mod key_cache;
pub mod listen;
pub mod llm;
pub mod locks;
pub mod metrics;
pub mod openapi;
pub mod pool;
pub mod quotas;
pub mod reconciler;
pub mod routes;
pub mod serve;
pub mod state;
pub mod templates;
pub mod tls;
pub mod webhook;

pub use config::ServerArgs;
pub use serve::run;
