//! Test fixtures shared by berth's tests: a real `berth server` process on a real
//! socket, against the real Docker daemon (or a real Kubernetes cluster: [`kubernetes`]), cleaned up after ([`TestServer`], also
//! shared by the tests of one binary: [`TestServer::shared`]); a fresh database per
//! test on a real PostgreSQL cluster ([`postgres`]); scripted LLM providers on real
//! sockets ([`llm`]); and the rule for tests that need a tool the machine may lack
//! ([`require`]). A dev-dependency only; nothing here ships.

pub mod app;
pub mod docker;
pub mod kubernetes;
pub mod llm;
pub mod postgres;
pub mod require;
pub mod server;
mod shared;
pub mod tls;

pub use berth_core::ids::random_label;
pub use server::{free_port, ServerOptions, TestServer};
