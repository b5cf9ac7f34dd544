//! How the agent is configured: flags from `main`, the rest from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the agent needs to start.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Address to listen on (`--listen`).
    pub listen: SocketAddr,
    /// Where sessions and memory live (`--data`).
    pub data_dir: PathBuf,
    /// Where tools run and relative paths resolve (`BERTH_AGENT_WORKDIR`, default: cwd).
    pub workdir: PathBuf,
    /// When set, every route but `/health` needs `Authorization: Bearer <token>`.
    pub gateway_token: Option<String>,
    pub llm: LlmConfig,
    pub limits: Limits,
    /// How much history a model is sent, and when it is compacted.
    pub context: ContextConfig,
    /// The user tools run as (`BERTH_AGENT_TOOL_USER`, `UID[:GID]`; unset: the agent's
    /// own). berth sets `1000:1000` in instances, where the agent runs as root.
    pub tool_user: Option<crate::tools::ToolUser>,
    /// Other agents to drive per turn instead of the agent's own loop, the first by
    /// default, another when a request names it (`BERTH_AGENT_DRIVER=claude-code,codex`;
    /// `BERTH_AGENT_DRIVER_BIN` the executable, when there is one agent).
    pub drivers: Vec<crate::driver::Driver>,
}

/// Which wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenAI-compatible chat completions (OpenAI, OpenRouter, vLLM, Ollama, llama.cpp).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

/// The model providers and defaults.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// `BERTH_LLM_BASE_URL`, e.g. `https://api.openai.com/v1`.
    pub openai_base_url: String,
    /// `BERTH_LLM_API_KEY`.
    pub openai_api_key: Option<String>,
    /// `BERTH_ANTHROPIC_BASE_URL`, default `https://api.anthropic.com`.
    pub anthropic_base_url: String,
    /// `BERTH_ANTHROPIC_API_KEY`, else `ANTHROPIC_API_KEY`.
    pub anthropic_api_key: Option<String>,
    /// `BERTH_MODEL`: used when a request names none.
    pub default_model: Option<String>,
    /// `BERTH_LLM_PROVIDER` (`openai` or `anthropic`), default `openai`.
    pub default_provider: ProviderKind,
    /// Longest silence tolerated from a provider, before and between chunks
    /// (`BERTH_LLM_TIMEOUT_SECS`, default 300).
    pub idle_timeout: Duration,
}

/// Bounds on one turn of the agent loop.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Model calls per turn (`BERTH_AGENT_MAX_STEPS`, default 32).
    pub max_steps: u32,
    /// Default and ceiling of a shell command's run time (`BERTH_AGENT_SHELL_TIMEOUT_SECS`, 120).
    pub shell_timeout: Duration,
    /// Bytes of tool output handed back to the model (`BERTH_AGENT_OUTPUT_CAP`, 32768).
    pub output_cap: usize,
}

/// Context windows and compaction.
#[derive(Debug, Clone)]
pub struct ContextConfig {
    /// Context windows in tokens by model name prefix, checked in order, from
    /// `BERTH_CONTEXT_WINDOW` (`model-prefix=tokens` entries, comma-separated; a bare
    /// number sets the default) before the built-in ones.
    pub windows: Vec<(String, u64)>,
    /// The window of a model no entry names (128,000 unless set).
    pub default_window: u64,
    /// Compact a session when its next model call would fill this share of the
    /// window, in percent (`BERTH_COMPACT_AT_PERCENT`, default 75).
    pub compact_at_percent: u64,
    /// Summarise old turns automatically (`BERTH_COMPACTION=off` turns it off: then
    /// a turn that does not fit fails, unless the request says `truncation: "auto"`).
    pub auto_compact: bool,
}

/// Context windows of well-known model families, by name prefix.
const KNOWN_WINDOWS: &[(&str, u64)] = &[
    ("claude", 200_000),
    ("gpt-4.1", 1_000_000),
    ("gpt-5", 400_000),
    ("gpt-6", 400_000),
    ("gpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-3.5", 16_000),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4", 200_000),
];

impl ContextConfig {
    /// The configuration in `BERTH_CONTEXT_WINDOW`-style `spec`, the rest default.
    pub fn parse(spec: Option<&str>, compact_at_percent: u64, auto_compact: bool) -> Self {
        let mut windows = Vec::new();
        let mut default_window = 128_000;
        for entry in spec.unwrap_or_default().split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.rsplit_once('=') {
                Some((model, n)) => match n.trim().parse::<u64>() {
                    Ok(n) if n > 0 => windows.push((model.trim().trim_end_matches('*').to_string(), n)),
                    _ => tracing::warn!("BERTH_CONTEXT_WINDOW entry '{entry}' is not model=tokens; ignored"),
                },
                None => match entry.parse::<u64>() {
                    Ok(n) if n > 0 => default_window = n,
                    _ => tracing::warn!("BERTH_CONTEXT_WINDOW entry '{entry}' is not a number; ignored"),
                },
            }
        }
        windows.extend(KNOWN_WINDOWS.iter().map(|(m, n)| (m.to_string(), *n)));
        ContextConfig { windows, default_window, compact_at_percent: compact_at_percent.clamp(10, 95), auto_compact }
    }

    /// The context window of `model`, in tokens. A provider prefix (`openai/gpt-4o`)
    /// is looked through.
    pub fn window(&self, model: &str) -> u64 {
        let name = model.rsplit('/').next().unwrap_or(model).to_ascii_lowercase();
        self.windows
            .iter()
            .find(|(prefix, _)| name.starts_with(&prefix.to_ascii_lowercase()) || model.starts_with(prefix.as_str()))
            .map_or(self.default_window, |(_, n)| *n)
    }
}

impl ProviderKind {
    /// Parses `openai` / `anthropic` (and a few aliases).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "openai" | "openai-compatible" | "chat" | "chat_completions" => Some(Self::OpenAi),
            "anthropic" | "claude" => Some(Self::Anthropic),
            _ => None,
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn num<T: std::str::FromStr>(name: &str, default: T) -> T {
    var(name).and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

impl AgentConfig {
    /// The configuration for the given flags, the rest read from the environment.
    pub fn from_env(listen: SocketAddr, data_dir: PathBuf) -> Self {
        let workdir = var("BERTH_AGENT_WORKDIR")
            .map(PathBuf::from)
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("/"));
        AgentConfig {
            listen,
            data_dir,
            workdir,
            gateway_token: var("BERTH_GATEWAY_TOKEN"),
            llm: LlmConfig {
                openai_base_url: var("BERTH_LLM_BASE_URL").unwrap_or_else(|| "https://api.openai.com/v1".into()),
                openai_api_key: var("BERTH_LLM_API_KEY"),
                anthropic_base_url: var("BERTH_ANTHROPIC_BASE_URL")
                    .unwrap_or_else(|| "https://api.anthropic.com".into()),
                anthropic_api_key: var("BERTH_ANTHROPIC_API_KEY").or_else(|| var("ANTHROPIC_API_KEY")),
                default_model: var("BERTH_MODEL"),
                default_provider: var("BERTH_LLM_PROVIDER")
                    .and_then(|p| ProviderKind::parse(&p))
                    .unwrap_or(ProviderKind::OpenAi),
                idle_timeout: Duration::from_secs(num("BERTH_LLM_TIMEOUT_SECS", 300)),
            },
            tool_user: crate::tools::ToolUser::from_env().ok().flatten(),
            drivers: drivers(var("BERTH_AGENT_DRIVER"), var("BERTH_AGENT_DRIVER_BIN")),
            context: ContextConfig::parse(
                var("BERTH_CONTEXT_WINDOW").as_deref(),
                num("BERTH_COMPACT_AT_PERCENT", 75),
                !matches!(var("BERTH_COMPACTION").as_deref(), Some("off" | "0" | "false" | "no")),
            ),
            limits: Limits {
                max_steps: num("BERTH_AGENT_MAX_STEPS", 32u32).max(1),
                shell_timeout: Duration::from_secs(num("BERTH_AGENT_SHELL_TIMEOUT_SECS", 120)),
                output_cap: num("BERTH_AGENT_OUTPUT_CAP", 32 * 1024usize).max(256),
            },
        }
    }
}

/// The agents named in `BERTH_AGENT_DRIVER` (comma-separated; `berth-agent`: none).
fn drivers(names: Option<String>, bin: Option<String>) -> Vec<crate::driver::Driver> {
    let names: Vec<String> = names
        .unwrap_or_default()
        .split(',')
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty() && n != "berth-agent")
        .collect();
    // One executable path can only be one agent's.
    let bin = bin.filter(|_| names.len() == 1);
    let mut out: Vec<crate::driver::Driver> = Vec::new();
    for name in names {
        match crate::driver::Driver::from_env(&name, bin.clone()) {
            Ok(d) if !out.contains(&d) => out.push(d),
            Ok(_) => {}
            Err(e) => tracing::error!("{e}; not driven"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::ContextConfig;

    #[test]
    fn context_windows_by_prefix_with_overrides_first() {
        let c = ContextConfig::parse(Some("llama3=8192, qwen*=32768, 16000, bad=x"), 75, true);
        assert_eq!(c.window("llama3:8b"), 8192);
        assert_eq!(c.window("qwen2.5-coder"), 32768);
        assert_eq!(c.window("mystery"), 16000);
        assert_eq!(c.window("claude-sonnet-4"), 200_000);
        assert_eq!(c.window("openai/gpt-4o-mini"), 128_000);
        let c = ContextConfig::parse(Some("claude=50000"), 200, true);
        assert_eq!(c.window("claude-opus"), 50000, "an operator's entry comes before the built-in one");
        assert_eq!(c.compact_at_percent, 95);
    }
}
