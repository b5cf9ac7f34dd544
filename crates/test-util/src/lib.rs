//! Test fixtures shared by berth's end-to-end tests: a real `berth server`
//! process on a real socket, against the real Docker daemon, cleaned up after.
//! A dev-dependency only; nothing here ships.

pub mod app;
pub mod docker;
pub mod server;
pub mod tls;

pub use server::{ServerOptions, TestServer};
