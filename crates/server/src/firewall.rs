//! The instances' egress policy, as host firewall rules (iptables and ip6tables).
//!
//! Per family, on the instances' bridge `IF` (chains named after it, so servers on
//! other bridges never touch them; `TAG` is `IF` without Docker's `br-`):
//!
//! * `BERTH-EGRESS-TAG`, hooked first in `DOCKER-USER` (which Docker keeps first in
//!   `FORWARD`), or first in `FORWARD` where there is no `DOCKER-USER` (`-i IF`): traffic from instances
//!   to anywhere but the host. Replies (ESTABLISHED,RELATED) pass; traffic back into
//!   the bridge (other instances) is rejected; each instance with a policy of its own
//!   jumps to its chain; DNS to the host's resolvers passes; then the operator's
//!   `--egress-allow` (accept) and `--egress-deny` (reject), then the default denies
//!   (private, CGNAT, link-local, loopback, multicast, reserved, ULA, the bridge's own
//!   subnets). What is left (the public internet) returns to Docker's own rules.
//! * `BERTH-INPUT-TAG`, hooked first in `INPUT` (`-i IF`): traffic from instances to
//!   the host itself. Replies pass; berth's own listening ports are refused (always,
//!   whatever a policy says: `BERTH-SHIELD-TAG`, where each server adds its own ports
//!   and removes none, so servers sharing a bridge keep each other's); ICMPv6 neighbour discovery passes; per-instance chains;
//!   DNS to the resolvers; the ports berth serves to instances ([`Firewall::served_ports`]:
//!   the managed LLM proxy's, under every policy, `none` included); the operator's allows;
//!   everything else is rejected.
//! * `BERTH-INST-TAG`: one rule per instance with a policy of its own (`-s ADDR -j
//!   BERTH-I-LABEL`, commented `berth:INSTALL/ID`), jumped to from both chains above.
//!   Each instance's rules are managed one by one, so two servers sharing a bridge
//!   never remove each other's; a server removes the rules of its own installation
//!   whose instance it does not know (purged while it was down), and instance chains
//!   nothing jumps to.
//! * `BERTH-I-LABEL`: an instance's own policy (`none`: the served ports, then reject;
//!   `allow`: DNS, the served ports, the operator's denies, its destinations, then reject).
//!
//! [`Firewall::sync`] lists each table once (`iptables -S`) and rewrites only what
//! differs from the desired rules (atomically, with `iptables-restore --noflush`);
//! the reconciler calls it every third pass, so a firewall reload or a rule deleted by
//! hand is back within seconds. [`Firewall::apply`] syncs after a change that alters a
//! rule, and only when no sync since covered it. The rules stay when the server stops: instances keep
//! running, and so does their policy.

use anyhow::{bail, Context};
use berth_core::egress::{Cidr, Destination, Egress};
use berth_core::InstanceId;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// IPv4 destinations instances never reach by default.
pub const DEFAULT_DENY_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// IPv6 destinations instances never reach by default.
pub const DEFAULT_DENY_V6: &[&str] = &["::/128", "::1/128", "::ffff:0:0/96", "fc00::/7", "fe80::/10", "ff00::/8"];

/// ICMPv6 types the host must accept from the bridge for IPv6 to work at all
/// (router solicitation, neighbour solicitation and advertisement).
const NDP_TYPES: &[u8] = &[133, 135, 136];

/// One of iptables' families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn cmd(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn restore(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    fn has(self, ip: IpAddr) -> bool {
        ip.is_ipv4() == (self == Family::V4)
    }

    fn reject(self) -> &'static str {
        match self {
            Family::V4 => "-j REJECT --reject-with icmp-port-unreachable",
            Family::V6 => "-j REJECT --reject-with icmp6-port-unreachable",
        }
    }

    fn host_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// What the server's configuration says about egress.
#[derive(Debug, Clone, Default)]
pub struct EgressConfig {
    /// The host interface instances' traffic arrives on (the bridge).
    pub interface: String,
    /// This installation's id: its instances' rules carry it in their comment.
    pub install: String,
    /// The bridge's subnets (instances' own addresses).
    pub subnets: Vec<Cidr>,
    /// DNS resolvers instances may query on port 53 (the host's `/etc/resolv.conf`).
    pub resolvers: Vec<IpAddr>,
    /// `--egress-allow`: accepted before the default denies.
    pub allow: Vec<Destination>,
    /// `--egress-deny`: rejected, in addition to the default denies.
    pub deny: Vec<Destination>,
    /// berth's own listening ports: never reachable from instances.
    pub berth_ports: Vec<u16>,
    /// Ports berth serves to instances on the host (TCP, the managed LLM proxy's):
    /// reachable from every instance, whatever its policy.
    pub served_ports: Vec<u16>,
}

/// What an instance should have: its policy and, once known, its addresses
/// (`Some(empty)`: known to have none, e.g. stopped; `None`: not known yet).
#[derive(Debug, Clone, Default, PartialEq)]
struct InstanceState {
    policy: Egress,
    addrs: Option<Vec<IpAddr>>,
}

/// What the rules should be. Locked only briefly, from async code too; a sync works
/// on a copy, so changes never wait for iptables.
#[derive(Debug, Clone, Default)]
struct Desired {
    instances: HashMap<InstanceId, InstanceState>,
    /// Instances forgotten (deleted) whose rules still need removing.
    gone: HashSet<InstanceId>,
    /// Bumped by every change that alters the rules.
    version: u64,
}

/// What a sync keeps between runs; held for a whole sync (on a blocking thread only).
#[derive(Default)]
struct Inner {
    /// The `Desired::version` the last successful sync brought the kernel to.
    synced: Option<u64>,
    /// Each chain we wrote: the rules as we wrote them, and as iptables printed them
    /// back right after (its own spelling may differ from ours).
    seen: HashMap<(Family, String), (Vec<String>, Vec<String>)>,
    /// When the shield chain was last checked for ports nothing listens on (reading
    /// `/proc/net/tcp` costs a walk of every socket of the host: with thousands of
    /// short connections it took a quarter of the server's CPU at every sync).
    stale_ports_checked: Option<std::time::Instant>,
}

/// How often the shield chain is pruned of ports nothing listens on any more.
const STALE_PORTS_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Inner {
    /// Whether `current` (a chain as listed now) holds `desired`: the same text, or
    /// what iptables printed right after we wrote exactly `desired`.
    fn holds(&self, f: Family, chain: &str, current: &[String], desired: &[String]) -> bool {
        current == desired
            || self.seen.get(&(f, chain.to_string())).is_some_and(|(d, printed)| d == desired && printed == current)
    }
}

/// The egress firewall of one bridge.
pub struct Firewall {
    cfg: EgressConfig,
    families: Vec<Family>,
    desired: Mutex<Desired>,
    inner: Mutex<Inner>,
}

/// The nameservers of a resolv.conf text.
pub fn parse_resolvers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        .filter_map(|w| w.split('%').next().and_then(|a| a.parse().ok()))
        .collect()
}

fn run(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// TCP ports something listens on, on the host (`/proc/net/tcp` and `tcp6`).
fn listening_ports() -> HashSet<u16> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|l| {
                    let mut w = l.split_whitespace();
                    let local = w.nth(1)?;
                    let state = w.nth(1)?;
                    let port = local.rsplit(':').next()?;
                    (state == "0A").then(|| u16::from_str_radix(port, 16).ok()).flatten()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `iptables -S` parsed: chain → its `-A` lines, and the chains that exist.
struct Listing {
    rules: HashMap<String, Vec<String>>,
    chains: HashSet<String>,
}

impl Listing {
    fn read(f: Family) -> anyhow::Result<Self> {
        let text = run(f.cmd(), &["-w", "-S"])?;
        let mut rules: HashMap<String, Vec<String>> = HashMap::new();
        let mut chains = HashSet::new();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            match (w.next(), w.next()) {
                (Some("-N" | "-P"), Some(c)) => {
                    chains.insert(c.to_string());
                }
                (Some("-A"), Some(c)) => rules.entry(c.to_string()).or_default().push(line.to_string()),
                _ => {}
            }
        }
        Ok(Listing { rules, chains })
    }

    fn chain(&self, name: &str) -> &[String] {
        self.rules.get(name).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The value after `flag` in a rule line.
fn arg<'a>(line: &'a str, flag: &str) -> Option<&'a str> {
    let mut w = line.split_whitespace();
    while let Some(x) = w.next() {
        if x == flag {
            return w.next();
        }
    }
    None
}

impl Firewall {
    /// A firewall for `cfg.interface`; which families exist is found out here
    /// (without `ip6tables` only IPv4 is handled, with a warning).
    pub fn new(cfg: EgressConfig) -> Self {
        let mut families = vec![Family::V4];
        match Command::new("ip6tables").args(["-w", "-S", "INPUT"]).stdout(Stdio::null()).output() {
            Ok(o) if o.status.success() => families.push(Family::V6),
            Ok(o) => tracing::warn!(
                error = %String::from_utf8_lossy(&o.stderr).trim(),
                "ip6tables does not work here; IPv6 egress rules are not installed"
            ),
            Err(e) => tracing::warn!(error = %e, "ip6tables is missing; IPv6 egress rules are not installed"),
        }
        Self { cfg, families, desired: Mutex::default(), inner: Mutex::default() }
    }

    /// The ports berth serves to instances on the host (none in this build; a
    /// managed LLM proxy would add its port here).
    pub fn served_ports(&self) -> &[u16] {
        &self.cfg.served_ports
    }

    fn tag(&self) -> &str {
        self.cfg.interface.strip_prefix("br-").unwrap_or(&self.cfg.interface)
    }

    /// `BERTH-EGRESS-TAG`, hooked from `DOCKER-USER` (or `FORWARD`).
    pub fn egress_chain(&self) -> String {
        format!("BERTH-EGRESS-{}", self.tag())
    }

    /// `BERTH-INPUT-TAG`, hooked from `INPUT`.
    pub fn input_chain(&self) -> String {
        format!("BERTH-INPUT-{}", self.tag())
    }

    /// `BERTH-SHIELD-TAG`: berth's own ports, refused.
    pub fn shield_chain(&self) -> String {
        format!("BERTH-SHIELD-{}", self.tag())
    }

    /// `BERTH-INST-TAG`: the per-instance jumps.
    pub fn dispatch_chain(&self) -> String {
        format!("BERTH-INST-{}", self.tag())
    }

    /// `BERTH-I-LABEL`: one instance's policy.
    pub fn instance_chain(id: &InstanceId) -> String {
        format!("BERTH-I-{}", id.label())
    }

    fn dns_rules(&self, f: Family, chain: &str) -> Vec<String> {
        let p = f.host_prefix();
        self.cfg
            .resolvers
            .iter()
            .filter(|r| f.has(**r))
            .flat_map(|r| {
                ["udp", "tcp"].map(|proto| format!("-A {chain} -d {r}/{p} -p {proto} -m {proto} --dport 53 -j ACCEPT"))
            })
            .collect()
    }

    fn dest_rules(f: Family, chain: &str, dests: &[Destination], target: &str) -> Vec<String> {
        dests
            .iter()
            .filter(|d| f.has(d.net.addr))
            .flat_map(|d| match d.port {
                None => vec![format!("-A {chain} -d {} {target}", d.net)],
                Some(port) => ["tcp", "udp"]
                    .map(|proto| format!("-A {chain} -d {} -p {proto} -m {proto} --dport {port} {target}", d.net))
                    .to_vec(),
            })
            .collect()
    }

    fn base_egress(&self, f: Family) -> Vec<String> {
        let c = self.egress_chain();
        let reject = f.reject();
        let mut r = vec![
            format!("-A {c} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
            format!("-A {c} -o {} {reject}", self.cfg.interface),
            format!("-A {c} -j {}", self.dispatch_chain()),
        ];
        r.extend(self.dns_rules(f, &c));
        r.extend(Self::dest_rules(f, &c, &self.cfg.allow, "-j ACCEPT"));
        r.extend(Self::dest_rules(f, &c, &self.cfg.deny, reject));
        let defaults = match f {
            Family::V4 => DEFAULT_DENY_V4,
            Family::V6 => DEFAULT_DENY_V6,
        };
        let mut nets: Vec<Cidr> = defaults.iter().filter_map(|s| s.parse().ok()).collect();
        for s in &self.cfg.subnets {
            if f.has(s.addr) && !nets.contains(s) {
                nets.push(*s);
            }
        }
        r.extend(nets.iter().map(|n| format!("-A {c} -d {n} {reject}")));
        r
    }

    fn base_input(&self, f: Family) -> Vec<String> {
        let c = self.input_chain();
        let mut r = vec![
            format!("-A {c} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
            format!("-A {c} -j {}", self.shield_chain()),
        ];
        if f == Family::V6 {
            r.extend(NDP_TYPES.iter().map(|t| format!("-A {c} -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j ACCEPT")));
        }
        r.push(format!("-A {c} -j {}", self.dispatch_chain()));
        r.extend(self.dns_rules(f, &c));
        r.extend(self.cfg.served_ports.iter().map(|p| format!("-A {c} -p tcp -m tcp --dport {p} -j ACCEPT")));
        r.extend(Self::dest_rules(f, &c, &self.cfg.allow, "-j ACCEPT"));
        r.push(format!("-A {c} {}", f.reject()));
        r
    }

    /// The rules of an instance's own chain; `None` when it needs none (`internet`).
    fn instance_rules(&self, f: Family, id: &InstanceId, policy: &Egress) -> Option<Vec<String>> {
        let c = Self::instance_chain(id);
        let reject = f.reject();
        let mut r = Vec::new();
        match policy {
            Egress::Internet => return None,
            // Not even the outside: only berth's own services for instances (the managed LLM proxy).
            Egress::None => r.extend(self.served_rules(&c)),
            Egress::Allow(list) => {
                r.extend(self.dns_rules(f, &c));
                r.extend(self.served_rules(&c));
                r.extend(Self::dest_rules(f, &c, &self.cfg.deny, reject));
                r.extend(Self::dest_rules(f, &c, list, "-j ACCEPT"));
            }
        }
        r.push(format!("-A {c} {reject}"));
        Some(r)
    }

    /// Accepts the ports berth serves to instances, on the host's own addresses only (an
    /// instance's chain sees forwarded traffic too: the same port elsewhere stays shut).
    fn served_rules(&self, c: &str) -> Vec<String> {
        self.cfg
            .served_ports
            .iter()
            .map(|p| format!("-A {c} -p tcp -m addrtype --dst-type LOCAL -m tcp --dport {p} -j ACCEPT"))
            .collect()
    }

    fn desired(&self) -> std::sync::MutexGuard<'_, Desired> {
        self.desired.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets an instance's policy (from its record); answers whether its rules change
    /// (they do only while it has addresses: a stopped instance has none).
    pub fn set_policy(&self, id: &InstanceId, policy: &Egress) -> bool {
        let mut d = self.desired();
        let revived = d.gone.remove(id);
        let st = d.instances.entry(id.clone()).or_default();
        let changed = st.policy != *policy && st.addrs.as_ref().is_some_and(|a| !a.is_empty());
        st.policy = policy.clone();
        if changed || revived {
            d.version += 1;
        }
        changed
    }

    /// Sets an instance's addresses on the bridge (empty: it has none now, e.g.
    /// stopped); answers whether they changed (not known and none are alike: an
    /// instance never seen with an address has no rules to remove).
    pub fn set_addresses(&self, id: &InstanceId, mut addrs: Vec<IpAddr>) -> bool {
        addrs.sort();
        let mut d = self.desired();
        let st = d.instances.entry(id.clone()).or_default();
        let changed = st.addrs.as_deref().unwrap_or_default() != addrs.as_slice();
        st.addrs = Some(addrs);
        if changed {
            d.version += 1;
        }
        changed
    }

    /// Forgets an instance (deleted): its rules go at the next sync. One this server
    /// never knew is left to the sync, which removes rules of instances it does not know.
    pub fn forget(&self, id: &InstanceId) {
        let mut d = self.desired();
        if d.instances.remove(id).is_some() {
            d.gone.insert(id.clone());
            d.version += 1;
        }
    }

    /// Brings the kernel's rules to the desired ones when they changed since the last
    /// sync; concurrent callers share one sync (a caller that waited for a sync that
    /// covered its change returns at once).
    pub fn apply(&self) -> anyhow::Result<()> {
        self.sync_if(false)
    }

    /// Brings the kernel's rules to the desired ones, rewriting only what differs
    /// (also what someone changed by hand). IPv4 failures are errors; IPv6 ones are logged.
    pub fn sync(&self) -> anyhow::Result<()> {
        self.sync_if(true)
    }

    fn sync_if(&self, always: bool) -> anyhow::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let desired = self.desired().clone();
        if !always && inner.synced == Some(desired.version) {
            return Ok(());
        }
        for &f in &self.families {
            // Another server on the bridge may change a rule between our listing and our
            // write (the write then fails as a whole): list again and retry.
            let mut result = self.sync_family(f, &desired, &mut inner);
            for _ in 0..3 {
                if result.is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
                result = self.sync_family(f, &desired, &mut inner);
            }
            match result {
                Ok(()) => {}
                Err(e) if f == Family::V6 => tracing::warn!(error = %e, "could not assert the IPv6 egress rules"),
                Err(e) => {
                    inner.synced = None;
                    return Err(e);
                }
            }
        }
        // Those forgotten since the copy was taken wait for the next sync.
        let mut d = self.desired();
        d.gone.retain(|id| !desired.gone.contains(id));
        inner.synced = Some(desired.version);
        Ok(())
    }

    fn sync_family(&self, f: Family, desired: &Desired, inner: &mut Inner) -> anyhow::Result<()> {
        let list = Listing::read(f)?;
        let mut script: Vec<String> = Vec::new();
        let mut written: Vec<(String, Vec<String>)> = Vec::new();
        let dispatch = self.dispatch_chain();
        if !list.chains.contains(&dispatch) {
            script.push(format!(":{dispatch} - [0:0]"));
        }
        let shield = self.shield_chain();
        if !list.chains.contains(&shield) {
            script.push(format!(":{shield} - [0:0]"));
        }
        for p in &self.cfg.berth_ports {
            let rule = format!("-A {shield} -p tcp -m tcp --dport {p} -j REJECT --reject-with tcp-reset");
            if !list.chain(&shield).contains(&rule) {
                script.push(rule);
            }
        }
        // Ports of servers gone (nothing listens on them any more): their rules go, or
        // the chain would grow with every server ever started on the bridge. Checked
        // once a minute, and the host's sockets are read only when there is a candidate.
        let others: Vec<(&String, u16)> = list
            .chain(&shield)
            .iter()
            .filter_map(|l| Some((l, arg(l, "--dport")?.parse::<u16>().ok()?)))
            .filter(|(_, p)| !self.cfg.berth_ports.contains(p))
            .collect();
        let due = inner.stale_ports_checked.is_none_or(|at| at.elapsed() >= STALE_PORTS_EVERY);
        if due && !others.is_empty() {
            let listening = listening_ports();
            for (l, port) in others {
                if !listening.contains(&port) {
                    script.push(l.replacen("-A ", "-D ", 1));
                }
            }
        }
        if due && f == *self.families.last().unwrap_or(&f) {
            inner.stale_ports_checked = Some(std::time::Instant::now());
        }
        // Instances' chains first: the base chains jump to the dispatch chain, which jumps to them.
        let dispatch_rules = list.chain(&dispatch);
        let mut delete: Vec<String> = Vec::new();
        let mut add: Vec<String> = Vec::new();
        let mut drop_chains: Vec<String> = Vec::new();
        let mut gone: Vec<String> = desired.gone.iter().map(Self::instance_chain).collect();
        // Dispatch rules by the chain they jump to and by their source address.
        let mut by_target: HashMap<&str, Vec<&String>> = HashMap::new();
        let mut by_source: HashMap<&str, Vec<&String>> = HashMap::new();
        for l in dispatch_rules {
            if let Some(t) = arg(l, "-j") {
                by_target.entry(t).or_default().push(l);
            }
            if let Some(src) = arg(l, "-s") {
                by_source.entry(src).or_default().push(l);
            }
        }
        let known_ids: HashSet<&str> = desired.instances.keys().map(|k| k.as_str()).collect();
        // Rules of this installation for instances it does not know (purged while the
        // server was down, a create interrupted by a crash).
        let ours = format!("\"berth:{}/", self.cfg.install);
        for l in dispatch_rules {
            let Some(id) = arg(l, "--comment").and_then(|c| c.strip_prefix(ours.as_str())) else { continue };
            let id = id.trim_end_matches('"');
            if !known_ids.contains(id) {
                if let Some(target) = arg(l, "-j") {
                    gone.push(target.to_string());
                }
            }
        }
        // Instance chains nothing jumps to do nothing: leftovers, removed.
        let referenced: HashSet<&str> = list.rules.values().flatten().filter_map(|l| arg(l, "-j")).collect();
        let known: HashSet<String> = desired.instances.keys().map(Self::instance_chain).collect();
        for c in &list.chains {
            if c.starts_with("BERTH-I-") && !referenced.contains(c.as_str()) && !known.contains(c) {
                gone.push(c.clone());
            }
        }
        gone.sort();
        gone.dedup();
        for chain in gone {
            delete.extend(by_target.get(chain.as_str()).into_iter().flatten().map(|l| (*l).clone()));
            if list.chains.contains(&chain) {
                drop_chains.push(chain);
            }
        }
        for (id, st) in &desired.instances {
            let Some(addrs) = &st.addrs else { continue };
            let chain = Self::instance_chain(id);
            let mine: Vec<String> =
                addrs.iter().filter(|a| f.has(**a)).map(|a| format!("{a}/{}", f.host_prefix())).collect();
            let want = if mine.is_empty() { None } else { self.instance_rules(f, id, &st.policy) };
            // Rules naming this instance's chain from another address, and rules from its
            // address to another chain (left by an instance that had the address before), go.
            let to_chain = by_target.get(chain.as_str()).map(Vec::as_slice).unwrap_or_default();
            for l in to_chain {
                let our_addr = mine.iter().any(|m| Some(m.as_str()) == arg(l, "-s"));
                if want.is_none() || !our_addr {
                    delete.push((*l).clone());
                }
            }
            for m in &mine {
                for l in by_source.get(m.as_str()).into_iter().flatten() {
                    if arg(l, "-j") != Some(chain.as_str()) {
                        delete.push((*l).clone());
                    }
                }
            }
            match want {
                None => {
                    if list.chains.contains(&chain) {
                        drop_chains.push(chain);
                    }
                }
                Some(rules) => {
                    let exists = list.chains.contains(&chain);
                    if !exists || !inner.holds(f, &chain, list.chain(&chain), &rules) {
                        script.push(format!(":{chain} - [0:0]"));
                        script.push(format!("-F {chain}"));
                        script.extend(rules.iter().cloned());
                        written.push((chain.clone(), rules));
                    }
                    for m in &mine {
                        let present = to_chain.iter().any(|l| arg(l, "-s") == Some(m.as_str()));
                        if !present {
                            add.push(format!(
                                "-A {dispatch} -s {m} -m comment --comment \"berth:{}/{id}\" -j {chain}",
                                self.cfg.install
                            ));
                        }
                    }
                }
            }
        }
        delete.sort();
        delete.dedup();
        script.extend(delete.iter().map(|l| l.replacen("-A ", "-D ", 1)));
        script.extend(add);
        for c in &drop_chains {
            script.push(format!("-F {c}"));
            script.push(format!("-X {c}"));
        }
        // The base chains and their hooks.
        for (chain, rules, hook) in
            [(self.egress_chain(), self.base_egress(f), "FORWARD"), (self.input_chain(), self.base_input(f), "INPUT")]
        {
            if !list.chains.contains(&chain) || !inner.holds(f, &chain, list.chain(&chain), &rules) {
                if !list.chains.contains(&chain) {
                    script.push(format!(":{chain} - [0:0]"));
                }
                script.push(format!("-F {chain}"));
                script.extend(rules.iter().cloned());
                written.push((chain.clone(), rules));
            }
            // Forwarded traffic: in DOCKER-USER, which Docker keeps first in FORWARD (it
            // inserts each new network's rules at the top of FORWARD, above anything of
            // ours there); without it (no Docker iptables, IPv6), first in FORWARD.
            let hook = if hook == "FORWARD" && list.chains.contains("DOCKER-USER") { "DOCKER-USER" } else { hook };
            let ours =
                |l: &&String| arg(l, "-j") == Some(chain.as_str()) && arg(l, "-i") == Some(self.cfg.interface.as_str());
            let rules = list.chain(hook);
            // Ours must come before anything but other hooks of berth.
            let first_other = rules.iter().position(|l| !arg(l, "-j").is_some_and(|j| j.starts_with("BERTH-")));
            let at = rules.iter().position(|l| ours(&l));
            let misplaced = match (at, first_other) {
                (None, _) => true,
                (Some(i), Some(other)) => i > other,
                (Some(_), None) => false,
            };
            if misplaced {
                if let Some(i) = at {
                    script.push(rules[i].replacen("-A ", "-D ", 1));
                }
                script.push(format!("-I {hook} 1 -i {} -j {chain}", self.cfg.interface));
                tracing::info!(family = f.cmd(), hook, chain = %chain, "hooking the instances' egress chain first");
            }
            if hook == "DOCKER-USER" {
                // A hook left in FORWARD (before DOCKER-USER existed) goes.
                for l in list.chain("FORWARD").iter().filter(|l| ours(l)) {
                    script.push(l.replacen("-A ", "-D ", 1));
                }
            }
        }
        if script.is_empty() {
            return Ok(());
        }
        write_rules(f, &script)?;
        for c in &drop_chains {
            inner.seen.remove(&(f, c.clone()));
        }
        if !written.is_empty() {
            let after = Listing::read(f)?;
            for (c, desired) in written {
                let printed = after.chain(&c).to_vec();
                inner.seen.insert((f, c), (desired, printed));
            }
        }
        Ok(())
    }
}

/// Applies rule lines (`-A`, `-D`, `-F`, chain declarations) in one `*-restore` call.
fn write_rules(f: Family, script: &[String]) -> anyhow::Result<()> {
    let text = format!("*filter\n{}\nCOMMIT\n", script.join("\n"));
    tracing::debug!(family = f.cmd(), rules = %text, "writing egress rules");
    let mut child = Command::new(f.restore())
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", f.restore()))?;
    child.stdin.take().context("stdin")?.write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{} refused the egress rules: {}", f.restore(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The source address of a dispatch rule (`-s 172.18.0.5/32`).
fn source_of(rule: &str) -> Option<IpAddr> {
    arg(rule, "-s")?.split('/').next()?.parse().ok()
}

impl Firewall {
    /// The dispatch rules on the bridge now, of every server using it: list them
    /// *before* reading which addresses the bridge's containers hold, then hand both to
    /// [`Firewall::prune_vacant`].
    pub fn dispatch_listing(&self) -> anyhow::Result<Vec<(Family, String)>> {
        let mut out = Vec::new();
        for &f in &self.families {
            match Listing::read(f) {
                Ok(list) => out.extend(list.chain(&self.dispatch_chain()).iter().map(|l| (f, l.clone()))),
                Err(e) if f == Family::V6 => tracing::debug!(error = %e, "no IPv6 listing"),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Removes the rules of `listed` whose source address no container on the bridge
    /// holds (`held`, read after `listed`): left by a server killed with its instances
    /// then removed, they would give the next container to get that address (an
    /// instance, a template build) the policy of one long gone. A rule added after the
    /// listing is never touched, so an instance another server just started keeps its
    /// own. Answers how many went.
    pub fn prune_vacant(&self, listed: &[(Family, String)], held: &HashSet<IpAddr>) -> anyhow::Result<usize> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // What it removes is not ours to keep, but the next change-driven sync looks again.
        inner.synced = None;
        let mut removed = 0;
        for &f in &self.families {
            let vacant: Vec<&String> = listed
                .iter()
                .filter(|(lf, l)| *lf == f && source_of(l).is_some_and(|a| !held.contains(&a)))
                .map(|(_, l)| l)
                .collect();
            if vacant.is_empty() {
                continue;
            }
            // Still there (another server may have removed some meanwhile).
            let now = Listing::read(f)?;
            let present = now.chain(&self.dispatch_chain());
            let script: Vec<String> =
                vacant.into_iter().filter(|l| present.contains(l)).map(|l| l.replacen("-A ", "-D ", 1)).collect();
            if script.is_empty() {
                continue;
            }
            for l in &script {
                tracing::info!(rule = %l, "removing an egress rule for an address no container holds");
            }
            write_rules(f, &script)?;
            removed += script.len();
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dispatch_rules_source_is_its_address() {
        let l = "-A BERTH-INST-x -s 172.18.0.13/32 -m comment --comment \"berth:a/inst_b\" -j BERTH-I-b";
        assert_eq!(source_of(l), Some("172.18.0.13".parse().unwrap()));
        assert_eq!(source_of("-A BERTH-INST-x -s fd00::5/128 -j BERTH-I-b"), Some("fd00::5".parse().unwrap()));
        assert_eq!(source_of("-A BERTH-INST-x -j RETURN"), None);
    }

    fn fw() -> Firewall {
        Firewall {
            cfg: EgressConfig {
                interface: "br-0123456789ab".into(),
                install: "test".into(),
                subnets: vec!["172.18.0.0/16".parse().unwrap()],
                resolvers: vec!["10.255.255.53".parse().unwrap()],
                allow: vec![Destination::parse("10.1.2.0/24:5432").unwrap()],
                deny: vec![Destination::parse("8.8.8.8").unwrap()],
                berth_ports: vec![7070, 7071],
                served_ports: vec![],
            },
            families: vec![Family::V4, Family::V6],
            desired: Mutex::default(),
            inner: Mutex::default(),
        }
    }

    #[test]
    fn only_changes_that_alter_rules_call_for_a_sync() {
        let f = fw();
        let id = InstanceId::generate();
        let none = Egress::None;
        let ip: IpAddr = "172.18.0.9".parse().unwrap();
        let version = |f: &Firewall| f.desired().version;
        // A stopped instance seen for the first time: nothing to write.
        assert!(!f.set_policy(&id, &none));
        assert!(!f.set_addresses(&id, vec![]));
        assert_eq!(version(&f), 0);
        // It starts: its address needs rules.
        assert!(f.set_addresses(&id, vec![ip]));
        assert!(!f.set_addresses(&id, vec![ip]), "the same address again changes nothing");
        assert!(f.set_policy(&id, &Egress::Internet), "a new policy for an instance with an address");
        assert!(!f.set_policy(&id, &Egress::Internet));
        assert_eq!(version(&f), 2);
        // It stops, then goes.
        assert!(f.set_addresses(&id, vec![]));
        f.forget(&id);
        assert_eq!(version(&f), 4);
        assert!(f.desired().gone.contains(&id));
        // Forgetting it again, or one never known, changes nothing.
        f.forget(&id);
        f.forget(&InstanceId::generate());
        assert_eq!(version(&f), 4);
    }

    #[test]
    fn listening_ports_include_one_we_listen_on() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(listening_ports().contains(&l.local_addr().unwrap().port()));
    }

    #[test]
    fn resolvers_are_read_from_resolv_conf() {
        let text = "# x\nnameserver 10.255.255.53\nsearch lan\nnameserver fe80::1%eth0\nnameserver bogus\n";
        assert_eq!(parse_resolvers(text), vec!["10.255.255.53".parse::<IpAddr>().unwrap(), "fe80::1".parse().unwrap()]);
    }

    #[test]
    fn chains_are_named_after_the_bridge_and_fit_iptables() {
        let f = fw();
        assert_eq!(f.egress_chain(), "BERTH-EGRESS-0123456789ab");
        assert_eq!(f.input_chain(), "BERTH-INPUT-0123456789ab");
        let mut long = fw();
        long.cfg.interface = "abcdefghijklmno".into();
        assert!(long.egress_chain().len() <= 28);
    }

    #[test]
    fn the_default_egress_order_is_replies_icc_instances_dns_allow_deny_defaults() {
        let f = fw();
        let r = f.base_egress(Family::V4);
        let pos = |needle: &str| r.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle}: {r:?}"));
        assert!(pos("ESTABLISHED") < pos("-o br-0123456789ab"));
        assert!(pos("-o br-") < pos("-j BERTH-INST-"));
        assert!(pos("-j BERTH-INST-") < pos("10.255.255.53/32"));
        assert!(pos("10.255.255.53/32") < pos("10.1.2.0/24"));
        assert!(pos("10.1.2.0/24") < pos("8.8.8.8/32"));
        assert!(pos("8.8.8.8/32") < pos("-d 10.0.0.0/8"));
        for n in ["169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "172.18.0.0/16"] {
            pos(&format!("-d {n} -j REJECT"));
        }
        assert!(!r.iter().any(|l| l.contains("192.0.2.0") || l.contains("198.51.100") || l.contains("203.0.113")));
        let v6 = f.base_egress(Family::V6);
        assert!(
            v6.iter().any(|l| l.contains("-d fe80::/10 -j REJECT"))
                && v6.iter().any(|l| l.contains("-d fc00::/7 -j REJECT"))
        );
        assert!(!v6.iter().any(|l| l.contains("10.")));
        let input = f.base_input(Family::V4);
        assert_eq!(input[1], "-A BERTH-INPUT-0123456789ab -j BERTH-SHIELD-0123456789ab");
        assert!(input.last().unwrap().ends_with("-j REJECT --reject-with icmp-port-unreachable"));
    }

    #[test]
    fn instance_chains_follow_the_policy() {
        let f = fw();
        let id = InstanceId::parse("inst_abcdefghij").unwrap();
        assert!(f.instance_rules(Family::V4, &id, &Egress::Internet).is_none());
        assert_eq!(
            f.instance_rules(Family::V4, &id, &Egress::None).unwrap(),
            vec!["-A BERTH-I-abcdefghij -j REJECT --reject-with icmp-port-unreachable"]
        );
        let allow = Egress::Allow(vec![Destination::parse("172.18.0.1/32:9000").unwrap()]);
        let r = f.instance_rules(Family::V4, &id, &allow).unwrap();
        assert!(r[0].contains("10.255.255.53/32 -p udp"), "{r:?}");
        assert!(r.iter().any(|l| l == "-A BERTH-I-abcdefghij -d 172.18.0.1/32 -p tcp -m tcp --dport 9000 -j ACCEPT"));
        assert!(r.last().unwrap().contains("REJECT"));
    }
}
