//! Admission: instances may not promise more memory than the host has (times
//! `--memory-overcommit`), nor outnumber `--max-instances`. Creates are checked and
//! inserted under one lock, so two cannot both take the last room; starts reserve
//! their memory until the instance runs (and counts in the database).

use crate::error::{ApiError, ApiResult};
use berth_core::size;
use berth_store::Store;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{Mutex, MutexGuard};

/// The host's room for instances.
pub struct Admission {
    lock: Mutex<()>,
    pending_mb: Arc<AtomicU64>,
    /// Host memory × overcommit, in MiB (0: unknown, not checked).
    limit_mb: u64,
    overcommit: f64,
    max_instances: Option<u32>,
}

/// Memory reserved by a start until the instance runs; released on drop.
#[derive(Debug)]
pub struct Reservation {
    mb: u64,
    pending: Arc<AtomicU64>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pending.fetch_sub(self.mb, Ordering::AcqRel);
    }
}

impl Admission {
    /// Room for `host_memory_bytes × overcommit` of instance memory and at most `max_instances`.
    pub fn new(host_memory_bytes: u64, overcommit: f64, max_instances: Option<u32>) -> Self {
        let limit_mb = (host_memory_bytes as f64 / 1_048_576.0 * overcommit) as u64;
        Self { lock: Mutex::new(()), pending_mb: Arc::default(), limit_mb, overcommit, max_instances }
    }

    async fn check_memory(&self, store: &dyn Store, mb: u64) -> ApiResult<()> {
        if self.limit_mb == 0 {
            return Ok(());
        }
        let active: u64 = store
            .active_sizes()
            .await?
            .into_iter()
            .map(|(s, n)| size::lookup(s).map_or(0, |spec| spec.memory_mb) * n.max(0) as u64)
            .sum::<u64>()
            + store.active_custom_memory_mb().await?;
        let committed = active + self.pending_mb.load(Ordering::Acquire);
        if committed + mb > self.limit_mb {
            return Err(ApiError::CapacityExceeded {
                message: format!(
                    "not enough memory on this host: {mb} MiB asked, {committed} MiB of {} MiB (host memory × {}) \
                     already promised to running instances; stop or shrink one, or raise --memory-overcommit",
                    self.limit_mb, self.overcommit
                ),
                details: json!({"requested_mb": mb, "committed_mb": committed, "capacity_mb": self.limit_mb}),
            });
        }
        Ok(())
    }

    /// Checks a create of `mb`; hold the guard until the record is inserted.
    pub async fn for_create(&self, store: &dyn Store, mb: u64) -> ApiResult<MutexGuard<'_, ()>> {
        let guard = self.lock.lock().await;
        if let Some(max) = self.max_instances {
            let live: i64 = store
                .status_counts()
                .await?
                .into_iter()
                .filter(|(st, _)| *st != berth_core::Status::Deleted)
                .map(|(_, n)| n)
                .sum();
            if live >= max as i64 {
                return Err(ApiError::CapacityExceeded {
                    message: format!("this server holds its limit of {max} instances (--max-instances)"),
                    details: json!({"max_instances": max, "instances": live}),
                });
            }
        }
        self.check_memory(store, mb).await?;
        Ok(guard)
    }

    /// Reserves `mb` for a start (or a resize up) until the reservation drops.
    pub async fn reserve(&self, store: &dyn Store, mb: u64) -> ApiResult<Reservation> {
        let _guard = self.lock.lock().await;
        self.check_memory(store, mb).await?;
        self.pending_mb.fetch_add(mb, Ordering::AcqRel);
        Ok(Reservation { mb, pending: self.pending_mb.clone() })
    }
}

/// Refuses `extra_gb` more disk for workspace `ws` when its instances, soft-deleted
/// ones included (their homes are kept until purged), would then hold more than
/// `budget_gb` (`None`: the workspace's instance limit × the largest size's disk).
pub async fn check_workspace_disk(
    store: &dyn Store,
    ws: &berth_store::WorkspaceRecord,
    budget_gb: Option<u64>,
    extra_gb: u64,
) -> ApiResult<()> {
    let largest = berth_core::size::SIZES.iter().map(|s| s.disk_gb).max().unwrap_or(0);
    let budget = budget_gb.unwrap_or(u64::from(ws.instance_limit) * largest);
    let held: u64 = store
        .workspace_sizes(&ws.id)
        .await?
        .iter()
        .map(|(size, n)| berth_core::size::lookup(*size).map_or(0, |s| s.disk_gb) * (*n).max(0) as u64)
        .sum();
    if held + extra_gb > budget {
        return Err(ApiError::LimitExceeded(format!(
            "workspace `{}` would hold {} GiB of instance disk, over its {budget} GiB; soft-deleted instances count \
             until purged (DELETE /v1/instances/{{id}}?purge=true)",
            ws.name,
            held + extra_gb
        )));
    }
    Ok(())
}
