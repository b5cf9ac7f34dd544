//! Template builds through the Engine API's classic builder (`POST /build`).
//!
//! A build runs on the instances' network, so its `RUN` steps reach what instances
//! reach (the internet and the package registries) and nothing they do not (the host,
//! the control plane, other instances), and trusts the host's CA bundle (see
//! [`crate::build`]). No permit is held while it runs: the server bounds how many
//! builds run at once, and a build takes minutes.

use super::{is_not_found, map_err, DockerRuntime};
use crate::build::{builder_context, BuildRequest, DOCKERFILE_PATH};
use crate::{Result, RuntimeError, LABEL_INSTALL};
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{BuildImageOptions, RemoveImageOptions};
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedSender;

/// Memory of a build's `RUN` steps (the Engine API takes an i32 of bytes).
const BUILD_MEMORY: i32 = 2047 << 20;

pub(super) async fn build(rt: &DockerRuntime, req: BuildRequest, log: UnboundedSender<String>) -> Result<()> {
    let ca = match &rt.cfg.ca_bundle {
        Some(path) => Some(
            tokio::fs::read(path)
                .await
                .map_err(|e| RuntimeError::Failed(format!("cannot read the CA bundle {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let BuildRequest { tag, dockerfile, context, mut labels, scope } = req;
    let tar = tokio::task::spawn_blocking(move || builder_context(&context, &dockerfile, &scope, ca.as_deref()))
        .await
        .map_err(|e| RuntimeError::Failed(format!("packing the context: {e}")))?
        .map_err(RuntimeError::Failed)?;
    labels.insert(LABEL_INSTALL.to_string(), rt.cfg.install_id.clone());
    let cpus = crate::Runtime::capacity(rt).cpus;
    let opts = BuildImageOptions {
        dockerfile: DOCKERFILE_PATH.into(),
        t: Some(tag),
        rm: true,
        forcerm: true,
        networkmode: Some(rt.network_ref()),
        labels: Some(labels),
        memory: Some(BUILD_MEMORY),
        memswap: Some(BUILD_MEMORY),
        // All but one of the host's CPUs: a build never starves the control plane.
        cpuperiod: Some(100_000),
        cpuquota: Some(100_000 * i32::try_from(cpus.saturating_sub(1).max(1)).unwrap_or(1)),
        ..Default::default()
    };
    let tag = opts.t.clone().unwrap_or_default();
    let mut steps = rt.docker.build_image(opts, None, Some(bollard::body_full(tar.into())));
    // The image the builder said it made (its `aux` message, or "Successfully built ID").
    let mut built: Option<String> = None;
    while let Some(step) = steps.next().await {
        match step {
            Ok(info) => {
                if let Some(id) = info.aux.and_then(|a| a.id) {
                    built = Some(id);
                }
                if let Some(text) = info.stream {
                    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                        if let Some(short) = line.strip_prefix("Successfully built ") {
                            built.get_or_insert_with(|| short.trim().to_string());
                        }
                        let _ = log.send(line.to_string());
                    }
                }
                if let Some(status) = info.status {
                    let line = match (info.id, info.progress) {
                        (Some(id), Some(p)) => format!("{id}: {status} {p}"),
                        (Some(id), None) => format!("{id}: {status}"),
                        _ => status,
                    };
                    let _ = log.send(line);
                }
            }
            Err(DockerError::DockerStreamError { error }) => {
                let _ = log.send(error.clone());
                return Err(RuntimeError::Failed(error));
            }
            // The builder's stream sometimes ends uncleanly after the last step
            // ("bytes remaining on stream"): the build stands when the tag names
            // the image the builder reported.
            Err(e) => {
                if let Some(id) = &built {
                    if tagged(rt, &tag, id).await {
                        tracing::warn!(%tag, error = %e, "the build's output ended uncleanly after the image was built");
                        return Ok(());
                    }
                }
                return Err(map_err(e));
            }
        }
    }
    Ok(())
}

/// Whether `tag` names the image `id` (full `sha256:…` or the builder's short id).
async fn tagged(rt: &DockerRuntime, tag: &str, id: &str) -> bool {
    let _p = rt.permit().await;
    let Ok(image) = rt.docker.inspect_image(tag).await else { return false };
    let have = image.id.unwrap_or_default();
    let want = id.strip_prefix("sha256:").unwrap_or(id);
    !want.is_empty() && have.strip_prefix("sha256:").unwrap_or(&have).starts_with(want)
}

pub(super) async fn remove(rt: &DockerRuntime, image: &str) -> Result<()> {
    let _p = rt.permit().await;
    match rt.docker.remove_image(image, Some(RemoveImageOptions { force: false, noprune: false }), None).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        // Still used by a container: it stays.
        Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
        Err(e) => Err(map_err(e)),
    }
}
