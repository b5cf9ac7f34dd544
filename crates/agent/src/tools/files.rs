//! The file tools: `read_file`, `write_file`, `list_dir`. Relative paths
//! resolve against the agent's working directory.

use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;

/// Most directory entries listed at once.
const MAX_ENTRIES: usize = 1000;

/// One file tool call, as handed to the `file-tool` child that runs it as the tool user.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FileOp {
    Read { path: PathBuf, offset: u64, cap: usize },
    Write { path: PathBuf, content: String, append: bool },
    List { path: PathBuf },
}

impl FileOp {
    /// Runs it here, with this process's rights; answers the text for the model.
    pub async fn perform(&self) -> String {
        match self {
            FileOp::Read { path, offset, cap } => read_file(path, *offset, *cap).await,
            FileOp::Write { path, content, append } => write_file(path, content, *append).await,
            FileOp::List { path } => list_dir(path).await,
        }
    }
}

/// `path` made absolute against `workdir`.
pub fn resolve(workdir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        workdir.join(p)
    }
}

/// Reads up to `cap` bytes of a file, from byte `offset`.
pub async fn read_file(path: &Path, offset: u64, cap: usize) -> String {
    let mut f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => return format!("error: cannot open {}: {e}", path.display()),
    };
    let size = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    if offset > 0 {
        use tokio::io::AsyncSeekExt;
        if let Err(e) = f.seek(std::io::SeekFrom::Start(offset)).await {
            return format!("error: cannot seek in {}: {e}", path.display());
        }
    }
    let mut buf = Vec::new();
    if let Err(e) = f.take(cap as u64).read_to_end(&mut buf).await {
        return format!("error: cannot read {}: {e}", path.display());
    }
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    let end = offset + buf.len() as u64;
    if end < size {
        text.push_str(&format!("\n[truncated: showed bytes {offset}..{end} of {size}; read again with offset={end}]"));
    }
    text
}

/// Writes (or appends) `content`, creating parent directories.
pub async fn write_file(path: &Path, content: &str, append: bool) -> String {
    if let Some(parent) = path.parent() {
        if let Err(e) = tokio::fs::create_dir_all(parent).await {
            return format!("error: cannot create {}: {e}", parent.display());
        }
    }
    let result = if append {
        use tokio::io::AsyncWriteExt;
        let f = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await;
        match f {
            // tokio's File writes in the background: flush, so the write is done (and
            // its error seen) before the tool answers.
            Ok(mut f) => {
                async {
                    f.write_all(content.as_bytes()).await?;
                    f.flush().await
                }
                .await
            }
            Err(e) => Err(e),
        }
    } else {
        tokio::fs::write(path, content).await
    };
    match result {
        Ok(()) => {
            format!("{} {} bytes to {}", if append { "appended" } else { "wrote" }, content.len(), path.display())
        }
        Err(e) => format!("error: cannot write {}: {e}", path.display()),
    }
}

/// Lists a directory: one entry per line, directories with a trailing `/`.
pub async fn list_dir(path: &Path) -> String {
    let mut rd = match tokio::fs::read_dir(path).await {
        Ok(rd) => rd,
        Err(e) => return format!("error: cannot list {}: {e}", path.display()),
    };
    let mut entries = Vec::new();
    let mut more = false;
    while let Ok(Some(e)) = rd.next_entry().await {
        if entries.len() == MAX_ENTRIES {
            more = true;
            break;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let line = match e.metadata().await {
            Ok(m) if m.is_dir() => format!("{name}/"),
            Ok(m) if m.is_symlink() => format!("{name}@"),
            Ok(m) => format!("{name}\t{} bytes", m.len()),
            Err(_) => name,
        };
        entries.push(line);
    }
    entries.sort();
    if entries.is_empty() {
        return format!("{} is empty", path.display());
    }
    let mut text = entries.join("\n");
    if more {
        text.push_str(&format!("\n[only the first {MAX_ENTRIES} entries]"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn write_append_read_list() {
        let dir = tempfile::tempdir().unwrap();
        let f = resolve(dir.path(), "sub/a.txt");
        assert!(write_file(&f, "hello ", false).await.starts_with("wrote 6 bytes"));
        write_file(&f, "world", true).await;
        assert_eq!(read_file(&f, 0, 100).await, "hello world");
        assert!(read_file(&f, 0, 5).await.starts_with("hello\n[truncated: showed bytes 0..5 of 11"));
        assert_eq!(read_file(&f, 6, 100).await, "world");
        assert_eq!(list_dir(dir.path()).await, "sub/");
        assert_eq!(list_dir(&dir.path().join("sub")).await, "a.txt\t11 bytes");
        assert!(read_file(&dir.path().join("nope"), 0, 10).await.starts_with("error: cannot open"));
    }
}
