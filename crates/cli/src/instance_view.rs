//! How instances read for people: the list table and the detail view.

use crate::output::{self, or_dash};
use berth_api_types::Instance;
use std::collections::BTreeMap;

/// ID, NAME, STATUS, SIZE, USER, URL, AGE: one row per instance.
pub fn table(instances: &[Instance]) {
    let now = output::now();
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            vec![
                i.id.clone(),
                or_dash(i.name.as_deref()),
                i.status.clone(),
                i.size.size.to_string(),
                or_dash(i.user.as_deref()),
                or_dash(i.url.as_deref()),
                output::age(i.created_at, now),
            ]
        })
        .collect();
    output::table(&["ID", "NAME", "STATUS", "SIZE", "USER", "URL", "AGE"], &rows);
}

/// Every field of one instance as `key: value` lines.
pub fn details(i: &Instance) {
    let s = &i.size;
    let mut fields = vec![("id", i.id.clone()), ("name", or_dash(i.name.as_deref())), ("status", i.status.clone())];
    if let Some(reason) = &i.status_reason {
        fields.push(("status reason", reason.clone()));
    }
    fields.extend([
        ("url", or_dash(i.url.as_deref())),
        ("template", format!("{} v{}", i.template.id, i.template.version)),
        ("update available", yes_no(i.update_available)),
        ("agents", list_or_dash(i.agents.clone())),
        ("size", format!("{} ({} vCPU, {} MB memory, {} GB disk)", s.size, s.vcpu, s.memory_mb, s.disk_gb)),
        ("user", or_dash(i.user.as_deref())),
        ("region", i.region.clone()),
        ("ports", ports(i)),
        ("metadata", pairs(&i.metadata)),
        ("env", list_or_dash(i.env.keys().cloned().collect())),
        ("budget", budget(i)),
        ("lifecycle", lifecycle(i)),
        ("restart count", i.restart_count.to_string()),
        ("created", output::when(i.created_at)),
        ("updated", output::when(i.updated_at)),
    ]);
    if let Some(deleted) = i.deleted_at {
        fields.push(("deleted", output::when(deleted)));
    }
    output::details(&fields);
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn list_or_dash(items: Vec<String>) -> String {
    or_dash(Some(&items.join(", ")))
}

fn pairs(map: &BTreeMap<String, String>) -> String {
    list_or_dash(map.iter().map(|(k, v)| format!("{k}={v}")).collect())
}

fn ports(i: &Instance) -> String {
    let default = |d: bool| if d { " (default)" } else { "" };
    list_or_dash(i.ports.iter().map(|p| format!("{} {}{}", p.port, p.url, default(p.default))).collect())
}

fn budget(i: &Instance) -> String {
    let b = &i.budget;
    match b.managed_cap_usd {
        Some(cap) => format!(
            "${:.2} of ${cap:.2} used (${:.2} left)",
            b.managed_used_usd,
            b.remaining_usd.unwrap_or(cap - b.managed_used_usd)
        ),
        None => format!("${:.2} used, no cap", b.managed_used_usd),
    }
}

fn lifecycle(i: &Instance) -> String {
    match i.lifecycle.idle_timeout_secs {
        Some(secs) => format!("{} (idle timeout {secs}s)", i.lifecycle.mode),
        None => i.lifecycle.mode.clone(),
    }
}
