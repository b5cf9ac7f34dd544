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
/// Longest line kept (longer ones are cut, saying so).
pub const MAX_LINE_BYTES: usize = 4096;
/// Most builds a workspace may have running or waiting at once.
pub const MAX_PER_WORKSPACE: usize = 4;

/// The builds running (or waiting for a slot) on this server.
pub struct Builds {
    live: Mutex<HashMap<(TemplateId, u32), Arc<Live>>>,
    /// Builds running or waiting, per workspace.
    per_workspace: Arc<Mutex<HashMap<String, usize>>>,
    slots: Arc<Semaphore>,
    timeout: Duration,
}

/// A workspace's place for one more build, taken before its version is stored; it is
/// given back when the build ends (or when the version is never stored).
pub struct Ticket {
    workspace: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.workspace) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.workspace);
            }
        }
    }
}

/// Ends a build's live entry however its task ends (a panic, an abort): followers
/// are told it ended and the entry goes.
struct Ending {
    state: AppState,
    id: TemplateId,
    version: u32,
    live: Arc<Live>,
}

impl Drop for Ending {
    fn drop(&mut self) {
        self.live.close();
        self.state.builds.end(&self.id, self.version);
    }
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

    fn push(&self, mut message: String) {
        if message.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [berth: line cut]");
        }
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
        Builds {
            live: Mutex::default(),
            per_workspace: Arc::default(),
            slots: Arc::new(Semaphore::new(max_builds.max(1))),
            timeout,
        }
    }

    /// A place for one more build of `workspace`; `None` when it already has
    /// [`MAX_PER_WORKSPACE`] running or waiting.
    pub fn reserve(&self, workspace: &str) -> Option<Ticket> {
        let mut counts = self.per_workspace.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(workspace.to_string()).or_default();
        if *n >= MAX_PER_WORKSPACE {
            return None;
        }
        *n += 1;
        Some(Ticket { workspace: workspace.to_string(), counts: self.per_workspace.clone() })
    }

    /// The build of a template version, while it runs.
    pub fn live(&self, id: &TemplateId, version: u32) -> Option<Arc<Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).get(&(id.clone(), version)).cloned()
    }

    /// Starts building a template version (already stored as `building`).
    pub fn start(&self, state: &AppState, id: TemplateId, version: u32, req: BuildRequest, ticket: Ticket) {
        let live = Arc::new(Live::new());
        self.live.lock().unwrap_or_else(|e| e.into_inner()).insert((id.clone(), version), live.clone());
        let ending = Ending { state: state.clone(), id, version, live: live.clone() };
        let task = tokio::spawn(run(ending, req, self.slots.clone(), self.timeout, ticket));
        *live.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
    }

    /// Stops the builds of a template being deleted (their rows go with it).
    pub fn cancel(&self, id: &TemplateId) {
        let mut gone = Vec::new();
        self.live.lock().unwrap_or_else(|e| e.into_inner()).retain(|(t, _), b| {
            if t == id {
                gone.push(b.clone());
            }
            t != id
        });
        // Outside the lock: an aborted task's `Ending` takes it.
        for b in gone {
            if let Some(task) = b.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
                task.abort();
            }
            b.close();
        }
    }

    fn end(&self, id: &TemplateId, version: u32) {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&(id.clone(), version));
    }
}

async fn run(ending: Ending, req: BuildRequest, slots: Arc<Semaphore>, timeout: Duration, _ticket: Ticket) {
    let (state, id, version, live) = (&ending.state, &ending.id, ending.version, &ending.live);
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
    // The outcome must be stored, or the version would stay `building` until the next
    // server start: a few tries over a few seconds (a busy database) before giving up.
    let log = live.all();
    let mut tries = 0;
    let stored = loop {
        tries += 1;
        match state.store.finish_build(id, version, status, error.as_deref(), &log).await {
            Ok(found) => break Some(found),
            Err(e) if tries < 5 => {
                tracing::warn!(template = %id, version, error = %e, "storing a build's outcome failed; trying again");
                tokio::time::sleep(Duration::from_millis(200 << tries)).await;
            }
            Err(e) => {
                tracing::error!(template = %id, version, error = %e, "could not store a build's outcome; the next server start marks it failed");
                break None;
            }
        }
    };
    match stored {
        Some(true) if status == TemplateStatus::Ready => state.settings.templates.set(id.as_str(), version),
        // The template was deleted meanwhile: its image goes too.
        Some(false) => {
            let _ = state.runtime.remove_image(&image).await;
        }
        _ => {}
    }
    // `ending` closes the live entry and removes it, now that the outcome is stored.
}

/// A runtime error as a build's reason (without the runtime's own prefix).
fn clean(e: &berth_runtime::RuntimeError) -> String {
    match e {
        berth_runtime::RuntimeError::Failed(m) => m.trim().to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_has_a_few_builds_at_once_and_gets_its_places_back() {
        let b = Builds::new(2, Duration::from_secs(60));
        let held: Vec<Ticket> = (0..MAX_PER_WORKSPACE).map(|_| b.reserve("ws_a").expect("a place")).collect();
        assert!(b.reserve("ws_a").is_none(), "the fifth waits");
        assert!(b.reserve("ws_b").is_some(), "another workspace is not held up");
        drop(held);
        assert!(b.reserve("ws_a").is_some(), "ended builds give their places back");
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let live = Live::new();
        live.push("é".repeat(MAX_LINE_BYTES));
        let line = &live.since(0)[0].message;
        assert!(line.ends_with("[berth: line cut]") && line.len() < MAX_LINE_BYTES + 32, "{}", line.len());
    }
}
