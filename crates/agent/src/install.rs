//! `berth-agent install DEST`: copies this binary to DEST. A tiny image holding only
//! `/berth-agent` runs `berth-agent install /opt/berth/bin/berth-agent` as a Kubernetes
//! init container, so that every container of the pod finds the agent (and its
//! `exec-session`) in a shared `emptyDir`.
//!
//! The copy is written to a temporary file beside DEST (parent directories are
//! created), made mode 0755 whatever the umask, synced, and renamed over DEST, so DEST
//! is either the old file or the whole new one, never a partial copy.

use crate::exec_session::self_exe;
use std::fs::{File, OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Copies the running binary (`/proc/self/exe`, else [`std::env::current_exe`]) to
/// `dest` as described in the module docs. The error says what failed, and where.
pub fn install_self(dest: &Path) -> Result<(), String> {
    let src_path = self_exe();
    let mut src = File::open(&src_path).map_err(|e| format!("reading this binary ({}): {e}", src_path.display()))?;
    let name = dest.file_name().ok_or_else(|| format!("{}: not a file name to install to", dest.display()))?;
    let dir = match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let copied = (|| {
        let mut out = OpenOptions::new().write(true).create(true).truncate(true).mode(0o755).open(&tmp)?;
        std::io::copy(&mut src, &mut out)?;
        out.set_permissions(Permissions::from_mode(0o755))?;
        out.sync_all()?;
        std::fs::rename(&tmp, dest)
    })();
    copied.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("installing to {}: {e}", dest.display())
    })
}
