//! Instance sizes: the operator-configurable table of vCPU, memory and disk.

use serde::{Deserialize, Serialize};

/// A size class as clients name it: 1, 2, 4 or 8.
pub type Size = u32;

/// What one size gives an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeSpec {
    /// Size class (1, 2, 4, 8).
    pub size: Size,
    /// CPU quota in whole vCPUs.
    pub vcpu: u32,
    /// Memory limit in MiB.
    pub memory_mb: u64,
    /// Disk allowance in GiB.
    pub disk_gb: u64,
    /// Maximum number of processes (pids cgroup).
    pub pids: i64,
}

/// The default size table of SPEC §3.
pub const SIZES: [SizeSpec; 4] = [
    SizeSpec { size: 1, vcpu: 1, memory_mb: 2048, disk_gb: 10, pids: 1024 },
    SizeSpec { size: 2, vcpu: 2, memory_mb: 4096, disk_gb: 20, pids: 2048 },
    SizeSpec { size: 4, vcpu: 4, memory_mb: 8192, disk_gb: 40, pids: 4096 },
    SizeSpec { size: 8, vcpu: 8, memory_mb: 16384, disk_gb: 80, pids: 8192 },
];

/// Looks a size class up in the default table.
pub fn lookup(size: Size) -> Option<SizeSpec> {
    SIZES.iter().copied().find(|s| s.size == size)
}
