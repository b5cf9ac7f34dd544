//! Validation of create and update bodies: every field checked, errors name it.

use crate::error::ApiError;
use berth_api_types::{
    BudgetInput, CreateInstance, Lifecycle, NetworkInput, ResourcesInput, TemplateChoice, UpdateInstance,
};
use berth_core::egress::{Destination, Egress, MAX_ALLOW};
use berth_core::size::{self, SizeSpec};
use serde_json::Value;
use std::collections::BTreeMap;

pub(crate) const MAX_NAME: usize = 100;
pub(crate) const MAX_USER: usize = 200;
pub(crate) const MAX_META_KEYS: usize = 50;
pub(crate) const MAX_META_KEY: usize = 64;
pub(crate) const MAX_META_VALUE: usize = 512;
pub(crate) const MAX_ENV_KEYS: usize = 100;
pub(crate) const MAX_ENV_VALUE: usize = 32 * 1024;
/// Variables berth sets itself in every instance.
pub(crate) const RESERVED_ENV: &[&str] = &["HOME", "BERTH_INSTANCE_ID", "BERTH_GATEWAY_TOKEN"];

/// A create body that passed validation.
#[derive(Debug, Clone)]
pub struct ValidCreate {
    pub name: Option<String>,
    /// Resolved against the store by [`crate::templates::resolve`].
    pub template: TemplateChoice,
    /// `None`: the template's default size.
    pub size: Option<SizeSpec>,
    pub user: Option<String>,
    pub region: String,
    pub metadata: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    pub budget: ValidBudget,
    pub lifecycle: Lifecycle,
    /// Extra ports to route, in the order given.
    pub expose: Vec<u16>,
    /// Where its traffic may go.
    pub egress: Egress,
    /// CPU and memory asked for in place of the size's (resolved against the size by
    /// [`resources_for`]).
    pub resources: Option<ResourcesAsk>,
}

/// Most extra ports one instance may expose.
pub const MAX_EXPOSED: usize = 16;

/// Checks a create body; `min_idle_secs` is the shortest `idle_timeout_secs` allowed.
pub fn create(body: CreateInstance, min_idle_secs: u64) -> Result<ValidCreate, ApiError> {
    let template = body.template.unwrap_or_else(|| TemplateChoice::Newest(super::SYSTEM_TEMPLATE.to_string()));
    let region = match body.region.as_deref() {
        None | Some("local") => "local".to_string(),
        Some(r) => {
            return Err(ApiError::invalid("region", format!("unknown region `{}`; this server offers: local", clip(r))))
        }
    };
    Ok(ValidCreate {
        name: name(body.name)?,
        template,
        size: body.size.map(size_of).transpose()?,
        user: text("user", body.user, MAX_USER)?,
        region,
        metadata: metadata(body.metadata.as_ref())?.unwrap_or_default(),
        env: env(body.env.as_ref())?.unwrap_or_default(),
        budget: budget(body.budget.as_ref())?,
        lifecycle: lifecycle(body.lifecycle, min_idle_secs)?,
        expose: expose(body.expose.as_ref())?.unwrap_or_default(),
        egress: network(body.network.as_ref())?.unwrap_or_default(),
        resources: body.resources.as_ref().map(resources).transpose()?,
    })
}

/// A PATCH body that passed validation; `None` leaves a field unchanged.
#[derive(Debug, Clone, Default)]
pub struct ValidUpdate {
    pub name: Option<Option<String>>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub size: Option<SizeSpec>,
    pub env: Option<BTreeMap<String, String>>,
    pub budget: Option<ValidBudget>,
    pub expose: Option<Vec<u16>>,
    pub egress: Option<Egress>,
    pub resources: Option<ResourcesAsk>,
}

/// Checks a PATCH body.
pub fn update(body: UpdateInstance) -> Result<ValidUpdate, ApiError> {
    Ok(ValidUpdate {
        name: body.name.map(|n| name(Some(n))).transpose()?,
        metadata: metadata(body.metadata.as_ref())?,
        size: body.size.map(size_of).transpose()?,
        env: env(body.env.as_ref())?,
        budget: body.budget.as_ref().map(|b| budget(Some(b))).transpose()?,
        expose: expose(body.expose.as_ref())?,
        egress: network(body.network.as_ref())?,
        resources: body.resources.as_ref().map(resources).transpose()?,
    })
}

/// `resources` as asked: CPU in thousandths of a vCPU, memory in MiB; `None` fields
/// follow the size (or the guarantee, for limits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourcesAsk {
    pub cpu_millis: Option<u32>,
    pub memory_mb: Option<u64>,
    pub cpu_limit_millis: Option<u32>,
    pub memory_limit_mb: Option<u64>,
}

impl ResourcesAsk {
    fn is_empty(&self) -> bool {
        *self == ResourcesAsk::default()
    }
}

/// The operator's bounds on `resources` (`--resources-max-cpu`, `--resources-max-memory-mb`).
#[derive(Debug, Clone, Copy)]
pub struct ResourceBounds {
    pub max_cpu_millis: u32,
    pub max_memory_mb: u64,
}

/// Least CPU an instance may be given (thousandths of a vCPU).
pub const MIN_CPU_MILLIS: u32 = 50;
/// Least memory an instance may be given (MiB).
pub const MIN_MEMORY_MB: u64 = 64;

impl ResourceBounds {
    pub fn from_args(args: &crate::config::ServerArgs) -> anyhow::Result<Self> {
        let cpu = args.resources_max_cpu;
        anyhow::ensure!(
            cpu.is_finite() && (0.05..=1000.0).contains(&cpu),
            "--resources-max-cpu must be between 0.05 and 1000 (it is {cpu})"
        );
        Ok(ResourceBounds {
            max_cpu_millis: (cpu * 1000.0).round() as u32,
            max_memory_mb: args.resources_max_memory_mb,
        })
    }
}

impl Default for ResourceBounds {
    fn default() -> Self {
        ResourceBounds { max_cpu_millis: 8000, max_memory_mb: 16384 }
    }
}

/// A CPU amount: a decimal string (`"0.5"`) or a JSON number, to the thousandth.
fn cpu_of(field: &str, v: &Value) -> Result<Option<u32>, ApiError> {
    let bad =
        || ApiError::invalid(field, format!("`{field}` is a number of vCPUs like \"0.5\" or \"2\" (to a thousandth)"));
    let text = match v {
        Value::Null => return Ok(None),
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return Err(bad()),
    };
    let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
    if whole.is_empty()
        || whole.len() > 3
        || frac.len() > 3
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (text.contains('.') && frac.is_empty())
    {
        return Err(bad());
    }
    let whole: u32 = whole.parse().map_err(|_| bad())?;
    let frac: u32 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
    Ok(Some(whole * 1000 + frac))
}

fn resources(r: &ResourcesInput) -> Result<ResourcesAsk, ApiError> {
    Ok(ResourcesAsk {
        cpu_millis: r.cpu.as_ref().map(|v| cpu_of("resources.cpu", v)).transpose()?.flatten(),
        memory_mb: r.memory_mb,
        cpu_limit_millis: r.cpu_limit.as_ref().map(|v| cpu_of("resources.cpu_limit", v)).transpose()?.flatten(),
        memory_limit_mb: r.memory_limit_mb,
    })
}

/// 422: resources outside the operator's bounds, or a limit below its guarantee.
fn out_of_bounds(field: &str, message: String) -> ApiError {
    ApiError::Unprocessable { code: "resources_out_of_bounds", field: field.into(), message }
}

/// What an instance of `size` gets for `ask`: `None` (the size's) when nothing is asked.
pub fn resources_for(
    ask: &ResourcesAsk,
    size: &SizeSpec,
    bounds: &ResourceBounds,
) -> Result<Option<berth_core::Resources>, ApiError> {
    if ask.is_empty() {
        return Ok(None);
    }
    let cpu = ask.cpu_millis.unwrap_or_else(|| (size.vcpu * 1000).min(ask.cpu_limit_millis.unwrap_or(u32::MAX)));
    let cpu_limit = ask.cpu_limit_millis.unwrap_or(cpu);
    let memory = ask.memory_mb.unwrap_or_else(|| size.memory_mb.min(ask.memory_limit_mb.unwrap_or(u64::MAX)));
    let memory_limit = ask.memory_limit_mb.unwrap_or(memory);
    let max_cpu = size::cpu_text(bounds.max_cpu_millis);
    for (field, v) in [("resources.cpu", cpu), ("resources.cpu_limit", cpu_limit)] {
        if !(MIN_CPU_MILLIS..=bounds.max_cpu_millis).contains(&v) {
            return Err(out_of_bounds(
                field,
                format!(
                    "`{field}` must be between 0.05 and {max_cpu} vCPUs on this server (asked {})",
                    size::cpu_text(v)
                ),
            ));
        }
    }
    for (field, v) in [("resources.memory_mb", memory), ("resources.memory_limit_mb", memory_limit)] {
        if !(MIN_MEMORY_MB..=bounds.max_memory_mb).contains(&v) {
            return Err(out_of_bounds(
                field,
                format!(
                    "`{field}` must be between {MIN_MEMORY_MB} and {} MiB on this server (asked {v})",
                    bounds.max_memory_mb
                ),
            ));
        }
    }
    if cpu_limit < cpu {
        return Err(out_of_bounds(
            "resources.cpu_limit",
            format!("`cpu_limit` ({}) is below `cpu` ({})", size::cpu_text(cpu_limit), size::cpu_text(cpu)),
        ));
    }
    if memory_limit < memory {
        return Err(out_of_bounds(
            "resources.memory_limit_mb",
            format!("`memory_limit_mb` ({memory_limit}) is below `memory_mb` ({memory})"),
        ));
    }
    Ok(Some(berth_core::Resources {
        cpu_millis: cpu,
        memory_mb: memory,
        cpu_limit_millis: cpu_limit,
        memory_limit_mb: memory_limit,
    }))
}

/// `network.egress`: `"internet"`, `"none"` or `{"allow": ["CIDR[:PORT]", ...]}`.
fn network(value: Option<&NetworkInput>) -> Result<Option<Egress>, ApiError> {
    let Some(v) = value.and_then(|n| n.egress.as_ref()) else { return Ok(None) };
    const FIELD: &str = "network.egress";
    let shape = || {
        ApiError::invalid(
            FIELD,
            format!("`{FIELD}` must be \"internet\", \"none\" or {{\"allow\": [\"CIDR[:PORT]\", ...]}}"),
        )
    };
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s == "internet" => Ok(Some(Egress::Internet)),
        Value::String(s) if s == "none" => Ok(Some(Egress::None)),
        Value::String(s) => Err(ApiError::invalid(
            FIELD,
            format!("unknown `{FIELD}` `{}`: use \"internet\", \"none\" or {{\"allow\": [...]}}", clip(s)),
        )),
        Value::Object(o) => {
            if let Some(k) = o.keys().find(|k| *k != "allow") {
                return Err(ApiError::invalid(
                    format!("{FIELD}.{}", clip(k)),
                    format!("unknown field `{}` in `{FIELD}`", clip(k)),
                ));
            }
            let Some(Value::Array(items)) = o.get("allow") else { return Err(shape()) };
            if items.len() > MAX_ALLOW {
                return Err(ApiError::invalid(
                    format!("{FIELD}.allow"),
                    format!("`{FIELD}.allow` lists more than {MAX_ALLOW} destinations"),
                ));
            }
            let mut list: Vec<Destination> = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let field = format!("{FIELD}.allow[{i}]");
                let Some(text) = item.as_str() else {
                    return Err(ApiError::invalid(
                        &field,
                        format!("`{field}` must be a string CIDR[:PORT], like \"10.1.2.0/24:5432\""),
                    ));
                };
                let d = Destination::parse(text).map_err(|e| ApiError::invalid(&field, format!("`{field}`: {e}")))?;
                if !list.contains(&d) {
                    list.push(d);
                }
            }
            Ok(Some(Egress::Allow(list)))
        }
        _ => Err(shape()),
    }
}

pub(crate) fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

fn text(field: &str, value: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    let Some(v) = value else { return Ok(None) };
    if v.chars().count() > max {
        return Err(ApiError::invalid(field, format!("`{field}` is longer than {max} characters")));
    }
    if v.chars().any(|c| c.is_control()) {
        return Err(ApiError::invalid(field, format!("`{field}` must not contain control characters")));
    }
    Ok(Some(v))
}

fn name(value: Option<String>) -> Result<Option<String>, ApiError> {
    text("name", value, MAX_NAME)
}

pub(crate) fn size_of(s: u32) -> Result<SizeSpec, ApiError> {
    size::lookup(s).ok_or_else(|| ApiError::invalid("size", format!("unknown size {s}; sizes are 1, 2, 4 and 8")))
}

fn string_map(field: &str, value: Option<&Value>) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    let Some(v) = value else { return Ok(None) };
    let obj = match v {
        Value::Null => return Ok(Some(BTreeMap::new())),
        Value::Object(o) => o,
        _ => return Err(ApiError::invalid(field, format!("`{field}` must be an object of strings"))),
    };
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        match v {
            Value::String(s) => {
                out.insert(k.clone(), s.clone());
            }
            _ => {
                return Err(ApiError::invalid(
                    format!("{field}.{k}"),
                    format!("`{field}.{k}` must be a string (nested values are not allowed)"),
                ))
            }
        }
    }
    Ok(Some(out))
}

fn metadata(value: Option<&Value>) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    let Some(map) = string_map("metadata", value)? else { return Ok(None) };
    if map.len() > MAX_META_KEYS {
        return Err(ApiError::invalid("metadata", format!("`metadata` has more than {MAX_META_KEYS} keys")));
    }
    for (k, v) in &map {
        if k.is_empty() || k.chars().count() > MAX_META_KEY {
            return Err(ApiError::invalid(
                format!("metadata.{}", clip(k)),
                format!("`metadata.{}`: metadata keys are 1–{MAX_META_KEY} characters", clip(k)),
            ));
        }
        if v.chars().count() > MAX_META_VALUE {
            return Err(ApiError::invalid(
                format!("metadata.{k}"),
                format!("`metadata.{k}`: metadata values are at most {MAX_META_VALUE} characters"),
            ));
        }
    }
    Ok(Some(map))
}

pub(crate) fn env(value: Option<&Value>) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    let Some(map) = string_map("env", value)? else { return Ok(None) };
    if map.len() > MAX_ENV_KEYS {
        return Err(ApiError::invalid("env", format!("`env` has more than {MAX_ENV_KEYS} variables")));
    }
    for (k, v) in &map {
        if !is_env_name(k) {
            return Err(ApiError::invalid(
                format!("env.{}", clip(k)),
                format!(
                    "`{}` is not a valid variable name (letters, digits and _, not starting with a digit)",
                    clip(k)
                ),
            ));
        }
        if RESERVED_ENV.contains(&k.as_str()) {
            return Err(ApiError::invalid(
                format!("env.{k}"),
                format!("`{k}` is set by berth and cannot be overridden"),
            ));
        }
        if v.chars().count() > MAX_ENV_VALUE || v.contains('\0') {
            return Err(ApiError::invalid(
                format!("env.{k}"),
                format!("value of `{k}` is longer than {MAX_ENV_VALUE} characters or contains NUL"),
            ));
        }
    }
    Ok(Some(map))
}

/// A shell variable name: letters, digits and `_`, not starting with a digit, ≤ 128 bytes.
pub fn is_env_name(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 128
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !k.as_bytes()[0].is_ascii_digit()
}

/// A budget that passed validation; in a PATCH, `None` leaves a field unchanged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValidBudget {
    /// The cap in micro-dollars.
    pub cap_micros: Option<i64>,
    pub topup_micros: Option<i64>,
    pub models: Option<Vec<String>>,
}

/// Most models one allow-list may name.
pub const MAX_MODELS: usize = 100;

/// Largest `managed_cap_usd`: a trillion dollars (micros stay far inside an i64).
pub const MAX_CAP_USD: f64 = 1e12;

fn budget(b: Option<&BudgetInput>) -> Result<ValidBudget, ApiError> {
    let Some(b) = b else { return Ok(ValidBudget::default()) };
    let cap_micros = match b.managed_cap_usd {
        None => None,
        Some(cap) => Some(berth_core::money::usd_to_micros(cap).filter(|_| cap <= MAX_CAP_USD).ok_or_else(|| {
            ApiError::invalid(
                "budget.managed_cap_usd",
                format!("`budget.managed_cap_usd` must be a number of dollars from 0 to {MAX_CAP_USD}"),
            )
        })?),
    };
    if b.topup_micros.is_some_and(|t| t < 0) {
        return Err(ApiError::invalid("budget.topup_micros", "`budget.topup_micros` must be an integer ≥ 0"));
    }
    if let Some(models) = &b.models {
        if models.len() > MAX_MODELS {
            return Err(ApiError::invalid(
                "budget.models",
                format!("`budget.models` names at most {MAX_MODELS} models"),
            ));
        }
        if let Some(bad) = models.iter().find(|m| m.trim().is_empty() || m.len() > 200) {
            return Err(ApiError::invalid(
                "budget.models",
                format!("`budget.models` has an empty or over-long model name `{}`", clip(bad)),
            ));
        }
    }
    Ok(ValidBudget { cap_micros, topup_micros: b.topup_micros, models: b.models.clone() })
}

/// `expose`: a list of distinct ports 1–65535, not the agent's.
fn expose(value: Option<&Value>) -> Result<Option<Vec<u16>>, ApiError> {
    let Some(v) = value else { return Ok(None) };
    let items = match v {
        Value::Null => return Ok(Some(vec![])),
        Value::Array(a) => a,
        _ => return Err(ApiError::invalid("expose", "`expose` must be a list of port numbers, like [8080]")),
    };
    if items.len() > MAX_EXPOSED {
        return Err(ApiError::invalid("expose", format!("`expose` lists more than {MAX_EXPOSED} ports")));
    }
    let mut ports = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("expose[{i}]");
        let port = item
            .as_u64()
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| ApiError::invalid(&field, format!("`{field}` must be a port number from 1 to 65535")))?
            as u16;
        if port == berth_runtime::AGENT_PORT {
            return Err(ApiError::invalid(
                &field,
                format!("port {port} is the agent's, already served at the instance's own URL"),
            ));
        }
        if ports.contains(&port) {
            return Err(ApiError::invalid(&field, format!("port {port} is listed twice")));
        }
        ports.push(port);
    }
    Ok(Some(ports))
}

fn lifecycle(l: Option<Lifecycle>, min_idle_secs: u64) -> Result<Lifecycle, ApiError> {
    let Some(l) = l else { return Ok(Lifecycle::default()) };
    match (l.mode.as_str(), l.idle_timeout_secs) {
        ("always_on", None) => Ok(l),
        ("always_on", Some(_)) => Err(ApiError::invalid(
            "lifecycle.idle_timeout_secs",
            "`idle_timeout_secs` applies only to mode `cold_start`",
        )),
        ("cold_start", Some(t)) if (min_idle_secs..=30 * 24 * 3600).contains(&t) => Ok(l),
        ("cold_start", None) => Ok(Lifecycle { mode: l.mode, idle_timeout_secs: Some(900.max(min_idle_secs)) }),
        ("cold_start", Some(_)) => Err(ApiError::invalid(
            "lifecycle.idle_timeout_secs",
            format!("`idle_timeout_secs` must be between {min_idle_secs} and 2592000"),
        )),
        (m, _) => Err(ApiError::invalid(
            "lifecycle.mode",
            format!("unknown lifecycle mode `{}`; modes are always_on and cold_start", clip(m)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::InvalidRequest { field, .. } => field.unwrap_or_default(),
            other => panic!("expected invalid_request, got {other:?}"),
        }
    }

    #[test]
    fn empty_body_gets_defaults() {
        let v = create(CreateInstance::default(), 60).unwrap();
        assert_eq!(v.template, TemplateChoice::Newest("berth-agent".into()));
        assert_eq!(v.size, None, "the template's default size");
        assert_eq!(v.region, "local");
        assert_eq!(v.lifecycle.mode, "always_on");
    }

    #[test]
    fn bad_fields_are_named() {
        let bad = |body: CreateInstance| field_of(create(body, 60).unwrap_err());
        assert_eq!(bad(CreateInstance { size: Some(3), ..Default::default() }), "size");
        assert_eq!(bad(CreateInstance { name: Some("x".repeat(101)), ..Default::default() }), "name");
        assert_eq!(
            bad(CreateInstance { metadata: Some(json!({"a": {"b": "c"}})), ..Default::default() }),
            "metadata.a"
        );
        assert_eq!(bad(CreateInstance { env: Some(json!({"1BAD": "x"})), ..Default::default() }), "env.1BAD");
        assert_eq!(bad(CreateInstance { env: Some(json!({"A-B": "x"})), ..Default::default() }), "env.A-B");
        assert_eq!(bad(CreateInstance { expose: Some(json!([8080, 0])), ..Default::default() }), "expose[1]");
        assert_eq!(bad(CreateInstance { expose: Some(json!([3737])), ..Default::default() }), "expose[0]");
        assert_eq!(bad(CreateInstance { expose: Some(json!([80, 80])), ..Default::default() }), "expose[1]");
        assert_eq!(bad(CreateInstance { expose: Some(json!([70000])), ..Default::default() }), "expose[0]");
        assert_eq!(bad(CreateInstance { expose: Some(json!("8080")), ..Default::default() }), "expose");
        assert_eq!(
            create(CreateInstance { expose: Some(json!([8080, 9000])), ..Default::default() }, 60).unwrap().expose,
            vec![8080, 9000]
        );
        let many: serde_json::Map<_, _> = (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert_eq!(bad(CreateInstance { metadata: Some(Value::Object(many)), ..Default::default() }), "metadata");
    }
}

#[cfg(test)]
mod resources_tests {
    use super::*;

    fn ask(v: serde_json::Value) -> Result<ResourcesAsk, ApiError> {
        resources(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn resources_fill_from_the_size_and_stay_in_bounds() {
        let s1 = size::lookup(1).unwrap();
        let b = ResourceBounds::default();
        let r = resources_for(&ask(serde_json::json!({"cpu": "0.5", "memory_mb": 512})).unwrap(), &s1, &b)
            .unwrap()
            .unwrap();
        assert_eq!((r.cpu_millis, r.cpu_limit_millis, r.memory_mb, r.memory_limit_mb), (500, 500, 512, 512));
        let r = resources_for(
            &ask(serde_json::json!({"cpu": 0.25, "cpu_limit": "2", "memory_limit_mb": 4096})).unwrap(),
            &s1,
            &b,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.cpu_millis, r.cpu_limit_millis, r.memory_mb, r.memory_limit_mb), (250, 2000, 2048, 4096));
        // Only a limit below the size's: the guarantee follows it down.
        let r = resources_for(&ask(serde_json::json!({"memory_limit_mb": 256})).unwrap(), &s1, &b).unwrap().unwrap();
        assert_eq!((r.memory_mb, r.memory_limit_mb, r.cpu_millis), (256, 256, 1000));
        assert_eq!(resources_for(&ask(serde_json::json!({})).unwrap(), &s1, &b).unwrap(), None, "{{}}: the size's");
        for (v, field) in [
            (serde_json::json!({"cpu": "abc"}), "resources.cpu"),
            (serde_json::json!({"cpu": "1."}), "resources.cpu"),
            (serde_json::json!({"cpu": "0.0001"}), "resources.cpu"),
            (serde_json::json!({"cpu_limit": -1}), "resources.cpu_limit"),
        ] {
            match ask(v.clone()).unwrap_err() {
                ApiError::InvalidRequest { field: Some(f), .. } => assert_eq!(f, field, "{v}"),
                other => panic!("{v}: {other:?}"),
            }
        }
        for (v, field) in [
            (serde_json::json!({"cpu": "0.01"}), "resources.cpu"),
            (serde_json::json!({"cpu": "9"}), "resources.cpu"),
            (serde_json::json!({"memory_mb": 32}), "resources.memory_mb"),
            (serde_json::json!({"memory_mb": 20000}), "resources.memory_mb"),
            (serde_json::json!({"cpu": "1", "cpu_limit": "0.5"}), "resources.cpu_limit"),
            (serde_json::json!({"memory_mb": 1024, "memory_limit_mb": 512}), "resources.memory_limit_mb"),
        ] {
            match resources_for(&ask(v.clone()).unwrap(), &s1, &b).unwrap_err() {
                ApiError::Unprocessable { code: "resources_out_of_bounds", field: f, .. } => {
                    assert_eq!(f, field, "{v}")
                }
                other => panic!("{v}: {other:?}"),
            }
        }
    }
}
