//! Home volumes with a real size: each instance's home is an ext4 filesystem in a
//! sparse image file (`<dir>/<instance>.ext4`) attached to a loop device, which
//! Docker's `local` driver mounts (`type=ext4`, `device=/dev/loopN`). Writes past the
//! size fail with ENOSPC inside the instance and never reach the host's disk; the image
//! only takes the blocks actually written. Growing the size grows the image and the loop
//! device at once, and the filesystem online (`resize2fs`) where the kernel lets berth
//! (online ext4 growth needs CAP_SYS_RESOURCE); otherwise at the container's next start,
//! offline (`e2fsck`, `resize2fs`) while nothing mounts it. It never shrinks.
//!
//! Loop attachments do not survive a host reboot: before a container starts, its
//! image is attached again at the device its volume names.

use crate::{Result, RuntimeError};
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// Bytes of the block device `device`.
async fn device_bytes(device: &str) -> Result<u64> {
    let out = run("blockdev", &["--getsize64", device]).await?;
    out.parse().map_err(|_| RuntimeError::Failed(format!("blockdev --getsize64 {device} said `{out}`")))
}

/// Bytes the ext4 filesystem on `device` spans.
async fn fs_bytes(device: &str) -> Result<u64> {
    let out = run("dumpe2fs", &["-h", device]).await?;
    let field = |name: &str| out.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok());
    match (field("Block count:"), field("Block size:")) {
        (Some(count), Some(size)) => Ok(count * size),
        _ => Err(RuntimeError::Failed(format!("dumpe2fs -h {device}: no block count and size"))),
    }
}

/// Whether `device` is mounted (in this mount namespace, where dockerd mounts volumes).
fn mounted(device: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.split(" - ").nth(1).and_then(|r| r.split_whitespace().nth(1)) == Some(device)))
        .unwrap_or(false)
}

/// Where the images of one installation live, and the tools that handle them.
#[derive(Debug, Clone)]
pub struct LoopDisks {
    dir: PathBuf,
}

/// Programs the loop-backed homes need on the Docker host (util-linux, e2fsprogs).
pub const TOOLS: &[&str] = &["losetup", "blockdev", "mkfs.ext4", "resize2fs", "e2fsck", "dumpe2fs"];

async fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| RuntimeError::Failed(format!("running {program}: {e}")))?;
    if !out.status.success() {
        return Err(RuntimeError::Failed(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl LoopDisks {
    /// Images in `dir` (made when missing, 0700: homes are tenants' data).
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(LoopDisks { dir })
    }

    /// The image file of instance `id`.
    pub fn image(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.ext4"))
    }

    /// The loop device `image` is attached to, if any.
    async fn attached(image: &Path) -> Result<Option<String>> {
        let path = image.to_string_lossy();
        let out = run("losetup", &["--noheadings", "--output", "NAME", "--associated", &path]).await?;
        Ok(out.lines().next().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()))
    }

    /// Makes instance `id`'s home image of `bytes` (or grows it to that) and attaches
    /// it; answers its loop device.
    pub async fn ensure(&self, id: &str, bytes: u64) -> Result<String> {
        let image = self.image(id);
        let path = image.to_string_lossy().into_owned();
        if !image.exists() {
            let file =
                std::fs::File::create_new(&image).map_err(|e| RuntimeError::Failed(format!("creating {path}: {e}")))?;
            file.set_len(bytes).map_err(|e| RuntimeError::Failed(format!("sizing {path}: {e}")))?;
            // No reserved blocks (the tenant's whole size), lazy init (a sparse image
            // stays small), no discard pass over a file that has nothing yet.
            let made = run(
                "mkfs.ext4",
                &[
                    "-q",
                    "-F",
                    "-m",
                    "0",
                    "-E",
                    "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
                    "-L",
                    "berth-home",
                    &path,
                ],
            )
            .await;
            if let Err(e) = made {
                let _ = std::fs::remove_file(&image);
                return Err(e);
            }
        }
        let device = match Self::attached(&image).await? {
            Some(dev) => dev,
            None => run("losetup", &["--find", "--show", &path]).await?,
        };
        self.grow(id, &device, bytes).await?;
        Ok(device)
    }

    /// Attaches instance `id`'s image at `device` (as its volume says) when it is not
    /// attached anywhere, e.g. after a reboot.
    pub async fn reattach(&self, id: &str, device: &str) -> Result<()> {
        let image = self.image(id);
        if !image.exists() {
            return Err(RuntimeError::Failed(format!("the home image {} is missing", image.display())));
        }
        match Self::attached(&image).await? {
            Some(dev) if dev == device => Ok(()),
            Some(dev) => Err(RuntimeError::Failed(format!(
                "the home image of {id} is attached at {dev}, but its volume names {device}"
            ))),
            None => run("losetup", &[device, &image.to_string_lossy()]).await.map(|_| ()),
        }
    }

    /// Grows the image, its loop device and its filesystem to `bytes` (never shrinks).
    pub async fn grow(&self, id: &str, device: &str, bytes: u64) -> Result<()> {
        let image = self.image(id);
        let len = std::fs::metadata(&image).map_err(|e| RuntimeError::Failed(e.to_string()))?.len();
        if len >= bytes {
            return Ok(());
        }
        let file =
            std::fs::OpenOptions::new().write(true).open(&image).map_err(|e| RuntimeError::Failed(e.to_string()))?;
        file.set_len(bytes).map_err(|e| RuntimeError::Failed(e.to_string()))?;
        run("losetup", &["--set-capacity", device]).await?;
        self.grow_fs(device).await.map(|_| ())
    }

    /// Grows the filesystem on `device` to the device's size: online when it is mounted
    /// and the kernel allows it, offline when nothing mounts it. Answers `false` when
    /// the growth has to wait for the next start (mounted, online growth refused).
    pub async fn grow_fs(&self, device: &str) -> Result<bool> {
        if fs_bytes(device).await? >= device_bytes(device).await? {
            return Ok(true);
        }
        if mounted(device) {
            return match run("resize2fs", &[device]).await {
                Ok(_) => Ok(true),
                Err(e) => {
                    tracing::info!(device, error = %e, "the home grows at its next start (online growth refused)");
                    Ok(false)
                }
            };
        }
        // resize2fs insists on a freshly checked filesystem; -p repairs only what is safe.
        let out = Command::new("e2fsck")
            .args(["-f", "-p", device])
            .output()
            .await
            .map_err(|e| RuntimeError::Failed(format!("running e2fsck: {e}")))?;
        if out.status.code().is_none_or(|c| c >= 4) {
            return Err(RuntimeError::Failed(format!(
                "e2fsck {device} found damage it cannot repair unattended: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            )));
        }
        run("resize2fs", &[device]).await.map(|_| true)
    }

    /// Detaches instance `id`'s image and deletes it (its home is gone).
    pub async fn release(&self, id: &str) -> Result<()> {
        let image = self.image(id);
        if !image.exists() {
            return Ok(());
        }
        while let Some(dev) = Self::attached(&image).await? {
            run("losetup", &["--detach", &dev]).await?;
        }
        std::fs::remove_file(&image).map_err(|e| RuntimeError::Failed(format!("removing {}: {e}", image.display())))
    }
}
