//! Records as clients see them: env redacted, URLs derived from the id.

use crate::state::Settings;
use berth_api_types::{Budget, Instance, Lifecycle, Port, ResourcesInfo, SizeInfo, TemplateRef};
use berth_core::size;
use berth_store::InstanceRecord;

/// The URL of a host label (an instance label or a port handle) under the edge's domain.
pub fn instance_url(settings: &Settings, label: &str) -> String {
    let scheme = if settings.tls { "https" } else { "http" };
    match (settings.tls, settings.edge_port) {
        (false, 80) | (true, 443) => format!("{scheme}://{label}.{}", settings.domain),
        (_, port) => format!("{scheme}://{label}.{}:{port}", settings.domain),
    }
}

/// Every routed port of an instance: the template's default port (the agent's for the
/// system template) first, then the ones under handles.
pub fn ports(settings: &Settings, r: &InstanceRecord) -> Vec<Port> {
    let default = crate::templates::spec_of(r).default_port();
    let mut ports: Vec<Port> = default
        .map(|port| Port { port, default: true, url: instance_url(settings, r.id.label()) })
        .into_iter()
        .collect();
    ports.extend(r.exposed.iter().map(|p| Port {
        port: p.port,
        default: false,
        url: instance_url(settings, &p.handle),
    }));
    ports
}

/// The instance object of a record.
pub fn instance(settings: &Settings, r: &InstanceRecord) -> Instance {
    let spec = size::lookup(r.size).unwrap_or(size::SIZES[0]);
    let template = crate::templates::spec_of(r);
    let url = template.default_port().map(|_| instance_url(settings, r.id.label()));
    use berth_core::money::micros_to_usd;
    let remaining = r.budget_cap_micros.map(|c| (c.saturating_add(r.topup_micros) - r.managed_used_micros).max(0));
    Instance {
        id: r.id.to_string(),
        object: "instance".into(),
        name: r.name.clone(),
        status: r.status.as_str().into(),
        status_reason: r.status_reason.clone(),
        template: TemplateRef { id: r.template.clone(), version: r.template_version },
        agents: template.agents.clone(),
        size: SizeInfo {
            size: spec.size,
            vcpu: spec.vcpu,
            memory_mb: spec.memory_mb,
            disk_gb: spec.disk_gb,
            cpu_limit: spec.vcpu.min(settings.host_cpus.max(1)),
        },
        resources: {
            let got = berth_core::Resources::effective(&spec, r.resources.as_ref());
            ResourcesInfo {
                cpu: size::cpu_text(got.cpu_millis),
                memory_mb: got.memory_mb,
                cpu_limit: size::cpu_text(got.cpu_limit_millis),
                memory_limit_mb: got.memory_limit_mb,
                custom: r.resources.is_some(),
            }
        },
        user: r.user.clone(),
        region: r.region.clone(),
        metadata: r.metadata.clone(),
        env: r.env.keys().map(|k| (k.clone(), "***".to_string())).collect(),
        ports: ports(settings, r),
        url,
        budget: Budget {
            managed_cap_usd: r.budget_cap_micros.map(micros_to_usd),
            managed_used_usd: micros_to_usd(r.managed_used_micros),
            remaining_usd: remaining.map(micros_to_usd),
            topup_micros: r.topup_micros,
            managed_used_micros: r.managed_used_micros,
            models: r.budget_models.clone(),
        },
        lifecycle: Lifecycle { mode: r.lifecycle_mode.clone(), idle_timeout_secs: r.idle_timeout_secs },
        update_available: settings.templates.latest(&r.template).is_some_and(|v| v > r.template_version),
        restart_count: r.restart_count,
        created_at: r.created_at,
        updated_at: r.updated_at,
        deleted_at: r.deleted_at,
        hold_until: r.hold_until.filter(|t| *t > berth_core::now_secs()),
        network: berth_api_types::Network {
            egress: serde_json::to_value(&r.egress).unwrap_or(serde_json::Value::Null),
        },
    }
}
