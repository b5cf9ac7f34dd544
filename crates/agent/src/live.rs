//! Turns in flight and the events they emitted, so that a client can let a turn run
//! without it (`background: true`), follow it from any point
//! (`GET /v1/responses/{id}?stream=true&starting_after=N`) after losing its
//! connection, and cancel it (`POST /v1/responses/{id}/cancel`).
//!
//! Every streamed or background turn records each event, numbered, in its
//! [`LiveTurn`]; the SSE answers are followers of that log. A finished turn's log is
//! kept for [`KEEP_FINISHED`] (and at most [`MAX_FINISHED`] of them), then only the
//! stored response remains.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// How long a finished turn's events stay replayable.
pub const KEEP_FINISHED: Duration = Duration::from_secs(600);
/// Most finished turns whose events are kept.
pub const MAX_FINISHED: usize = 64;

/// One numbered event of a turn.
#[derive(Debug)]
pub struct Frame {
    pub seq: u64,
    pub event: &'static str,
    pub data: String,
}

#[derive(Default)]
struct Log {
    frames: Vec<Arc<Frame>>,
    finished: Option<Instant>,
}

/// One turn's event log, and the handle that stops it.
pub struct LiveTurn {
    log: Mutex<Log>,
    /// Bumped on every change (a frame, the end): followers wait on it.
    changed: watch::Sender<u64>,
    task: Mutex<Option<AbortHandle>>,
}

impl LiveTurn {
    fn new() -> Self {
        LiveTurn { log: Mutex::default(), changed: watch::Sender::new(0), task: Mutex::default() }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an event (numbered by the caller, in order).
    pub fn push(&self, frame: Frame) {
        self.log().frames.push(Arc::new(frame));
        self.changed.send_modify(|n| *n += 1);
    }

    /// Marks the turn over: followers end once they have read everything.
    pub fn finish(&self) {
        let mut log = self.log();
        if log.finished.is_none() {
            log.finished = Some(Instant::now());
        }
        drop(log);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Whether the turn is over.
    pub fn finished(&self) -> bool {
        self.log().finished.is_some()
    }

    /// The task running the turn, for [`LiveTurn::cancel`].
    pub fn set_task(&self, task: AbortHandle) {
        *self.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Stops the turn's task (its tools with it); answers whether it was still running.
    pub fn cancel(&self) -> bool {
        if self.finished() {
            return false;
        }
        match self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }

    /// Waits until the turn is over.
    pub async fn wait_finished(&self) {
        let mut rx = self.changed.subscribe();
        while !self.finished() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The events after sequence number `after` (all when `None`), then those to come,
    /// until the turn is over.
    pub fn follow(self: &Arc<Self>, after: Option<u64>) -> Follower {
        let next = after.map_or(0, |n| n.saturating_add(1));
        Follower { turn: self.clone(), next: next as usize, rx: self.changed.subscribe() }
    }
}

/// A reader of one turn's log from some point on.
pub struct Follower {
    turn: Arc<LiveTurn>,
    next: usize,
    rx: watch::Receiver<u64>,
}

impl Follower {
    /// The next event; `None` once the turn is over and everything was read.
    pub async fn next(&mut self) -> Option<Arc<Frame>> {
        loop {
            {
                let log = self.turn.log();
                if let Some(f) = log.frames.get(self.next) {
                    self.next += 1;
                    return Some(f.clone());
                }
                if log.finished.is_some() {
                    return None;
                }
                self.rx.borrow_and_update();
            }
            self.rx.changed().await.ok()?;
        }
    }
}

/// The live turns of the agent, by response id.
#[derive(Default)]
pub struct LiveTurns {
    turns: Mutex<HashMap<String, Arc<LiveTurn>>>,
}

impl LiveTurns {
    /// Registers a new turn's log (and forgets finished ones past their time).
    pub fn start(&self, id: &str) -> Arc<LiveTurn> {
        let turn = Arc::new(LiveTurn::new());
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        prune(&mut turns, Instant::now());
        turns.insert(id.to_string(), turn.clone());
        turn
    }

    /// A turn's log, while it is kept.
    pub fn get(&self, id: &str) -> Option<Arc<LiveTurn>> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// Whether any turn is running now.
    pub fn any_running(&self) -> bool {
        self.turns.lock().unwrap_or_else(|e| e.into_inner()).values().any(|t| !t.finished())
    }
}

/// Drops finished logs older than [`KEEP_FINISHED`], and the oldest beyond [`MAX_FINISHED`].
fn prune(turns: &mut HashMap<String, Arc<LiveTurn>>, now: Instant) {
    turns.retain(|_, t| t.log().finished.is_none_or(|at| now.duration_since(at) < KEEP_FINISHED));
    let mut finished: Vec<(Instant, String)> =
        turns.iter().filter_map(|(id, t)| t.log().finished.map(|at| (at, id.clone()))).collect();
    if finished.len() > MAX_FINISHED {
        finished.sort();
        for (_, id) in &finished[..finished.len() - MAX_FINISHED] {
            turns.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> Frame {
        Frame { seq, event: "e", data: seq.to_string() }
    }

    #[tokio::test]
    async fn a_follower_reads_what_came_after_its_point_then_what_comes_until_the_end() {
        let turns = LiveTurns::default();
        let t = turns.start("resp_1");
        for i in 0..3 {
            t.push(frame(i));
        }
        let mut from_start = t.follow(None);
        let mut after_1 = t.follow(Some(1));
        assert_eq!(after_1.next().await.unwrap().seq, 2);
        let writer = {
            let t = t.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                t.push(frame(3));
                t.finish();
            })
        };
        assert_eq!(after_1.next().await.unwrap().seq, 3, "a live event reaches a waiting follower");
        assert!(after_1.next().await.is_none(), "the end ends the follower");
        let all: Vec<u64> = {
            let mut v = Vec::new();
            while let Some(f) = from_start.next().await {
                v.push(f.seq);
            }
            v
        };
        assert_eq!(all, [0, 1, 2, 3], "nothing lost, nothing doubled");
        writer.await.unwrap();
        assert!(t.follow(Some(99)).next().await.is_none(), "past the end of a finished turn: nothing");
    }

    #[tokio::test]
    async fn cancel_stops_a_running_task_once() {
        let turns = LiveTurns::default();
        let t = turns.start("resp_1");
        let task = tokio::spawn(std::future::pending::<()>());
        t.set_task(task.abort_handle());
        assert!(turns.any_running());
        assert!(t.cancel());
        assert!(task.await.unwrap_err().is_cancelled());
        t.finish();
        assert!(!t.cancel(), "a finished turn is not cancelled again");
        assert!(!turns.any_running());
    }

    #[test]
    fn finished_logs_are_forgotten_after_their_time_and_beyond_the_most_kept() {
        let mut map: HashMap<String, Arc<LiveTurn>> = HashMap::new();
        let now = Instant::now();
        let running = Arc::new(LiveTurn::new());
        map.insert("running".into(), running);
        for i in 0..(MAX_FINISHED + 3) {
            let t = Arc::new(LiveTurn::new());
            t.log().finished = Some(now - Duration::from_secs((MAX_FINISHED + 3 - i) as u64));
            map.insert(format!("f{i}"), t);
        }
        prune(&mut map, now);
        assert!(map.contains_key("running"));
        assert_eq!(map.len(), MAX_FINISHED + 1);
        assert!(!map.contains_key("f0") && !map.contains_key("f2") && map.contains_key("f3"), "the oldest go");
        prune(&mut map, now + KEEP_FINISHED + Duration::from_secs(1));
        assert_eq!(map.keys().collect::<Vec<_>>(), ["running"]);
    }
}
