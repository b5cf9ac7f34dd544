//! Kernel limits a host full of instances reaches long before its memory runs out.
//!
//! The kernel's neighbour table (ARP for IPv4, NDP for IPv6) is one table for every
//! network namespace on the host. Each instance the host talks to over the bridge
//! takes an entry in the host's namespace, and one more in the instance's own (its
//! entry for the host's address, made when it answers). Linux's defaults
//! (`gc_thresh3` = 1024 entries) therefore let about 500 instances talk to the host;
//! past that the kernel logs "neighbor table overflow" and new connections wait on
//! address resolution: health probes and edge requests to a fresh instance stall for
//! seconds (measured here: creates at 600 instances took 2–18 s instead of 0.6 s).
//!
//! [`raise_neighbour_limits`] raises the thresholds to [`NEIGHBOUR_MINIMUMS`] when they
//! are lower (never lowers them); the values are those large Kubernetes nodes use.

use std::path::Path;

/// The neighbour table thresholds berth needs at least: (name, entries).
/// `gc_thresh1`: below it entries are never collected; `gc_thresh2`: above it they are
/// collected after 5 s; `gc_thresh3`: the hard limit.
pub const NEIGHBOUR_MINIMUMS: [(&str, u64); 3] = [("gc_thresh1", 4096), ("gc_thresh2", 8192), ("gc_thresh3", 16384)];

/// One threshold berth raised, or could not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuned {
    /// Its sysctl name, e.g. `net.ipv4.neigh.default.gc_thresh3`.
    pub name: String,
    /// Its value before.
    pub was: u64,
    /// The value berth wanted.
    pub wanted: u64,
    /// Why it could not be written (`None`: written).
    pub error: Option<String>,
}

/// Raises the neighbour table thresholds under `sys` (`/proc/sys` on a host) to
/// [`NEIGHBOUR_MINIMUMS`], for IPv4 and (when the kernel has it) IPv6; answers what
/// it changed or failed to. A family without the files is skipped.
pub fn raise_neighbour_limits(sys: &Path) -> Vec<Tuned> {
    let mut out = Vec::new();
    for family in ["ipv4", "ipv6"] {
        let dir = sys.join("net").join(family).join("neigh/default");
        for (knob, wanted) in NEIGHBOUR_MINIMUMS {
            let path = dir.join(knob);
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let Ok(was) = text.trim().parse::<u64>() else { continue };
            if was >= wanted {
                continue;
            }
            let error = std::fs::write(&path, format!("{wanted}\n")).err().map(|e| e.to_string());
            out.push(Tuned { name: format!("net.{family}.neigh.default.{knob}"), was, wanted, error });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(root: &Path, family: &str, values: [u64; 3]) {
        let dir = root.join("net").join(family).join("neigh/default");
        std::fs::create_dir_all(&dir).unwrap();
        for ((knob, _), v) in NEIGHBOUR_MINIMUMS.iter().zip(values) {
            std::fs::write(dir.join(knob), format!("{v}\n")).unwrap();
        }
    }

    fn read(root: &Path, family: &str, knob: &str) -> u64 {
        let p = root.join("net").join(family).join("neigh/default").join(knob);
        std::fs::read_to_string(p).unwrap().trim().parse().unwrap()
    }

    #[test]
    fn low_thresholds_are_raised_and_high_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        fake(dir.path(), "ipv4", [128, 512, 1024]);
        fake(dir.path(), "ipv6", [128, 20000, 65536]);
        let tuned = raise_neighbour_limits(dir.path());
        assert_eq!(read(dir.path(), "ipv4", "gc_thresh1"), 4096);
        assert_eq!(read(dir.path(), "ipv4", "gc_thresh2"), 8192);
        assert_eq!(read(dir.path(), "ipv4", "gc_thresh3"), 16384);
        // Never lowered.
        assert_eq!(read(dir.path(), "ipv6", "gc_thresh2"), 20000);
        assert_eq!(read(dir.path(), "ipv6", "gc_thresh3"), 65536);
        let names: Vec<&str> = tuned.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "net.ipv4.neigh.default.gc_thresh1",
                "net.ipv4.neigh.default.gc_thresh2",
                "net.ipv4.neigh.default.gc_thresh3",
                "net.ipv6.neigh.default.gc_thresh1"
            ]
        );
        assert!(tuned.iter().all(|t| t.error.is_none()));
        assert_eq!(tuned[2].was, 1024);
        // A second pass has nothing left to do.
        assert!(raise_neighbour_limits(dir.path()).is_empty());
    }

    #[test]
    fn an_unreadable_threshold_and_a_missing_family_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        fake(dir.path(), "ipv4", [128, 512, 1024]);
        let knob = dir.path().join("net/ipv4/neigh/default/gc_thresh3");
        std::fs::remove_file(&knob).unwrap();
        std::fs::create_dir(&knob).unwrap();
        let tuned = raise_neighbour_limits(dir.path());
        let names: Vec<&str> = tuned.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["net.ipv4.neigh.default.gc_thresh1", "net.ipv4.neigh.default.gc_thresh2"]);
    }
}
