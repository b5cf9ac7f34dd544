//! Which sessions are answering a message right now. A second message to a
//! busy session is refused (409) rather than interleaved into its history.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The set of busy sessions; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct BusySessions(Arc<Mutex<HashSet<String>>>);

/// Holds a session busy until dropped (the turn ended, failed or was cancelled).
#[derive(Debug)]
pub struct SessionGuard {
    set: BusySessions,
    id: String,
}

impl BusySessions {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many turns are running now.
    pub fn running(&self) -> usize {
        self.set().len()
    }

    /// Marks the session busy, or `None` if it already is.
    pub fn try_claim(&self, id: &str) -> Option<SessionGuard> {
        self.set().insert(id.to_string()).then(|| SessionGuard { set: self.clone(), id: id.to_string() })
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.set.set().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn second_claim_fails_until_release() {
        let busy = super::BusySessions::default();
        let g = busy.try_claim("s").unwrap();
        assert!(busy.try_claim("s").is_none());
        assert!(busy.try_claim("t").is_some());
        drop(g);
        assert!(busy.try_claim("s").is_some());
    }
}
