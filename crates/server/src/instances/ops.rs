//! Lifecycle operations. Each one takes the instance's lock, checks the state
//! machine, drives the runtime, and records the outcome (record, audit event,
//! edge routing table). They run detached from the request, so a client that
//! hangs up mid-create cannot leave a half-made instance behind.

use super::drive::{address_stale, addresses_released};
pub use super::drive::{bring_up, detached, set_status, spec_of, wait_ready, Actor};
use super::validate::{ValidCreate, ValidUpdate};
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use berth_core::lifecycle::{transition, Action};
use berth_core::{now_secs, InstanceId, Status};
use berth_runtime::{Observed, RuntimeError};
use berth_store::{EventRecord, ExposedPort, InstanceRecord};

async fn load(state: &AppState, actor: &Actor, id: &str) -> ApiResult<InstanceRecord> {
    let parsed = InstanceId::parse(id).ok_or_else(|| ApiError::instance_not_found(id))?;
    state.store.instance(actor.workspace(), &parsed).await?.ok_or_else(|| ApiError::instance_not_found(id))
}

/// Loads an instance of the caller's workspace (404 otherwise).
pub async fn get(state: &AppState, auth: &Auth, id: &str) -> ApiResult<InstanceRecord> {
    let parsed = InstanceId::parse(id).ok_or_else(|| ApiError::instance_not_found(id))?;
    state.store.instance(Some(&auth.workspace_id), &parsed).await?.ok_or_else(|| ApiError::instance_not_found(id))
}

/// Ports to expose, keeping the handle (and so the URL) of every port already exposed.
fn exposed_ports(old: &[ExposedPort], ports: &[u16]) -> Vec<ExposedPort> {
    ports
        .iter()
        .map(|p| {
            old.iter()
                .find(|o| o.port == *p)
                .cloned()
                .unwrap_or_else(|| ExposedPort { port: *p, handle: berth_core::ids::port_handle() })
        })
        .collect()
}

/// Memory (MiB) an instance's container may use: its own limit, or its size's.
fn memory_of(rec: &InstanceRecord) -> u64 {
    let size = berth_core::size::lookup(rec.size).unwrap_or(berth_core::size::SIZES[0]);
    berth_core::Resources::effective(&size, rec.resources.as_ref()).memory_limit_mb
}

/// Ports routed under handles: the template's other ports, then `expose` (the
/// template's default port is served at the instance's own URL already).
fn routed_ports(t: &berth_core::TemplateSpec, expose: &[u16]) -> ApiResult<Vec<u16>> {
    let mut ports: Vec<u16> = t.other_ports().collect();
    for (i, p) in expose.iter().enumerate() {
        if t.default_port() == Some(*p) {
            return Err(ApiError::invalid(
                format!("expose[{i}]"),
                format!("port {p} is the template's default port, already served at the instance's own URL"),
            ));
        }
        if !ports.contains(p) {
            ports.push(*p);
        }
    }
    if ports.len() > super::validate::MAX_EXPOSED + crate::templates::MAX_PORTS {
        return Err(ApiError::invalid("expose", "too many routed ports"));
    }
    Ok(ports)
}

/// `POST /v1/instances`: answers once the agent is healthy, or leaves nothing behind.
/// A create the warm pool can serve is answered by handing over one of its instances.
#[tracing::instrument(skip_all, fields(instance = tracing::field::Empty))]
pub async fn create(
    state: AppState,
    auth: Auth,
    v: ValidCreate,
    template: crate::templates::Resolved,
) -> ApiResult<InstanceRecord> {
    let rec = new_record(&state, &auth.workspace_id, v, &template)?;
    if let Some(claimed) = crate::pool::claim(&state, &auth, &rec).await? {
        tracing::Span::current().record("instance", tracing::field::display(&claimed.id));
        return Ok(claimed);
    }
    tracing::Span::current().record("instance", tracing::field::display(&rec.id));
    // Refills of the warm pool wait while a client waits for a cold create.
    let _foreground = state.pool.as_ref().map(|p| p.foreground());
    let _guard = state.locks.lock(&rec.id).await;
    let ws = state
        .store
        .workspace(&auth.workspace_id)
        .await?
        .ok_or_else(|| ApiError::NotFound { code: "workspace_not_found", message: "workspace not found".into() })?;
    let actor = Actor::Key(auth);
    let made = match make(&state, &ws, rec.clone(), actor.clone()).await {
        // Room held by unclaimed warm instances is given to clients first.
        Err(ApiError::CapacityExceeded { .. }) if crate::pool::evict_one(&state).await => {
            make(&state, &ws, rec, actor).await?
        }
        other => other?,
    };
    state.metrics.created("cold");
    Ok(made)
}

/// A store error as the create's answer: a full workspace is 422 `limit_exceeded`.
pub fn limit_error(ws: &berth_store::WorkspaceRecord, e: berth_store::StoreError) -> ApiError {
    match e {
        berth_store::StoreError::LimitExceeded { limit } => ApiError::LimitExceeded(format!(
            "workspace `{}` already holds its limit of {limit} instances; delete one or raise the limit",
            ws.name
        )),
        other => other.into(),
    }
}

/// The record a create makes (status `creating`, a fresh id), its size, resources and
/// routed ports checked against the template.
pub fn new_record(
    state: &AppState,
    ws: &berth_core::WorkspaceId,
    v: ValidCreate,
    template: &crate::templates::Resolved,
) -> ApiResult<InstanceRecord> {
    let t = template.spec();
    let size = match v.size {
        Some(s) => s,
        None => super::validate::size_of(t.default_size)?,
    };
    let resources = match &v.resources {
        Some(ask) => super::validate::resources_for(ask, &size, &state.settings.resource_bounds)?,
        None => None,
    };
    let routed = routed_ports(t, &v.expose)?;
    let id = InstanceId::generate();
    let now = now_secs();
    Ok(InstanceRecord {
        seq: 0,
        workspace_id: ws.clone(),
        name: v.name,
        template: template.id.clone(),
        template_version: template.version,
        template_spec: template.spec.clone(),
        size: size.size,
        resources,
        user: v.user,
        region: v.region,
        metadata: v.metadata,
        env: v.env,
        budget_cap_micros: v.budget.cap_micros,
        topup_micros: v.budget.topup_micros.unwrap_or(0),
        budget_models: v.budget.models,
        managed_used_micros: 0,
        lifecycle_mode: v.lifecycle.mode,
        idle_timeout_secs: v.lifecycle.idle_timeout_secs,
        status: Status::Creating,
        status_reason: None,
        restart_count: 0,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        gateway_token: Some(state.seal.gateway_token(id.as_str())),
        id,
        last_request_at: None,
        exposed: exposed_ports(&[], &routed),
        idle_stopped: false,
        hold_until: None,
        requests_total: 0,
        egress: v.egress,
        paid_until: None,
        pooled: false,
    })
}

/// Makes a new record's instance (its lock held by the caller): paid for, admitted,
/// inserted, its container made and started until ready; on failure nothing is left.
pub async fn make(
    state: &AppState,
    ws: &berth_store::WorkspaceRecord,
    mut rec: InstanceRecord,
    actor: Actor,
) -> ApiResult<InstanceRecord> {
    let state = state.clone();
    let id = rec.id.clone();
    let size = berth_core::size::lookup(rec.size).unwrap_or(berth_core::size::SIZES[0]);
    let resources = rec.resources;
    let now = rec.created_at;
    // Compute for the rest of the month is paid before anything exists (402 otherwise);
    // whatever fails afterwards gives it back.
    let paid = crate::compute::pay_for(&state, &mut rec, "create").await?;
    let inserted = async {
        // Checked and inserted under one lock: two creates cannot both take the last room.
        let mb = berth_core::Resources::effective(&size, resources.as_ref()).memory_limit_mb;
        let _room = state.admission.for_create(state.store.as_ref(), mb).await?;
        let budget = state.settings.workspace_disk_gb;
        crate::admission::check_workspace_disk(state.store.as_ref(), ws, budget, size.disk_gb).await?;
        state.store.insert_instance(&rec, ws.instance_limit).await.map_err(|e| limit_error(ws, e))
    }
    .await;
    if let Err(e) = inserted {
        crate::compute::refund(&state, &rec, paid, "refund: the create was refused").await;
        return Err(e);
    }
    state
        .store
        .record_event(&EventRecord {
            instance_id: id.clone(),
            at: now,
            from: None,
            to: Status::Creating,
            actor: actor.name(),
            reason: None,
        })
        .await?;
    state.egress_policy(&id, &rec.egress).await;
    let outcome = async {
        state.runtime.create(&spec_of(&state, &rec)).await?;
        state.runtime.start(&id).await?;
        wait_ready(&state, &rec).await
    }
    .await;
    match outcome {
        Ok(()) => {
            set_status(&state, &mut rec, Status::Running, &actor, None).await?;
            Ok(rec)
        }
        Err(e) => {
            state.metrics.runtime_error("create");
            tracing::warn!(instance = %id, error = %e, "create failed; cleaning up");
            if let Err(clean) = state.runtime.purge(&id).await {
                tracing::error!(instance = %id, error = %clean, "cleanup after failed create failed; the reconciler will retry");
                return Err(e.into());
            }
            state.store.delete_instance(&id).await?;
            state.egress_forget(&id).await;
            crate::compute::refund(&state, &rec, paid, "refund: the create failed").await;
            Err(e.into())
        }
    }
}

/// stop / start / restart / pause / resume / update / restore.
pub async fn act(state: AppState, actor: Actor, id: String, action: Action) -> ApiResult<InstanceRecord> {
    act_noted(state, actor, id, action, None).await
}

/// [`act`], with a note for the audit trail saying why.
pub async fn act_noted(
    state: AppState,
    actor: Actor,
    id: String,
    action: Action,
    why: Option<String>,
) -> ApiResult<InstanceRecord> {
    act_full(state, actor, id, action, why, None).await
}

/// `update`: recreates the instance on a version of its template (`None`: the
/// newest; an older one rolls back), home and agent sessions kept. If the new version
/// does not come up, the instance goes back to the version it ran and the answer is
/// the error.
pub async fn update_to(state: AppState, actor: Actor, id: String, version: Option<u32>) -> ApiResult<InstanceRecord> {
    act_full(state, actor, id, Action::Update, None, Some(version)).await
}

/// The template version an update moves `rec` to.
async fn update_target(
    state: &AppState,
    rec: &InstanceRecord,
    version: Option<u32>,
) -> ApiResult<crate::templates::Resolved> {
    if rec.template == super::SYSTEM_TEMPLATE || crate::agents::AGENT_NAMES.contains(&rec.template.as_str()) {
        let choice = match version {
            None => berth_api_types::TemplateChoice::Newest(rec.template.clone()),
            Some(v) => berth_api_types::TemplateChoice::Pinned(berth_api_types::TemplateRef {
                id: rec.template.clone(),
                version: v,
            }),
        };
        return crate::templates::resolve(state.store.as_ref(), &state.agents, &rec.workspace_id, &choice).await;
    }
    let id = berth_core::TemplateId::parse(&rec.template).ok_or_else(|| ApiError::NotFound {
        code: "template_not_found",
        message: format!("template `{}` of this instance is gone; nothing to update to", rec.template),
    })?;
    let t = state.store.template(Some(&rec.workspace_id), &id).await?.ok_or_else(|| ApiError::NotFound {
        code: "template_not_found",
        message: format!("template `{id}` of this instance was deleted; nothing to update to"),
    })?;
    crate::templates::version_of(state.store.as_ref(), &t, version).await
}

/// Replaces the container with one made from the record, and brings it up when the
/// instance is to run.
async fn recreate(state: &AppState, rec: &InstanceRecord, target: Status) -> Result<(), RuntimeError> {
    address_stale(state, &rec.id);
    state.runtime.create(&spec_of(state, rec)).await?;
    addresses_released(state, &rec.id).await;
    if target == Status::Running {
        state.runtime.start(&rec.id).await?;
        wait_ready(state, rec).await?;
    }
    Ok(())
}

#[tracing::instrument(skip_all, fields(instance = %id))]
async fn act_full(
    state: AppState,
    actor: Actor,
    id: String,
    action: Action,
    why: Option<String>,
    update_version: Option<Option<u32>>,
) -> ApiResult<InstanceRecord> {
    let mut rec = load(&state, &actor, &id).await?;
    let _guard = state.locks.lock(&rec.id).await;
    // Re-read under the lock: another operation may have finished meanwhile.
    rec = load(&state, &actor, &id).await?;
    let target = transition(rec.status, action)?;
    let update = match action {
        Action::Update => Some(update_target(&state, &rec, update_version.flatten()).await?),
        _ => None,
    };
    let mut rolled_back = None;
    if action == Action::Restore {
        check_room_to_restore(&state, &rec).await?;
    }
    // An instance coming up needs room on the host until it counts as running.
    let _room = match action {
        Action::Start | Action::Restore => Some(state.admission.reserve(state.store.as_ref(), memory_of(&rec)).await?),
        _ => None,
    };
    if matches!(action, Action::Start | Action::Restore) {
        // An instance whose paid month is over pays for the rest of this one first; the
        // record says so at once, so a start that fails is not charged twice.
        if crate::compute::pay_for(&state, &mut rec, action.as_str()).await? > 0 {
            state.store.update_instance(&rec).await?;
        }
    }
    let result: Result<(), RuntimeError> = async {
        match action {
            Action::Stop => {
                set_status(&state, &mut rec, Status::Stopping, &actor, None).await.map_err(to_rt)?;
                state.runtime.stop(&rec.id).await?;
                addresses_released(&state, &rec.id).await;
                Ok(())
            }
            Action::Start => bring_up(&state, &rec).await,
            Action::Restart => {
                address_stale(&state, &rec.id);
                state.runtime.stop(&rec.id).await?;
                addresses_released(&state, &rec.id).await;
                bring_up(&state, &rec).await
            }
            Action::Pause => {
                address_stale(&state, &rec.id);
                state.runtime.pause(&rec.id).await
            }
            Action::Resume => {
                state.runtime.resume(&rec.id).await?;
                wait_ready(&state, &rec).await
            }
            Action::Update => {
                let before = (rec.template_version, rec.template_spec.clone());
                if let Some(to) = &update {
                    rec.template_version = to.version;
                    rec.template_spec = to.spec.clone();
                }
                if let Err(e) = recreate(&state, &rec, target).await {
                    if before == (rec.template_version, rec.template_spec.clone()) {
                        return Err(e);
                    }
                    tracing::warn!(instance = %rec.id, error = %e, "update failed; back to the version it ran");
                    (rec.template_version, rec.template_spec) = before;
                    recreate(&state, &rec, target).await.map_err(|back| {
                        RuntimeError::Failed(format!(
                            "{e}; going back to version {} failed too: {back}",
                            rec.template_version
                        ))
                    })?;
                    rolled_back = Some(e);
                }
                Ok(())
            }
            Action::Restore => {
                state.egress_policy(&rec.id, &rec.egress).await;
                state.runtime.create(&spec_of(&state, &rec)).await?;
                state.runtime.start(&rec.id).await?;
                wait_ready(&state, &rec).await?;
                rec.deleted_at = None;
                Ok(())
            }
            Action::Delete | Action::Reconfigure => Ok(()),
        }
    }
    .await;
    match result {
        Ok(()) => {
            // Restart and update end where they began: the event still says what happened.
            let note = match (&actor, action) {
                _ if why.is_some() => why,
                (_, Action::Update) if rolled_back.is_some() => Some(format!(
                    "update failed, back on version {}: {}",
                    rec.template_version,
                    rolled_back.as_ref().map(|e| e.to_string()).unwrap_or_default()
                )),
                (_, Action::Restart | Action::Update) => Some(action.as_str().to_string()),
                (Actor::Edge(_), Action::Start) => Some("woken by a request to its URL".to_string()),
                _ => None,
            };
            set_status(&state, &mut rec, target, &actor, note).await?;
            match rolled_back {
                Some(e) => Err(e.into()),
                None => Ok(rec),
            }
        }
        Err(e) => {
            state.metrics.runtime_error(action.as_str());
            if action != Action::Restore {
                let reason = format!("{} failed: {e}", action.as_str());
                set_status(&state, &mut rec, Status::Error, &actor, Some(reason)).await?;
            } else {
                let _ = state.runtime.remove(&rec.id).await;
            }
            Err(e.into())
        }
    }
}

async fn check_room_to_restore(state: &AppState, rec: &InstanceRecord) -> ApiResult<()> {
    let limit = state.store.workspace(&rec.workspace_id).await?.map(|w| w.instance_limit).unwrap_or(u32::MAX);
    if state.store.live_instance_count(&rec.workspace_id).await? >= limit as i64 {
        return Err(ApiError::LimitExceeded(format!(
            "the workspace already holds its limit of {limit} instances; delete one before restoring"
        )));
    }
    Ok(())
}

fn to_rt(e: ApiError) -> RuntimeError {
    RuntimeError::Failed(e.to_string())
}

/// `PATCH`: name, metadata, budget and exposed ports change the record; size
/// resizes in place; env recreates the container. Data is kept in every case.
#[tracing::instrument(skip_all, fields(instance = %id))]
pub async fn patch(state: AppState, actor: Actor, id: String, v: ValidUpdate) -> ApiResult<InstanceRecord> {
    let rec = load(&state, &actor, &id).await?;
    let _guard = state.locks.lock(&rec.id).await;
    let mut rec = load(&state, &actor, &id).await?;
    // Size, resources and env need a live (not deleted) instance; name, metadata and
    // budget may change on a deleted one too, but not mid-create.
    let runtime_change = v.size.is_some() || v.env.is_some() || v.resources.is_some();
    if runtime_change || rec.status == Status::Creating {
        transition(rec.status, Action::Reconfigure)?;
    }
    if let Some(name) = v.name {
        rec.name = name;
    }
    if let Some(m) = v.metadata {
        rec.metadata = m;
    }
    if let Some(b) = v.budget {
        // Each field given replaces the stored one; absent fields stay.
        if b.cap_micros.is_some() {
            rec.budget_cap_micros = b.cap_micros;
        }
        if let Some(topup) = b.topup_micros {
            rec.topup_micros = topup;
        }
        if b.models.is_some() {
            rec.budget_models = b.models;
        }
    }
    if let Some(ports) = v.expose {
        let routed = routed_ports(crate::templates::spec_of(&rec), &ports)?;
        rec.exposed = exposed_ports(&rec.exposed, &routed);
    }
    if let Some(egress) = v.egress {
        // Where the runtime holds the policy (a Kubernetes NetworkPolicy), it changes
        // there first: a failure leaves the record as it was.
        if egress != rec.egress && rec.status != Status::Deleted {
            state.runtime.set_egress(&rec.id, &egress).await?;
        }
        rec.egress = egress;
    }
    // The CPU and memory it is to have: a new size drops resources of its own unless
    // the body gives resources too (relative to the new size); `{}` is the size's.
    let new_size = v.size.unwrap_or_else(|| berth_core::size::lookup(rec.size).unwrap_or(berth_core::size::SIZES[0]));
    let new_resources = match (&v.resources, v.size) {
        (Some(ask), _) => Some(super::validate::resources_for(ask, &new_size, &state.settings.resource_bounds)?),
        (None, Some(_)) => Some(None),
        (None, None) => None,
    };
    // Growing a running instance needs room on the host for the difference.
    let _room = match &new_resources {
        Some(r) if matches!(rec.status, Status::Running | Status::Paused) => {
            let want = berth_core::Resources::effective(&new_size, r.as_ref()).memory_limit_mb;
            let more = want.saturating_sub(memory_of(&rec));
            Some(state.admission.reserve(state.store.as_ref(), more).await?)
        }
        _ => None,
    };
    if let (Some(r), None) = (new_resources, v.size) {
        // Resources alone: applied in place, no price change.
        if r != rec.resources {
            if rec.status != Status::Deleted && state.runtime.inspect(&rec.id).await?.observed != Observed::Missing {
                resize_runtime(&state, &rec, &new_size, r.as_ref()).await?;
            }
            rec.resources = r;
            state.store.update_instance(&rec).await?;
        }
    }
    if let Some(size) = v.size {
        let resources = new_resources.flatten();
        let old_disk = berth_core::size::lookup(rec.size).map_or(0, |s| s.disk_gb);
        if size.disk_gb > old_disk {
            let ws = state.store.workspace(&rec.workspace_id).await?.ok_or_else(|| ApiError::NotFound {
                code: "workspace_not_found",
                message: "workspace not found".into(),
            })?;
            let budget = state.settings.workspace_disk_gb;
            crate::admission::check_workspace_disk(state.store.as_ref(), &ws, budget, size.disk_gb - old_disk).await?;
        }
        // The price difference for the rest of the paid month, before anything changes.
        let diff = crate::compute::resize(&state, &rec, size.size).await?;
        let resized = async {
            if rec.status != Status::Deleted && state.runtime.inspect(&rec.id).await?.observed != Observed::Missing {
                resize_runtime(&state, &rec, &size, resources.as_ref()).await?;
            }
            Ok::<_, RuntimeError>(())
        }
        .await;
        if let Err(e) = resized {
            crate::compute::undo_resize(&state, &rec, diff).await;
            return Err(e.into());
        }
        // Resized and paid for: recorded at once, whatever fails after.
        rec.size = size.size;
        rec.resources = resources;
        state.store.update_instance(&rec).await?;
    }
    if let Some(env) = v.env {
        rec.env = env;
        address_stale(&state, &rec.id);
        state.runtime.create(&spec_of(&state, &rec)).await?;
        addresses_released(&state, &rec.id).await;
        if matches!(rec.status, Status::Running | Status::Paused | Status::Error) {
            state.runtime.start(&rec.id).await?;
            wait_ready(&state, &rec).await?;
            if rec.status == Status::Paused {
                state.runtime.pause(&rec.id).await?;
            }
            if rec.status == Status::Error {
                set_status(&state, &mut rec, Status::Running, &actor, None).await?;
            }
        }
    }
    rec.updated_at = now_secs();
    state.store.update_instance(&rec).await?;
    state.routes.apply(&rec);
    // A new egress policy applies to the running container at once, no restart.
    if rec.status != Status::Deleted {
        state.egress_policy(&rec.id, &rec.egress).await;
    }
    Ok(rec)
}

/// `DELETE`: soft (container removed, data kept for the retention period) or purge.
/// Either way the instance's URLs stop routing and its share links are revoked.
#[tracing::instrument(skip_all, fields(instance = %id))]
pub async fn delete(state: AppState, actor: Actor, id: String, purge: bool) -> ApiResult<Option<InstanceRecord>> {
    let rec = load(&state, &actor, &id).await?;
    let _guard = state.locks.lock(&rec.id).await;
    let mut rec = load(&state, &actor, &id).await?;
    if purge {
        if rec.status == Status::Creating {
            transition(rec.status, Action::Delete)?;
        }
        state.routes.remove(&rec.id);
        state.shares.revoke_instance(&rec.id);
        state.runtime.purge(&rec.id).await?;
        state.store.delete_instance(&rec.id).await?;
        state.egress_forget(&rec.id).await;
        state.forget_instance_keys(&rec.workspace_id, &rec.id).await;
        if let Some(proxy) = &state.llm_proxy {
            proxy.forget(&rec.id);
        }
        let ev = EventRecord {
            instance_id: rec.id.clone(),
            at: now_secs(),
            from: Some(rec.status),
            to: Status::Deleted,
            actor: actor.name(),
            reason: Some("purged".into()),
        };
        state.store.record_event(&ev).await?;
        return Ok(None);
    }
    transition(rec.status, Action::Delete)?;
    state.shares.revoke_instance(&rec.id);
    address_stale(&state, &rec.id);
    state.runtime.remove(&rec.id).await?;
    state.egress_forget(&rec.id).await;
    rec.deleted_at = Some(now_secs());
    set_status(&state, &mut rec, Status::Deleted, &actor, None).await?;
    Ok(Some(rec))
}

/// `POST /v1/instances/{id}/hold`: keeps the instance awake until `now + ttl`
/// (0 releases the hold). An instance asleep after idling is woken.
#[tracing::instrument(skip_all, fields(instance = %id))]
pub async fn hold(state: AppState, actor: Actor, id: String, ttl_secs: i64) -> ApiResult<InstanceRecord> {
    let rec = load(&state, &actor, &id).await?;
    {
        let _guard = state.locks.lock(&rec.id).await;
        let mut rec = load(&state, &actor, &id).await?;
        let asleep = rec.status == Status::Stopped && rec.idle_stopped;
        if rec.status != Status::Running && !asleep {
            return Err(crate::error::invalid_state("hold", rec.status));
        }
        rec.hold_until = (ttl_secs > 0).then(|| now_secs() + ttl_secs);
        state.store.update_instance(&rec).await?;
        state.routes.apply(&rec);
        if !asleep {
            return Ok(rec);
        }
    }
    act(state, actor, id, Action::Start).await
}

/// Applies a size to the instance's container. Where the runtime resizes by restarting
/// (Kubernetes), the instance gets a new address: the edge forgets the old one and a
/// running instance is waited for again.
async fn resize_runtime(
    state: &AppState,
    rec: &InstanceRecord,
    size: &berth_core::SizeSpec,
    resources: Option<&berth_core::Resources>,
) -> Result<(), RuntimeError> {
    if !state.runtime.resize_restarts() {
        return state.runtime.resize(&rec.id, size, resources).await;
    }
    address_stale(state, &rec.id);
    state.runtime.resize(&rec.id, size, resources).await?;
    addresses_released(state, &rec.id).await;
    if rec.status == Status::Running {
        wait_ready(state, rec).await?;
    }
    Ok(())
}
