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

/// Bytes of the block device `device` (sysfs counts 512-byte sectors).
fn device_bytes(device: &str) -> Result<u64> {
    let name = device.trim_start_matches("/dev/");
    let text = std::fs::read_to_string(format!("/sys/block/{name}/size"))
        .map_err(|e| RuntimeError::Failed(format!("size of {device}: {e}")))?;
    let sectors: u64 =
        text.trim().parse().map_err(|_| RuntimeError::Failed(format!("size of {device}: `{}`", text.trim())))?;
    Ok(sectors * 512)
}

/// Bytes the ext4 filesystem on `device` spans, from its superblock (no process).
fn fs_bytes(device: &str) -> Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let fail = |e: String| RuntimeError::Failed(format!("reading the superblock of {device}: {e}"));
    let mut f = std::fs::File::open(device).map_err(|e| fail(e.to_string()))?;
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(1024)).and_then(|_| f.read_exact(&mut sb)).map_err(|e| fail(e.to_string()))?;
    let u32_at = |o: usize| u64::from(u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]));
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return Err(fail("not an ext4 filesystem".into()));
    }
    let mut blocks = u32_at(0x04);
    if u32_at(0x60) & 0x80 != 0 {
        blocks |= u32_at(0x150) << 32; // 64bit feature: the high half of the count
    }
    Ok(blocks << (10 + u32_at(0x18)))
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
pub const TOOLS: &[&str] = &["losetup", "mkfs.ext4", "resize2fs", "e2fsck"];

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

    /// The loop device `image` is attached to, if any (read from sysfs: a start costs
    /// no process).
    fn attached(image: &Path) -> Option<String> {
        let image = image.canonicalize().unwrap_or_else(|_| image.to_path_buf());
        let entries = std::fs::read_dir("/sys/block").ok()?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                continue;
            }
            let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else { continue };
            if Path::new(backing.trim_end()) == image {
                return Some(format!("/dev/{name}"));
            }
        }
        None
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
        let device = match Self::attached(&image) {
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
        match Self::attached(&image) {
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
        self.grow_fs(device).await
    }

    /// Grows the filesystem on `device` to the device's size: online when it is mounted
    /// and the kernel allows it (else it waits for the next start, logged), offline when
    /// nothing mounts it.
    pub async fn grow_fs(&self, device: &str) -> Result<()> {
        if fs_bytes(device)? >= device_bytes(device)? {
            return Ok(());
        }
        if mounted(device) {
            if let Err(e) = run("resize2fs", &[device]).await {
                tracing::info!(device, error = %e, "the home grows at its next start (online growth refused)");
            }
            return Ok(());
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
        run("resize2fs", &[device]).await.map(|_| ())
    }

    /// Detaches instance `id`'s image and deletes it (its home is gone).
    pub async fn release(&self, id: &str) -> Result<()> {
        let image = self.image(id);
        if !image.exists() {
            return Ok(());
        }
        while let Some(dev) = Self::attached(&image) {
            run("losetup", &["--detach", &dev]).await?;
        }
        std::fs::remove_file(&image).map_err(|e| RuntimeError::Failed(format!("removing {}: {e}", image.display())))
    }
}

#[cfg(test)]
mod tests {
    /// The superblock reader agrees with mkfs on a real image (no loop device needed:
    /// the image file reads like the device).
    #[tokio::test]
    async fn the_superblock_says_the_filesystems_size() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("t.ext4");
        std::fs::File::create(&image).unwrap().set_len(64 << 20).unwrap();
        let path = image.to_string_lossy().into_owned();
        if super::run("mkfs.ext4", &["-q", "-F", "-m", "0", &path]).await.is_err() {
            eprintln!("mkfs.ext4 missing: skipped");
            return;
        }
        assert_eq!(super::fs_bytes(&path).unwrap(), 64 << 20);
        assert!(super::fs_bytes("/dev/null").is_err());
    }
}
