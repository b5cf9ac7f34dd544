//! The edge's access log: one line per request, written by a thread of its own.
//! The request path only formats a line and queues it; the writer wakes every
//! few milliseconds and writes what queued up in one go, so a busy edge never pays
//! a wakeup or a write per request. When the writer falls behind, lines are
//! dropped (and counted) rather than slowing requests.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Lines queued before the request path starts dropping them.
const QUEUE: usize = 65_536;
/// How often the writer drains the queue.
const PERIOD: Duration = Duration::from_millis(20);

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stderr,
    File(PathBuf),
}

impl std::str::FromStr for AccessLogTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "off" | "" => AccessLogTarget::Off,
            "-" | "stderr" => AccessLogTarget::Stderr,
            path => AccessLogTarget::File(PathBuf::from(path)),
        })
    }
}

/// The sending side of the log.
pub struct AccessLog {
    tx: Option<SyncSender<String>>,
    dropped: AtomicU64,
    closing: Arc<AtomicBool>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl AccessLog {
    /// Opens the target and starts its writer thread.
    pub fn open(target: &AccessLogTarget) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match target {
            AccessLogTarget::Off => {
                return Ok(Self {
                    tx: None,
                    dropped: AtomicU64::new(0),
                    closing: Arc::default(),
                    writer: Mutex::new(None),
                })
            }
            AccessLogTarget::Stderr => Box::new(std::io::stderr()),
            AccessLogTarget::File(p) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
        };
        let (tx, rx) = sync_channel(QUEUE);
        let closing = Arc::new(AtomicBool::new(false));
        let flag = closing.clone();
        let writer = std::thread::Builder::new().name("access-log".into()).spawn(move || write_lines(rx, out, flag))?;
        Ok(Self { tx: Some(tx), dropped: AtomicU64::new(0), closing, writer: Mutex::new(Some(writer)) })
    }

    /// Whether lines are written at all (callers skip formatting otherwise).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues a line (without its newline).
    pub fn line(&self, line: String) {
        let Some(tx) = &self.tx else { return };
        if let Err(TrySendError::Full(_)) = tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes what is queued and stops the writer (at shutdown).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        if let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = writer.join();
        }
    }
}

fn write_lines(rx: Receiver<String>, out: Box<dyn Write + Send>, closing: Arc<AtomicBool>) {
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, out);
    loop {
        let last = closing.load(Ordering::Acquire);
        let mut wrote = false;
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    let _ = writeln!(out, "{line}");
                    wrote = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        if wrote {
            let _ = out.flush();
        }
        if last {
            return;
        }
        std::thread::sleep(PERIOD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_and_close_flushes() {
        let dir = std::env::temp_dir().join(format!("berth-access-{}", std::process::id()));
        let log = AccessLog::open(&AccessLogTarget::File(dir.clone())).unwrap();
        for i in 0..1000 {
            log.line(format!("line {i}"));
        }
        log.close();
        let text = std::fs::read_to_string(&dir).unwrap();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(text.lines().count(), 1000);
        assert_eq!(text.lines().last(), Some("line 999"));
        assert_eq!(log.dropped(), 0);
    }
}
