//! [`EdgeRoutes`]: the edge's routing table, in memory. A host's first label (an
//! instance label or a port handle) maps to the instance, its container address,
//! status and gateway token, so forwarding a request needs no database read and no
//! Docker call.
//!
//! It is fed through three calls: [`EdgeRoutes::apply`] whenever an instance's
//! record changes (lifecycle operations, PATCH, the reconciler's pass),
//! [`EdgeRoutes::set_address`] when a container's address is learned or becomes
//! stale (a stop, restart or recreate begins; Docker reports the container died),
//! and [`EdgeRoutes::remove`] when an instance is gone. A replica fed by database
//! notifications calls the same three.

use crate::activity::{Activity, InstanceActivity};
use berth_core::{InstanceId, Status, WorkspaceId};
use berth_store::InstanceRecord;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// What the edge needs to forward to one instance (an immutable snapshot,
/// replaced on every change).
#[derive(Debug)]
pub struct Target {
    pub id: InstanceId,
    pub workspace: WorkspaceId,
    pub status: Status,
    /// Stopped for idleness: a request wakes it.
    pub wake_on_request: bool,
    /// `Bearer {gateway token}`: replaces the client's key on requests to the agent's port.
    pub gateway_auth: Option<http::HeaderValue>,
    /// The container's address while it runs, when known.
    pub ip: Option<IpAddr>,
    /// Bumped whenever the address becomes stale, so a late lookup cannot restore an old one.
    pub generation: u64,
    /// Port served at the instance's own label (its template's default port), if any.
    pub default_port: Option<u16>,
    /// berth-agent serves [`AGENT_PORT`]: requests to that port get the gateway token.
    pub agent: bool,
    /// Every routed host label of the instance (its label and its port handles).
    hosts: Vec<Box<str>>,
    pub activity: Arc<InstanceActivity>,
}

/// Where a host label leads.
#[derive(Debug, Clone)]
pub struct HostRoute {
    pub target: Arc<Target>,
    /// The container port.
    pub port: u16,
    /// The instance's own label (the default port) rather than a port handle.
    pub is_default: bool,
}

#[derive(Debug, Clone)]
struct HostEntry {
    id: InstanceId,
    port: u16,
    is_default: bool,
}

#[derive(Default)]
struct Tables {
    targets: HashMap<InstanceId, Arc<Target>>,
    hosts: HashMap<Box<str>, HostEntry>,
}

/// The routing table.
pub struct EdgeRoutes {
    tables: RwLock<Tables>,
    activity: Arc<Activity>,
}

impl EdgeRoutes {
    /// An empty table whose targets share `activity`.
    pub fn new(activity: Arc<Activity>) -> Self {
        Self { tables: RwLock::default(), activity }
    }

    /// Where a host label (instance label or port handle) leads.
    pub fn lookup(&self, label: &str) -> Option<HostRoute> {
        let t = self.tables.read().unwrap_or_else(|e| e.into_inner());
        let h = t.hosts.get(label)?;
        let target = t.targets.get(&h.id)?.clone();
        Some(HostRoute { target, port: h.port, is_default: h.is_default })
    }

    /// The current snapshot of an instance.
    pub fn target(&self, id: &InstanceId) -> Option<Arc<Target>> {
        self.tables.read().unwrap_or_else(|e| e.into_inner()).targets.get(id).cloned()
    }

    /// Brings an instance's entry in line with its record. The known address is
    /// kept only while the instance stays `running`.
    pub fn apply(&self, rec: &InstanceRecord) {
        // Nothing reaches a warm pool instance before it is claimed.
        if rec.status == Status::Deleted || crate::pool::is_pool(&rec.workspace_id) {
            self.remove(&rec.id);
            return;
        }
        let activity = self.activity.of(&rec.id);
        activity.set_hold(rec.hold_until.unwrap_or(0));
        let mut t = self.tables.write().unwrap_or_else(|e| e.into_inner());
        let old = t.targets.get(&rec.id).cloned();
        let running = rec.status == Status::Running;
        let (ip, generation) = match &old {
            Some(o) if running => (o.ip, o.generation),
            Some(o) => (None, o.generation + 1),
            None => (None, 0),
        };
        let template = crate::templates::spec_of(rec);
        let default_port = template.default_port();
        let mut hosts: Vec<Box<str>> = vec![rec.id.label().into()];
        hosts.extend(rec.exposed.iter().map(|p| Box::<str>::from(p.handle.as_str())));
        if let Some(o) = &old {
            for h in &o.hosts {
                t.hosts.remove(h);
            }
        }
        if let Some(port) = default_port {
            t.hosts.insert(rec.id.label().into(), HostEntry { id: rec.id.clone(), port, is_default: true });
        }
        for p in &rec.exposed {
            t.hosts.insert(p.handle.as_str().into(), HostEntry { id: rec.id.clone(), port: p.port, is_default: false });
        }
        let target = Target {
            id: rec.id.clone(),
            workspace: rec.workspace_id.clone(),
            status: rec.status,
            wake_on_request: rec.idle_stopped && rec.status == Status::Stopped,
            gateway_auth: rec
                .gateway_token
                .as_deref()
                .and_then(|t| http::HeaderValue::from_str(&format!("Bearer {t}")).ok())
                .map(|mut v| {
                    v.set_sensitive(true);
                    v
                }),
            ip,
            generation,
            default_port,
            agent: template.agent,
            hosts,
            activity,
        };
        t.targets.insert(rec.id.clone(), Arc::new(target));
    }

    /// Records the container's address (`None`: it is stale from now on). With
    /// `if_generation`, only when no invalidation happened since that snapshot.
    pub fn set_address(&self, id: &InstanceId, ip: Option<IpAddr>, if_generation: Option<u64>) {
        let mut t = self.tables.write().unwrap_or_else(|e| e.into_inner());
        let Some(old) = t.targets.get(id) else { return };
        if if_generation.is_some_and(|g| g != old.generation) || old.ip == ip {
            return;
        }
        let generation = if ip.is_none() { old.generation + 1 } else { old.generation };
        let next = Target {
            id: old.id.clone(),
            workspace: old.workspace.clone(),
            status: old.status,
            wake_on_request: old.wake_on_request,
            gateway_auth: old.gateway_auth.clone(),
            ip,
            generation,
            default_port: old.default_port,
            agent: old.agent,
            hosts: old.hosts.clone(),
            activity: old.activity.clone(),
        };
        t.targets.insert(id.clone(), Arc::new(next));
    }

    /// Forgets an instance and every host that led to it.
    pub fn remove(&self, id: &InstanceId) {
        let mut t = self.tables.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = t.targets.remove(id) {
            for h in &old.hosts {
                t.hosts.remove(h);
            }
        }
        drop(t);
        self.activity.forget(id);
    }

    /// Number of instances in the table.
    pub fn len(&self) -> usize {
        self.tables.read().unwrap_or_else(|e| e.into_inner()).targets.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_store::ExposedPort;

    fn record(status: Status) -> InstanceRecord {
        InstanceRecord {
            seq: 1,
            id: InstanceId::generate(),
            workspace_id: WorkspaceId::generate(),
            name: None,
            template: "berth-agent".into(),
            template_version: 1,
            template_spec: None,
            resources: None,
            size: 1,
            user: None,
            region: "local".into(),
            metadata: Default::default(),
            env: Default::default(),
            budget_cap_micros: None,
            budget_models: None,
            managed_used_micros: 0,
            topup_micros: 0,
            lifecycle_mode: "always_on".into(),
            idle_timeout_secs: None,
            status,
            status_reason: None,
            restart_count: 0,
            created_at: 0,
            updated_at: 0,
            deleted_at: None,
            gateway_token: Some("tok".into()),
            last_request_at: None,
            exposed: vec![ExposedPort { port: 8080, handle: "h".repeat(20) }],
            idle_stopped: false,
            hold_until: None,
            requests_total: 0,
            egress: Default::default(),
            paid_until: None,
            pooled: false,
        }
    }

    #[test]
    fn labels_and_handles_route_to_their_ports() {
        let routes = EdgeRoutes::new(Arc::default());
        let rec = record(Status::Running);
        routes.apply(&rec);
        let r = routes.lookup(rec.id.label()).unwrap();
        assert_eq!((r.port, r.is_default), (berth_runtime::AGENT_PORT, true));
        let r = routes.lookup(&"h".repeat(20)).unwrap();
        assert_eq!((r.port, r.is_default), (8080, false));
        assert!(routes.lookup("nothing").is_none());
    }

    #[test]
    fn an_address_survives_only_while_running() {
        let routes = EdgeRoutes::new(Arc::default());
        let mut rec = record(Status::Running);
        routes.apply(&rec);
        let ip: IpAddr = "172.18.0.5".parse().unwrap();
        routes.set_address(&rec.id, Some(ip), None);
        routes.apply(&rec);
        assert_eq!(routes.target(&rec.id).unwrap().ip, Some(ip), "an unrelated change keeps it");
        rec.status = Status::Stopped;
        routes.apply(&rec);
        let stopped = routes.target(&rec.id).unwrap();
        assert_eq!(stopped.ip, None, "a stop makes it stale");
        // A lookup that began before the stop cannot put the old address back.
        routes.set_address(&rec.id, Some(ip), Some(stopped.generation - 1));
        assert_eq!(routes.target(&rec.id).unwrap().ip, None);
    }

    #[test]
    fn removed_ports_and_deleted_instances_stop_routing() {
        let routes = EdgeRoutes::new(Arc::default());
        let mut rec = record(Status::Running);
        routes.apply(&rec);
        rec.exposed.clear();
        routes.apply(&rec);
        assert!(routes.lookup(&"h".repeat(20)).is_none());
        rec.status = Status::Deleted;
        routes.apply(&rec);
        assert!(routes.lookup(rec.id.label()).is_none());
        assert!(routes.is_empty());
    }
}
