//! Operating instances: exec, logs, health and the audit trail.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A command: an argv list, or a string run by `/bin/sh -c`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Command {
    Argv(Vec<String>),
    Shell(String),
}

impl Default for Command {
    fn default() -> Self {
        Command::Argv(vec![])
    }
}

/// `POST /v1/instances/{id}/exec` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// argv list, or a shell string (run by `/bin/sh -c`).
    pub command: Command,
    /// Written to the process's standard input, which is then closed.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Working directory (default `/home/agent`).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Kill the whole process tree after this many seconds (default 60, at most 3600).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Answer Server-Sent Events (`stdout`, `stderr`, then `exit`) as output is produced.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Most bytes kept of each of stdout and stderr (default 1 MiB, at most 16 MiB).
    #[serde(default)]
    pub max_output_bytes: Option<usize>,
}

/// Result of a finished exec.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecResult {
    /// Exit status; 128+N when killed by signal N (137 for SIGKILL).
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
    /// The timeout fired and the process tree was killed.
    pub timed_out: bool,
    /// Output beyond `max_output_bytes` was dropped.
    pub truncated: bool,
}

/// `POST /v1/instances/{id}/stdin` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StdinRequest {
    /// Written to the main program's standard input; a newline is added when it has
    /// none (set `newline: false` to send it as is).
    pub input: String,
    /// Add a newline when `input` has none (default true).
    #[serde(default)]
    pub newline: Option<bool>,
    /// The reply ends once the program has printed nothing for this long (ms,
    /// 10–10000, default 300); before its first output it is given at least 2 s.
    #[serde(default)]
    #[schema(minimum = 10, maximum = 10000)]
    pub quiet_ms: Option<u64>,
    /// Longest the reply is collected (s, 1–300, default 30).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 300)]
    pub timeout_secs: Option<u64>,
}

/// What the main program printed in reply to a `stdin` write.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StdinResult {
    /// stdout and stderr as they came, interleaved.
    pub output: String,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
    /// Output was still coming when `timeout_secs` ran out.
    pub timed_out: bool,
    /// Output beyond 1 MiB was dropped.
    pub truncated: bool,
}

/// One log line.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogEntry {
    /// RFC 3339 time the line was written.
    pub timestamp: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub message: String,
}

/// `GET /v1/instances/{id}/logs` answer (without `follow`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Logs {
    pub logs: Vec<LogEntry>,
}

/// The agent gateway's answer to a probe.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GatewayHealth {
    pub ok: bool,
    pub response_time_ms: Option<f64>,
}

/// `GET /v1/instances/{id}/health` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InstanceHealth {
    /// The instance's status.
    pub status: String,
    pub cpu_percent: f64,
    pub memory_mb: f64,
    pub memory_limit_mb: f64,
    /// Space used under `/home/agent`.
    pub disk_mb: f64,
    /// The home's size (the size's `disk_gb` in MiB) when the server enforces it
    /// (`--disk-quota`); `null` when homes are plain, unbounded volumes.
    pub disk_limit_mb: Option<f64>,
    pub pids: u64,
    pub uptime_secs: u64,
    /// Last time (unix seconds) the agent answered a probe.
    pub last_heartbeat: Option<i64>,
    pub restart_count: u32,
    pub gateway: GatewayHealth,
    /// Requests served through the edge, over the instance's life.
    #[serde(default)]
    pub requests_total: u64,
    /// Bytes the instance's network interface received (since its container started).
    #[serde(default)]
    pub network_rx_bytes: u64,
    /// Bytes the instance's network interface sent (since its container started).
    #[serde(default)]
    pub network_tx_bytes: u64,
    /// Streams, WebSockets, execs, shells and log follows open now.
    #[serde(default)]
    pub open_connections: u32,
    /// Whether the agent is running a turn.
    #[serde(default)]
    pub turn_running: bool,
}

/// One entry of an instance's audit trail.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Always `event`.
    pub object: String,
    /// Unix seconds.
    pub at: i64,
    /// Status before (null at creation).
    pub from: Option<String>,
    pub to: String,
    /// `key:<id>` of the caller, or `reconciler`.
    pub actor: String,
    pub reason: Option<String>,
}
