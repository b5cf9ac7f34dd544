//! Template builds in progress: each runs as a task of its own (at most
//! `--max-builds` at once, each within `--build-timeout-secs`), its output kept in
//! memory for followers until it ends, then stored with the build's outcome.
//!
//! A build is a template version in `building` status. When it ends, the version (and
//! any later one sharing its image) becomes `ready` or `failed` in the store, and a
//! ready one becomes the template's newest ready version in the [`Catalog`]
//! (`update_available`). A follower reads the live lines first and the stored log once
//! the build has ended: the store is written before the live entry goes, so no line is
//! ever missed between the two.
//!
//! [`Catalog`]: crate::templates::Catalog

use crate::state::AppState;
use berth_core::{TemplateId, TemplateStatus};
use berth_runtime::build::BuildRequest;
use berth_store::BuildLine;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// Most lines of a build's output kept (the rest are counted, not kept).
pub const MAX_LINES: usize = 20_000;

/// The builds running (or waiting for a slot) on this server.
pub struct Builds {
    live: Mutex<HashMap<(TemplateId, u32), Arc<Live>>>,
    slots: Arc<Semaphore>,
    timeout: Duration,
}

/// How many lines a build has printed, and whether it has ended.
pub type Progress = watch::Receiver<(usize, bool)>;

/// A build in progress: its output so far.
pub struct Live {
    lines: Mutex<Vec<BuildLine>>,
    /// How many lines there are, and whether the build has ended (its outcome stored).
    count: watch::Sender<(usize, bool)>,
    dropped: std::sync::atomic::AtomicUsize,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Live {
    fn new() -> Self {
        Live {
            lines: Mutex::new(Vec::new()),
            count: watch::Sender::new((0, false)),
            dropped: Default::default(),
            task: Mutex::new(None),
        }
    }

    fn push(&self, message: String) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() >= MAX_LINES {
            self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let timestamp = berth_core::time::format_rfc3339_millis(now_ms());
        lines.push(BuildLine { timestamp, message });
        let n = lines.len();
        drop(lines);
        self.count.send_modify(|c| c.0 = n);
    }

    /// Lines from `from` on.
    pub fn since(&self, from: usize) -> Vec<BuildLine> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.get(from..).map(<[BuildLine]>::to_vec).unwrap_or_default()
    }

    /// Wakes when there are more lines or the build has ended (`.1`).
    pub fn subscribe(&self) -> Progress {
        self.count.subscribe()
    }

    /// The build has ended and its outcome is stored (or it was cancelled).
    fn close(&self) {
        self.count.send_modify(|c| c.1 = true);
    }

    fn all(&self) -> Vec<BuildLine> {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let dropped = self.dropped.load(std::sync::atomic::Ordering::Relaxed);
        if dropped > 0 {
            lines.push(BuildLine {
                timestamp: berth_core::time::format_rfc3339_millis(now_ms()),
                message: format!("[berth: {dropped} more lines of output were not kept]"),
            });
        }
        lines
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Builds {
    pub fn new(max_builds: usize, timeout: Duration) -> Self {
        Builds { live: Mutex::default(), slots: Arc::new(Semaphore::new(max_builds.max(1))), timeout }
    }

    /// The build of a template version, while it runs.
    pub fn live(&self, id: &TemplateId, version: u32) -> Option<Arc<Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).get(&(id.clone(), version)).cloned()
    }

    /// Starts building a template version (already stored as `building`).
    pub fn start(&self, state: &AppState, id: TemplateId, version: u32, req: BuildRequest) {
        let live = Arc::new(Live::new());
        self.live.lock().unwrap_or_else(|e| e.into_inner()).insert((id.clone(), version), live.clone());
        let task = tokio::spawn(run(state.clone(), id, version, req, live.clone(), self.slots.clone(), self.timeout));
        *live.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
    }

    /// Stops the builds of a template being deleted (their rows go with it).
    pub fn cancel(&self, id: &TemplateId) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|(t, _), b| {
            if t != id {
                return true;
            }
            if let Some(task) = b.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
                task.abort();
            }
            b.close();
            false
        });
    }

    fn end(&self, id: &TemplateId, version: u32) {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&(id.clone(), version));
    }
}

async fn run(
    state: AppState,
    id: TemplateId,
    version: u32,
    req: BuildRequest,
    live: Arc<Live>,
    slots: Arc<Semaphore>,
    timeout: Duration,
) {
    let image = req.tag.clone();
    let slot = match slots.clone().try_acquire_owned() {
        Ok(slot) => Ok(slot),
        Err(_) => {
            live.push("[berth: waiting for a free build slot (--max-builds)]".into());
            slots.acquire_owned().await
        }
    };
    let _slot = slot;
    live.push(format!("[berth: building {image}]"));
    let started = std::time::Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pump = async {
        while let Some(line) = rx.recv().await {
            live.push(line);
        }
    };
    let (outcome, ()) = tokio::join!(tokio::time::timeout(timeout, state.runtime.build_image(req, tx)), pump);
    let (status, error) = match outcome {
        Ok(Ok(())) => (TemplateStatus::Ready, None),
        Ok(Err(e)) => (TemplateStatus::Failed, Some(clean(&e))),
        Err(_) => (
            TemplateStatus::Failed,
            Some(format!("the build took longer than {} s (--build-timeout-secs)", timeout.as_secs())),
        ),
    };
    let secs = started.elapsed().as_secs_f64();
    match &error {
        None => live.push(format!("[berth: built {image} in {secs:.1} s]")),
        Some(e) => live.push(format!("[berth: the build failed after {secs:.1} s: {e}]")),
    }
    tracing::info!(template = %id, version, status = status.as_str(), secs, "template build ended");
    match state.store.finish_build(&id, version, status, error.as_deref(), &live.all()).await {
        Ok(true) => {}
        // The template was deleted meanwhile: its image goes too.
        Ok(false) => {
            let _ = state.runtime.remove_image(&image).await;
        }
        Err(e) => tracing::error!(template = %id, version, error = %e, "could not store a build's outcome"),
    }
    if status == TemplateStatus::Ready {
        state.settings.templates.set(id.as_str(), version);
    }
    live.close();
    state.builds.end(&id, version);
}

/// A runtime error as a build's reason (without the runtime's own prefix).
fn clean(e: &berth_runtime::RuntimeError) -> String {
    match e {
        berth_runtime::RuntimeError::Failed(m) => m.trim().to_string(),
        other => other.to_string(),
    }
}
