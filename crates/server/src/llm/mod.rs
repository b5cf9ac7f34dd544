//! The managed LLM proxy: instances call it with a token of their own, it calls the
//! operator's upstream with the operator's key (which never enters an instance),
//! meters every call from the provider's reported usage at the operator's prices, and
//! enforces each instance's cap (and, with `--billing`, the workspace's wallet).
//!
//! It listens only on the host's address on the instances' network
//! ([`berth_runtime::Runtime::host_address`]); the egress firewall lets instances
//! reach exactly that port on the host (its `served_ports`).

pub mod config;
pub mod meter;
pub mod proxy;
pub mod usage;

pub use config::LlmConfig;

use berth_core::InstanceId;
use berth_store::seal::SealKey;
use berth_store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The proxy's shared state.
pub struct LlmProxy {
    pub cfg: LlmConfig,
    pub meter: meter::Meter,
    pub store: Arc<dyn Store>,
    pub seal: SealKey,
    /// Notified of charges that leave a wallet low.
    pub webhooks: Arc<crate::webhook::Webhooks>,
    /// Client for the upstreams (no proxy env: the operator's key goes only where configured).
    pub http: reqwest::Client,
    /// Input tokens of each instance's last call: conversations grow, so the next call's
    /// input is at least about as large (part of its reservation).
    last_input: Mutex<HashMap<InstanceId, u64>>,
}

impl LlmProxy {
    /// The proxy for `cfg`.
    pub fn new(
        cfg: LlmConfig,
        store: Arc<dyn Store>,
        seal: SealKey,
        webhooks: Arc<crate::webhook::Webhooks>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(std::time::Duration::from_secs(10))
            // A provider silent this long has stalled: the call ends (and its
            // reservation is settled) instead of holding the budget forever.
            .read_timeout(std::time::Duration::from_secs(300))
            // Never follow a redirect: it would carry the operator's key (in
            // `x-api-key` or a tool's header) to another host.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(LlmProxy { cfg, meter: meter::Meter::default(), store, seal, webhooks, http, last_input: Mutex::default() })
    }

    /// Forgets what it keeps of a purged instance.
    pub fn forget(&self, id: &InstanceId) {
        self.meter.forget(id);
        self.last_input.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    fn last_input(&self, id: &InstanceId) -> u64 {
        self.last_input.lock().unwrap_or_else(|e| e.into_inner()).get(id).copied().unwrap_or(0)
    }

    fn remember_input(&self, id: &InstanceId, tokens: u64) {
        self.last_input.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), tokens);
    }
}

/// Whether a connection from `ip` may use the proxy: from the instances' network, or
/// from this host itself (whose connections to a local address may come from any of its
/// addresses; an address is the host's when a socket can be bound to it). `subnets`
/// empty: the runtime names none, and the firewall is what guards the port.
pub fn caller_allowed(ip: std::net::IpAddr, subnets: &[berth_core::egress::Cidr]) -> bool {
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    subnets.is_empty() || subnets.iter().any(|s| s.contains(ip)) || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_instances_and_the_host_may_call() {
        let subnets = ["172.21.0.0/16".parse().unwrap()];
        assert!(super::caller_allowed("172.21.0.5".parse().unwrap(), &subnets));
        assert!(super::caller_allowed("127.0.0.1".parse().unwrap(), &subnets), "the host itself");
        assert!(super::caller_allowed("::ffff:172.21.3.4".parse().unwrap(), &subnets));
        // TEST-NET-3: not this host's, not the instances'.
        assert!(!super::caller_allowed("203.0.113.9".parse().unwrap(), &subnets));
        assert!(!super::caller_allowed("172.22.0.5".parse().unwrap(), &subnets));
    }
}

/// What instances are told about the proxy (their `BERTH_LLM_BASE_URL`) and how their
/// tokens are made.
#[derive(Debug, Clone)]
pub struct ManagedLlm {
    /// `http://<host address>:<port>/v1`.
    pub base_url: String,
    /// Their agents' default model (`BERTH_MODEL`).
    pub default_model: Option<String>,
    /// Whether metered tools are configured (`BERTH_TOOLS_URL`).
    pub tools: bool,
    /// The tool berth-agent offers as `web_search`.
    pub search_tool: Option<String>,
}

impl ManagedLlm {
    /// What instances are told of a proxy listening on `addr`: its default model is
    /// `model` (`--llm-model`), else the only priced model, when there is one.
    pub fn new(addr: std::net::SocketAddr, cfg: &LlmConfig, model: Option<String>) -> Self {
        let only = (cfg.prices.models.len() == 1).then(|| cfg.prices.models.keys().next().cloned()).flatten();
        ManagedLlm {
            base_url: format!("http://{addr}/v1"),
            default_model: model.or(only),
            tools: !cfg.tools.is_empty(),
            search_tool: cfg.search_tool().map(|t| t.name.clone()),
        }
    }

    /// Adds the managed LLM's env to an instance's, unless its own `env` names an LLM
    /// (bring your own key): the proxy's URL, the instance's token, the default model.
    pub fn add_env(&self, seal: &SealKey, id: &InstanceId, env: &mut std::collections::BTreeMap<String, String>) {
        // Metered tools: their own URL and token, whatever LLM the instance uses.
        let root = self.base_url.trim_end_matches("/v1");
        if self.tools {
            env.insert("BERTH_TOOLS_URL".into(), format!("{root}/tools"));
            env.insert("BERTH_TOOLS_TOKEN".into(), seal.llm_token(id.as_str()));
        }
        if let Some(search) = &self.search_tool {
            env.insert("BERTH_WEB_SEARCH_URL".into(), format!("{root}/tools/{search}"));
        }
        if env.contains_key("BERTH_LLM_BASE_URL") || env.contains_key("BERTH_LLM_API_KEY") {
            return;
        }
        env.insert("BERTH_LLM_BASE_URL".into(), self.base_url.clone());
        env.insert("BERTH_LLM_API_KEY".into(), seal.llm_token(id.as_str()));
        if let Some(model) = &self.default_model {
            env.entry("BERTH_MODEL".into()).or_insert_with(|| model.clone());
        }
    }
}
