//! Keeps instances away from the control plane when it listens beyond loopback.
//!
//! Instances reach the host through their bridge's gateway address. On loopback the
//! hosting API and the edge are out of their reach anyway; on any other address a
//! host firewall rule is needed, and berth refuses to start without one.

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::process::Command;

/// Ports of `addrs` that listen beyond loopback.
pub fn exposed_ports(addrs: &[SocketAddr]) -> Vec<u16> {
    addrs.iter().filter(|a| !a.ip().is_loopback()).map(|a| a.port()).collect()
}

/// The rule (without its `-C`/`-I`/`-D` verb) keeping `interface` off `port`.
fn rule<'a>(interface: &'a str, port: &'a str) -> [&'a str; 11] {
    ["INPUT", "-i", interface, "-p", "tcp", "--dport", port, "-j", "REJECT", "--reject-with", "tcp-reset"]
}

/// Rejects TCP connections from `interface` (the instances' bridge) to `ports`.
pub fn shield(interface: &str, ports: &[u16]) -> anyhow::Result<()> {
    for port in ports {
        let port = port.to_string();
        let rule = rule(interface, &port);
        let present =
            Command::new("iptables").arg("-C").args(rule).output().map(|o| o.status.success()).unwrap_or(false);
        if present {
            continue;
        }
        let out = Command::new("iptables").arg("-I").args(rule).output().context(
            "running iptables (needed to keep instances away from a control plane listening beyond loopback)",
        )?;
        if !out.status.success() {
            bail!(
                "iptables refused the rule keeping instances off port {port}: {}; listen on 127.0.0.1 or run as root",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        tracing::info!(interface, port = %port, "instances are kept off this port by a host firewall rule");
    }
    Ok(())
}

/// Removes the rules [`shield`] added (at a clean shutdown: nothing listens then).
pub fn unshield(interface: &str, ports: &[u16]) {
    for port in ports {
        let port = port.to_string();
        let _ = Command::new("iptables").arg("-D").args(rule(interface, &port)).output();
    }
}

#[cfg(test)]
mod tests {
    use super::exposed_ports;

    #[test]
    fn only_non_loopback_listeners_need_a_rule() {
        let addrs = ["127.0.0.1:7070".parse().unwrap(), "0.0.0.0:7071".parse().unwrap(), "[::1]:7072".parse().unwrap()];
        assert_eq!(exposed_ports(&addrs), vec![7071]);
    }
}
