//! What an instance is built from: one version of a template.
//!
//! A template version is immutable; an instance keeps a copy of the version it runs
//! ([`TemplateSpec`]), so recreating its container never depends on the template
//! still existing, and an update is a deliberate step to a newer copy.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The port berth-agent serves (the system template's default port).
pub const AGENT_PORT: u16 = 3737;

/// A port a template's programs serve, routed at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplatePort {
    pub port: u16,
    /// Served at the instance's own URL (`{label}.{domain}`); the others get handles.
    #[serde(default)]
    pub default: bool,
}

/// One version of a template: everything needed to run an instance of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateSpec {
    /// Image to run; `None`: the server's base image.
    #[serde(default)]
    pub image: Option<String>,
    /// Routed ports; empty: a private sandbox with no URL, driven by exec.
    #[serde(default)]
    pub ports: Vec<TemplatePort>,
    /// The main program; `None`: the agent alone (`agent: true`) or the image's own
    /// entrypoint and command (`agent: false`).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Environment every instance of it gets (an instance's own `env` wins).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Path answered with 2xx once the default port's program is ready (HTTP); `None`:
    /// the agent's `/health` when there is an agent, else a TCP connect to the default port.
    #[serde(default)]
    pub health_path: Option<String>,
    /// The main program reads standard input (`POST /v1/instances/{id}/stdin`).
    #[serde(default)]
    pub stdin: bool,
    /// berth-agent is injected and serves its API on [`AGENT_PORT`].
    #[serde(default = "yes")]
    pub agent: bool,
    /// Agents the instance offers (informational; `["berth-agent"]` with the agent).
    #[serde(default)]
    pub agents: Vec<String>,
    /// Size of instances that name none.
    #[serde(default = "one")]
    pub default_size: u32,
}

/// Whether instances can be made from a template version: an image is `ready` at once;
/// a version built from a Dockerfile is `building` until its build ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateStatus {
    Ready,
    Building,
    Failed,
}

impl TemplateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateStatus::Ready => "ready",
            TemplateStatus::Building => "building",
            TemplateStatus::Failed => "failed",
        }
    }

    /// Reads a stored status; anything unknown is `failed` (never `ready` by mistake).
    pub fn parse(s: &str) -> Self {
        match s {
            "ready" => TemplateStatus::Ready,
            "building" => TemplateStatus::Building,
            _ => TemplateStatus::Failed,
        }
    }
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

impl TemplateSpec {
    /// The system template `berth-agent`: the agent on the server's base image.
    pub fn system() -> Self {
        TemplateSpec {
            image: None,
            ports: vec![TemplatePort { port: AGENT_PORT, default: true }],
            command: None,
            env: BTreeMap::new(),
            health_path: None,
            stdin: false,
            agent: true,
            agents: vec!["berth-agent".into()],
            default_size: 1,
        }
    }

    /// The port served at the instance's own URL, if any.
    pub fn default_port(&self) -> Option<u16> {
        self.ports.iter().find(|p| p.default).map(|p| p.port)
    }

    /// Routed ports other than the default one.
    pub fn other_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.iter().filter(|p| !p.default).map(|p| p.port)
    }

    /// Requests to `port` go to berth-agent (the edge swaps the client's key for the
    /// instance's gateway token).
    pub fn is_agent_port(&self, port: u16) -> bool {
        self.agent && port == AGENT_PORT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_template_serves_the_agent_at_its_url() {
        let s = TemplateSpec::system();
        assert_eq!(s.default_port(), Some(AGENT_PORT));
        assert!(s.is_agent_port(AGENT_PORT));
        assert_eq!(s.other_ports().count(), 0);
    }

    #[test]
    fn stored_copies_read_with_defaults() {
        let s: TemplateSpec = serde_json::from_str(r#"{"image":"x","ports":[{"port":80}]}"#).unwrap();
        assert!(s.agent);
        assert_eq!(s.default_size, 1);
        assert_eq!(s.default_port(), None);
    }
}
