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

/// CPU and memory an instance gets in place of its size's (`resources` on create and
/// PATCH). Disk and processes stay the size's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// CPU it is guaranteed, in thousandths of a vCPU (its weight when CPUs are contended).
    pub cpu_millis: u32,
    /// Memory it is guaranteed (the kernel reclaims above it first), MiB.
    pub memory_mb: u64,
    /// Most CPU it may use (its quota), thousandths of a vCPU.
    pub cpu_limit_millis: u32,
    /// Most memory it may use (the OOM limit), MiB.
    pub memory_limit_mb: u64,
}

impl Resources {
    /// What a size gives: its vCPUs and memory, guaranteed and limit alike.
    pub fn of_size(size: &SizeSpec) -> Self {
        Resources {
            cpu_millis: size.vcpu * 1000,
            memory_mb: size.memory_mb,
            cpu_limit_millis: size.vcpu * 1000,
            memory_limit_mb: size.memory_mb,
        }
    }

    /// What an instance of `size` gets: `custom` when it has its own, else the size's.
    pub fn effective(size: &SizeSpec, custom: Option<&Resources>) -> Self {
        custom.copied().unwrap_or_else(|| Self::of_size(size))
    }
}

/// Thousandths of a vCPU as the API writes them (`"0.5"`, `"2"`).
pub fn cpu_text(millis: u32) -> String {
    let (whole, frac) = (millis / 1000, millis % 1000);
    if frac == 0 {
        return whole.to_string();
    }
    format!("{whole}.{frac:03}").trim_end_matches('0').to_string()
}

#[cfg(test)]
mod resources_tests {
    use super::*;

    #[test]
    fn cpu_amounts_print_as_decimals() {
        assert_eq!(
            (cpu_text(500), cpu_text(2000), cpu_text(1250), cpu_text(50)),
            ("0.5".into(), "2".into(), "1.25".into(), "0.05".into())
        );
        let s = lookup(2).unwrap();
        assert_eq!(Resources::effective(&s, None).cpu_limit_millis, 2000);
    }
}
