//! State shared by every request: configuration, the session store, busy
//! sessions, the HTTP client to providers.

use crate::busy::BusySessions;
use crate::config::{AgentConfig, ProviderKind};
use crate::provider::Provider;
use crate::store::Store;
use crate::tools::ToolContext;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Shared by all handlers.
pub struct AppState {
    pub config: AgentConfig,
    pub store: Store,
    pub busy: BusySessions,
    /// Streamed and background turns' event logs.
    pub live: crate::live::LiveTurns,
    /// Tools from the MCP servers of `DATA/mcp.json`.
    pub mcp: crate::mcp::Mcp,
    /// Wakes the scheduled-work loop when schedules change.
    pub scheduler: crate::schedule::Scheduler,
    pub tools: ToolContext,
    pub started: Instant,
    /// Built on first use: TLS roots and the DNS resolver cost start time and memory.
    http: OnceLock<reqwest::Client>,
}

impl AppState {
    /// State over an opened store.
    pub fn new(config: AgentConfig, store: Store) -> Arc<Self> {
        let tools = ToolContext {
            workdir: config.workdir.clone(),
            memory_path: config.data_dir.join("memory").join("notes.md"),
            limits: config.limits.clone(),
            memory_lock: Default::default(),
            user: config.tool_user,
            web_search: crate::tools::search::WebSearch::from_env(),
        };
        let http = OnceLock::new();
        let mcp = crate::mcp::Mcp::new(config.data_dir.join("mcp.json"), config.workdir.clone(), config.tool_user);
        Arc::new(AppState {
            mcp,
            config,
            store,
            busy: BusySessions::default(),
            live: Default::default(),
            scheduler: Default::default(),
            tools,
            started: Instant::now(),
            http,
        })
    }

    pub(crate) fn http(&self) -> reqwest::Client {
        http_client(&self.http)
    }

    /// The endpoint of a provider kind, from the configuration.
    pub fn provider(&self, kind: ProviderKind) -> Provider {
        let llm = &self.config.llm;
        let (base_url, api_key) = match kind {
            ProviderKind::OpenAi => (&llm.openai_base_url, &llm.openai_api_key),
            ProviderKind::Anthropic => (&llm.anthropic_base_url, &llm.anthropic_api_key),
        };
        Provider {
            kind,
            base_url: base_url.clone(),
            api_key: api_key.clone(),
            http: self.http(),
            idle_timeout: llm.idle_timeout,
        }
    }

    /// The provider for a turn: the one asked for, else Anthropic for `claude-*`
    /// models when an Anthropic key is configured, else the default.
    pub fn provider_for(&self, requested: Option<ProviderKind>, model: &str) -> Provider {
        let llm = &self.config.llm;
        let kind = requested.unwrap_or(if model.starts_with("claude") && llm.anthropic_api_key.is_some() {
            ProviderKind::Anthropic
        } else {
            llm.default_provider
        });
        self.provider(kind)
    }
}

/// The HTTP client in `cell`, built on first use (TLS roots and the DNS resolver cost
/// memory an idle agent should not pay).
pub(crate) fn http_client(cell: &OnceLock<reqwest::Client>) -> reqwest::Client {
    cell.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("berth-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default()
    })
    .clone()
}
