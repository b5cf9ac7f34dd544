//! What every driver puts in an instance the same way: berth's own environment, the
//! main program (the agent, a template's command, or the image's own) and the
//! capabilities an instance keeps.

use crate::build::{CA_PATH, CA_VARS};
use crate::{InstanceSpec, AGENT_PORT, HOME_DIR};

/// Path of the agent binary inside every instance (mounted or copied there).
pub const AGENT_PATH: &str = "/opt/berth/bin/berth-agent";

/// Capabilities an agent computer keeps: enough to install packages, own files and
/// switch users, not enough to touch the network stack, devices or the kernel.
pub const KEPT_CAPS: &[&str] =
    &["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "NET_BIND_SERVICE"];

/// The agent's setting for the user its tools run as.
pub const TOOL_USER_VAR: &str = "BERTH_AGENT_TOOL_USER";
/// The unprivileged user (and group) the agent's tools run as by default.
pub const TOOL_USER: &str = "1000:1000";

/// The client's environment as the instance gets it: berth's own `BERTH_INSTANCE*`
/// names are not the client's to set.
pub fn client_env(spec: &InstanceSpec) -> impl Iterator<Item = (&String, &String)> {
    spec.env.iter().filter(|(k, _)| !k.starts_with("BERTH_INSTANCE"))
}

/// berth's own variables, set beside the client's: `HOME`, `BERTH_INSTANCE_ID`, the
/// agent's tool user and, with a CA bundle, the variables pointing TLS clients at it
/// (each unless the client's environment sets it).
pub fn own_env(spec: &InstanceSpec, ca_bundle: bool) -> Vec<(String, String)> {
    let mut env = vec![("HOME".to_string(), HOME_DIR.to_string()), ("BERTH_INSTANCE_ID".into(), spec.id.to_string())];
    // The agent runs its tools as this user, away from its secrets (a tenant may say
    // otherwise in its own env, e.g. `0` for tools that must be root).
    if spec.agent && !spec.env.contains_key(TOOL_USER_VAR) {
        env.push((TOOL_USER_VAR.into(), TOOL_USER.into()));
    }
    // TLS clients trust the host's CA bundle (a TLS-intercepting proxy's CA among
    // them), unless the template or the instance points them elsewhere.
    if ca_bundle {
        env.extend(CA_VARS.iter().filter(|v| !spec.env.contains_key(**v)).map(|v| (v.to_string(), CA_PATH.into())));
    }
    env
}

/// The instance's main program: (entrypoint, arguments, working directory), each
/// `None` where the image's own applies. With the agent, the agent serves on
/// [`AGENT_PORT`] and runs the template's command as its child; without, the command
/// replaces the image's entrypoint and command; with neither, the image runs as it is.
pub fn main_program(spec: &InstanceSpec) -> (Option<Vec<String>>, Option<Vec<String>>, Option<String>) {
    if spec.agent {
        let mut cmd =
            vec!["--listen".into(), format!("0.0.0.0:{AGENT_PORT}"), "--data".into(), format!("{HOME_DIR}/.berth")];
        if let Some(main) = spec.command.as_ref().filter(|c| !c.is_empty()) {
            cmd.push("--".into());
            cmd.extend(main.iter().cloned());
        }
        (Some(vec![AGENT_PATH.into()]), Some(cmd), Some(HOME_DIR.into()))
    } else {
        match spec.command.as_ref().filter(|c| !c.is_empty()) {
            // The whole command replaces the image's entrypoint and command.
            Some(main) => (Some(main[..1].to_vec()), Some(main[1..].to_vec()), None),
            // The image runs as it would under `docker run`.
            None => (None, None, None),
        }
    }
}
