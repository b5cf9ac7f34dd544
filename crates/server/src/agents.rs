//! System agent templates: other agents, installed from their registries into an
//! image built locally when the server starts, each served by berth-agent behind the
//! same Responses API at the instance's URL (`BERTH_AGENT_DRIVER`, see
//! `crates/agent/src/driver.rs`).
//!
//! Their images are built through the same builder as templates' builds (the host's
//! CA bundle in every stage, the instances' network), from the Debian base
//! (`--agent-template-base`), and tagged `berth/agent-{name}:latest`. A start builds
//! them again: the builder's cache makes that a few seconds when nothing changed.
//! Until a build has succeeded, creating an instance of the template is `409
//! build_not_ready`.

use berth_core::template::{TemplatePort, AGENT_PORT};
use berth_core::{TemplateSpec, TemplateStatus};
use berth_runtime::build::BuildRequest;
use berth_runtime::Runtime;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Names of the agents the hosted service offers; all are reserved as template names.
pub const AGENT_NAMES: &[&str] = &["hermes", "claude-code", "codex", "openclaw", "all"];

/// The agent templates this build ships.
pub const SHIPPED: &[&str] = &["hermes", "claude-code", "codex", "openclaw", "all"];

/// Lines of build output kept for the template's `build.error`.
const KEPT_LINES: usize = 40;

const CLAUDE: &str = "RUN npm install -g @anthropic-ai/claude-code && npm cache clean --force && claude --version\n";
const CODEX: &str = "RUN npm install -g @openai/codex && npm cache clean --force && codex --version\n";
const HERMES: &str = "RUN apt-get update && apt-get install -y --no-install-recommends python3-venv \\\n\
    \x20 && rm -rf /var/lib/apt/lists/*\n\
    RUN python3 -m venv /opt/hermes && /opt/hermes/bin/pip install --no-cache-dir 'hermes-agent[acp]' \\\n\
    \x20 && ln -s /opt/hermes/bin/hermes /usr/local/bin/hermes && hermes --version\n";

// OpenClaw needs Node 24 (Debian 12 has 18): npm's `node` package puts it in
// /usr/local/bin, ahead of Debian's on the PATH.
const OPENCLAW: &str = "RUN npm install -g node@24 && node --version \\\n\
    \x20 && npm install -g openclaw && npm cache clean --force && openclaw --version\n";

/// The first steps of every agent template: npm (the same text, so one cached layer).
fn node(base: &str) -> String {
    format!(
        "FROM {base}\n\
         RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm \\\n\
         \x20 && rm -rf /var/lib/apt/lists/*\n"
    )
}

/// The Dockerfile of an agent template, on `base`.
fn dockerfile(name: &str, base: &str) -> Option<String> {
    match name {
        // Claude Code's npm package installs a native executable; npm itself needs Node.
        // Hermes Agent from PyPI in a venv of its own, with its ACP extra (how it is driven).
        "hermes" => Some(format!("FROM {base}\n{HERMES}ENV BERTH_AGENT_DRIVER=hermes\n")),
        "claude-code" => Some(format!("{}{CLAUDE}ENV BERTH_AGENT_DRIVER=claude-code\n", node(base))),
        // Codex's npm package carries its native executable too.
        "codex" => Some(format!("{}{CODEX}ENV BERTH_AGENT_DRIVER=codex\n", node(base))),
        "openclaw" => Some(format!("{}{OPENCLAW}ENV BERTH_AGENT_DRIVER=openclaw\n", node(base))),
        // Every one (on top of the claude-code image's cached layers); the first answers by default.
        "all" => Some(format!(
            "{}{CLAUDE}{CODEX}{HERMES}{OPENCLAW}ENV BERTH_AGENT_DRIVER=claude-code,codex,hermes,openclaw\n",
            node(base)
        )),
        _ => None,
    }
}

/// Where an agent template's image stands.
#[derive(Debug, Clone)]
pub struct AgentState {
    pub status: TemplateStatus,
    pub error: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// The agent templates this server offers, and their builds.
pub struct SystemAgents {
    base: String,
    enabled: Vec<&'static str>,
    states: Mutex<HashMap<&'static str, AgentState>>,
}

impl SystemAgents {
    /// The agent templates named in `enabled` (`none`: no agent template), built on `base`.
    pub fn new(enabled: &[String], base: String) -> anyhow::Result<Self> {
        let mut names = Vec::new();
        for name in enabled.iter().map(|s| s.trim()).filter(|s| !s.is_empty() && *s != "none") {
            let shipped = SHIPPED.iter().find(|s| **s == name).copied();
            let Some(shipped) = shipped else {
                anyhow::bail!(
                    "--agent-templates: `{name}` is not an agent template of this build (it ships {})",
                    SHIPPED.join(", ")
                );
            };
            if !names.contains(&shipped) {
                names.push(shipped);
            }
        }
        let building =
            AgentState { status: TemplateStatus::Building, error: None, started_at: None, finished_at: None };
        let states = names.iter().map(|n| (*n, building.clone())).collect();
        Ok(SystemAgents { base, enabled: names, states: Mutex::new(states) })
    }

    /// The agent templates offered, in order.
    pub fn names(&self) -> &[&'static str] {
        &self.enabled
    }

    /// Whether `name` is one of them.
    pub fn offers(&self, name: &str) -> bool {
        self.enabled.contains(&name)
    }

    /// The image of an agent template.
    pub fn image(name: &str) -> String {
        format!("berth/agent-{name}:latest")
    }

    /// An agent template's spec: berth-agent at port 3737 driving the agent.
    pub fn spec(name: &str) -> TemplateSpec {
        TemplateSpec {
            image: Some(Self::image(name)),
            ports: vec![TemplatePort { port: AGENT_PORT, default: true }],
            command: None,
            env: Default::default(),
            health_path: None,
            stdin: false,
            agent: true,
            agents: match name {
                "all" => ["claude-code", "codex", "hermes", "openclaw", "berth-agent"].map(String::from).to_vec(),
                _ => vec![name.to_string(), "berth-agent".into()],
            },
            default_size: 1,
        }
    }

    /// Where its image stands.
    pub fn state(&self, name: &str) -> Option<AgentState> {
        self.states.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// Builds every offered agent template's image, one after the other, in the background.
    pub fn start(self: &Arc<Self>, runtime: Arc<dyn Runtime>) {
        let me = self.clone();
        tokio::spawn(async move {
            for name in me.enabled.clone() {
                me.build(runtime.as_ref(), name).await;
            }
        });
    }

    async fn build(&self, runtime: &dyn Runtime, name: &'static str) {
        let Some(dockerfile) = dockerfile(name, &self.base) else { return };
        let started = berth_core::now_secs();
        self.set(
            name,
            AgentState { status: TemplateStatus::Building, error: None, started_at: Some(started), finished_at: None },
        );
        tracing::info!(template = name, base = %self.base, "building the agent template's image");
        let req = BuildRequest {
            tag: Self::image(name),
            dockerfile,
            context: Vec::new(),
            labels: HashMap::from([("berth.template".to_string(), name.to_string())]),
            scope: "system".into(),
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let pump = async {
            let mut last: std::collections::VecDeque<String> = Default::default();
            while let Some(line) = rx.recv().await {
                tracing::debug!(template = name, "{line}");
                if last.len() == KEPT_LINES {
                    last.pop_front();
                }
                last.push_back(line);
            }
            last
        };
        let (result, last) = tokio::join!(runtime.build_image(req, tx), pump);
        let finished = berth_core::now_secs();
        let finished_at = Some(finished);
        let state = match result {
            Ok(()) => {
                tracing::info!(template = name, secs = finished - started, "agent template ready");
                AgentState { status: TemplateStatus::Ready, error: None, started_at: Some(started), finished_at }
            }
            Err(e) => {
                let tail = last.into_iter().collect::<Vec<_>>().join("\n");
                tracing::warn!(template = name, error = %e, "the agent template's build failed:\n{tail}");
                let error = format!("{e} (the server's log has the build's output)");
                AgentState {
                    status: TemplateStatus::Failed,
                    error: Some(error),
                    started_at: Some(started),
                    finished_at,
                }
            }
        };
        self.set(name, state);
    }

    fn set(&self, name: &'static str, state: AgentState) {
        self.states.lock().unwrap_or_else(|e| e.into_inner()).insert(name, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_shipped_agents_can_be_offered() {
        let a = SystemAgents::new(&["claude-code".into()], "berth/base:bookworm".into()).unwrap();
        assert!(a.offers("claude-code") && !a.offers("codex"));
        assert_eq!(a.state("claude-code").unwrap().status, TemplateStatus::Building);
        let none = SystemAgents::new(&["none".into()], "b".into()).unwrap();
        assert!(none.names().is_empty());
        let err = SystemAgents::new(&["openclaw2".into()], "b".into()).err().unwrap().to_string();
        assert!(err.contains("`openclaw2`") && err.contains("hermes, claude-code, codex, openclaw, all"), "{err}");
        let all = dockerfile("all", "b").unwrap();
        assert!(all
            .starts_with(&dockerfile("claude-code", "b").unwrap().replace("ENV BERTH_AGENT_DRIVER=claude-code\n", "")));
        assert!(all.ends_with("ENV BERTH_AGENT_DRIVER=claude-code,codex,hermes,openclaw\n"), "{all}");
        assert_eq!(SystemAgents::spec("all").agents, ["claude-code", "codex", "hermes", "openclaw", "berth-agent"]);
        let openclaw = dockerfile("openclaw", "b").unwrap();
        assert!(
            openclaw.starts_with(&node("b")) && openclaw.contains("node@24") && all.contains(OPENCLAW),
            "{openclaw}"
        );
        berth_runtime::build::check_dockerfile(&openclaw).unwrap();
        let hermes = dockerfile("hermes", "b").unwrap();
        assert!(hermes.contains("hermes-agent[acp]") && all.contains("hermes-agent[acp]"), "{hermes}");
        let both = SystemAgents::new(&["codex".into(), "claude-code".into()], "b".into()).unwrap();
        assert_eq!(both.names(), ["codex", "claude-code"]);
        let codex = dockerfile("codex", "b").unwrap();
        assert!(codex.starts_with(&node("b")) && codex.contains("@openai/codex"), "{codex}");
        let d = dockerfile("claude-code", "berth/base:bookworm").unwrap();
        assert!(d.starts_with("FROM berth/base:bookworm\n") && d.contains("@anthropic-ai/claude-code"), "{d}");
        berth_runtime::build::check_dockerfile(&d).unwrap();
        assert_eq!(SystemAgents::spec("claude-code").agents, ["claude-code", "berth-agent"]);
    }
}
