//! The agent's memory beyond sessions: one notes file under the data directory
//! that the model reads and writes through the `memory_read` / `memory_write` tools.

use std::path::Path;

/// The notes never grow past this; older text must be rewritten to make room.
pub const MAX_NOTES_BYTES: usize = 64 * 1024;

/// The whole notes file, or a line saying there is none yet.
pub async fn read(path: &Path) -> String {
    match tokio::fs::read_to_string(path).await {
        Ok(s) if !s.trim().is_empty() => s,
        Ok(_) => "(no notes yet)".into(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "(no notes yet)".into(),
        Err(e) => format!("error: cannot read memory: {e}"),
    }
}

/// Appends a note (one paragraph) or replaces all notes.
pub async fn write(path: &Path, content: &str, replace: bool) -> String {
    let mut notes = if replace { String::new() } else { tokio::fs::read_to_string(path).await.unwrap_or_default() };
    if !notes.is_empty() && !notes.ends_with('\n') {
        notes.push('\n');
    }
    notes.push_str(content.trim_end());
    notes.push('\n');
    if notes.len() > MAX_NOTES_BYTES {
        return format!(
            "error: memory would grow to {} bytes (limit {MAX_NOTES_BYTES}); rewrite it shorter with mode=replace",
            notes.len()
        );
    }
    if let Some(dir) = path.parent() {
        if let Err(e) = tokio::fs::create_dir_all(dir).await {
            return format!("error: cannot create {}: {e}", dir.display());
        }
    }
    // Write then rename, so a crash never leaves half a notes file.
    let tmp = path.with_extension("tmp");
    let written = async {
        tokio::fs::write(&tmp, &notes).await?;
        tokio::fs::rename(&tmp, path).await
    };
    match written.await {
        Ok(()) => format!("memory saved ({} bytes)", notes.len()),
        Err(e) => format!("error: cannot save memory: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn append_then_replace() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("memory/notes.md");
        assert_eq!(super::read(&p).await, "(no notes yet)");
        super::write(&p, "likes tea", false).await;
        super::write(&p, "lives in Oslo", false).await;
        assert_eq!(super::read(&p).await, "likes tea\nlives in Oslo\n");
        super::write(&p, "only this", true).await;
        assert_eq!(super::read(&p).await, "only this\n");
    }
}
