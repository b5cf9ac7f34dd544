//! Image pulls: one pull per image however many creates need it (they all wait for
//! the same one), run as a task of its own so that a create that gives up (its client
//! went away) never cuts the pull short for the others, with its progress readable
//! while it runs ([`crate::PullProgress`]).

use crate::PullProgress;
use bollard::models::CreateImageInfo;
use bollard::query_parameters::CreateImageOptions;
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The pulls running now, by image.
#[derive(Default)]
pub(super) struct Pulls {
    live: Mutex<HashMap<String, Arc<Pull>>>,
}

/// One pull: its layers so far and, once it has ended, its outcome.
struct Pull {
    started_at: i64,
    layers: Mutex<Vec<Layer>>,
    outcome: watch::Sender<Option<Result<(), String>>>,
}

/// One layer, as the daemon reports it (`id` is its short digest).
#[derive(Default)]
struct Layer {
    id: String,
    current: u64,
    total: u64,
    done: bool,
}

impl Pull {
    /// Takes in one line of the daemon's progress.
    fn take(&self, info: &CreateImageInfo) {
        let (Some(id), Some(status)) = (&info.id, &info.status) else { return };
        let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        // The daemon also reports lines for the tag itself ("latest: Pulling from ..."):
        // only lines about layers carry a layer status.
        let is_layer = matches!(
            status.as_str(),
            "Pulling fs layer"
                | "Waiting"
                | "Downloading"
                | "Verifying Checksum"
                | "Download complete"
                | "Extracting"
                | "Pull complete"
                | "Already exists"
        );
        if !is_layer {
            return;
        }
        let at = match layers.iter().position(|l| &l.id == id) {
            Some(at) => at,
            None => {
                layers.push(Layer { id: id.clone(), ..Default::default() });
                layers.len() - 1
            }
        };
        let layer = &mut layers[at];
        let detail = info.progress_detail.as_ref();
        match status.as_str() {
            "Downloading" => {
                if let Some(total) = detail.and_then(|d| d.total).filter(|t| *t > 0) {
                    layer.total = total as u64;
                }
                if let Some(current) = detail.and_then(|d| d.current) {
                    layer.current = (current.max(0) as u64).max(layer.current);
                }
            }
            "Download complete" | "Extracting" | "Verifying Checksum" => layer.current = layer.total,
            "Pull complete" | "Already exists" => {
                layer.current = layer.total;
                layer.done = true;
            }
            _ => {}
        }
    }

    fn progress(&self, image: &str) -> PullProgress {
        let layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        PullProgress {
            image: image.to_string(),
            started_at: self.started_at,
            current_bytes: layers.iter().map(|l| l.current.min(l.total.max(l.current))).sum(),
            total_bytes: layers.iter().map(|l| l.total).sum(),
            layers_done: layers.iter().filter(|l| l.done).count() as u32,
            layers_total: layers.len() as u32,
        }
    }
}

impl Pulls {
    /// The progress of a pull of `image`, while one runs.
    pub(super) fn progress(&self, image: &str) -> Option<PullProgress> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.get(image).map(|p| p.progress(image))
    }

    /// Pulls `image` (or joins the pull of it already running) and waits for it to
    /// end; `Err` carries the daemon's reason.
    pub(super) async fn pull(self: &Arc<Self>, docker: &Docker, image: &str) -> Result<(), String> {
        let mut outcome = {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            match live.get(image) {
                Some(p) => p.outcome.subscribe(),
                None => {
                    let pull = Arc::new(Pull {
                        started_at: berth_core::now_secs(),
                        layers: Mutex::default(),
                        outcome: watch::Sender::new(None),
                    });
                    live.insert(image.to_string(), pull.clone());
                    let rx = pull.outcome.subscribe();
                    tokio::spawn(run(self.clone(), docker.clone(), image.to_string(), pull));
                    rx
                }
            }
        };
        let ended = outcome.wait_for(Option::is_some).await.map(|done| done.clone());
        match ended {
            Ok(done) => done.unwrap_or(Ok(())),
            Err(_) => Err("the pull was dropped".into()),
        }
    }
}

async fn run(pulls: Arc<Pulls>, docker: Docker, image: String, pull: Arc<Pull>) {
    tracing::info!(image, "image missing locally, pulling");
    let opts = CreateImageOptions { from_image: Some(image.clone()), ..Default::default() };
    let mut steps = docker.create_image(Some(opts), None, None);
    let mut result = Ok(());
    while let Some(step) = steps.next().await {
        match step {
            Ok(info) => pull.take(&info),
            Err(e) => {
                result = Err(e.to_string());
                break;
            }
        }
    }
    let secs = berth_core::now_secs() - pull.started_at;
    match &result {
        Ok(()) => tracing::info!(image, secs, "image pulled"),
        Err(e) => tracing::warn!(image, secs, error = %e, "image pull failed"),
    }
    pulls.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&image);
    pull.outcome.send_replace(Some(result));
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ProgressDetail;

    fn line(id: &str, status: &str, current: Option<i64>, total: Option<i64>) -> CreateImageInfo {
        CreateImageInfo {
            id: Some(id.into()),
            status: Some(status.into()),
            progress_detail: Some(ProgressDetail { current, total }),
            ..Default::default()
        }
    }

    #[test]
    fn progress_adds_up_the_layers_as_the_daemon_reports_them() {
        let p = Pull { started_at: 1, layers: Mutex::default(), outcome: watch::Sender::new(None) };
        p.take(&line("latest", "Pulling from library/x", None, None));
        p.take(&line("aaa", "Pulling fs layer", None, None));
        p.take(&line("bbb", "Already exists", None, None));
        p.take(&line("aaa", "Downloading", Some(100), Some(1000)));
        let got = p.progress("x:latest");
        assert_eq!((got.current_bytes, got.total_bytes, got.layers_done, got.layers_total), (100, 1000, 1, 2));
        p.take(&line("aaa", "Download complete", None, None));
        p.take(&line("aaa", "Extracting", Some(5), Some(2000)));
        p.take(&line("aaa", "Pull complete", None, None));
        let got = p.progress("x:latest");
        assert_eq!((got.current_bytes, got.total_bytes, got.layers_done, got.layers_total), (1000, 1000, 2, 2));
    }
}
