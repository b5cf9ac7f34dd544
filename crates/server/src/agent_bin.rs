//! Which `berth-agent` binary the server injects into instances.
//!
//! The agent is bind-mounted into images berth knows nothing about (busybox, alpine,
//! another glibc), so it must be a static executable: one that names a program
//! interpreter (`ld-linux…`) fails in an image without it, with exit code 127 before the
//! agent says a word. The server therefore refuses at start a binary that needs one.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// Path of the static agent the build script made (`crates/server/build.rs`), if it ran.
const BUILT: Option<&str> = option_env!("BERTH_STATIC_AGENT");

/// How to get a static agent, for the refusals.
const FIX: &str = "build it with `cargo build` (which also builds the static agent) or \
    `scripts/build-agent.sh [--release]`, and pass its path with --agent-bin";

/// The agent to inject: `--agent-bin` when given, else `berth-agent` beside this
/// executable when it is static, else the static agent built with this server.
/// Refuses a binary that is missing, not an ELF executable, or dynamically linked.
pub fn choose(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = flag {
        let path = std::fs::canonicalize(path).with_context(|| format!("--agent-bin {}: not found", path.display()))?;
        check(&path).with_context(|| format!("--agent-bin {}", path.display()))?;
        return Ok(path);
    }
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join("berth-agent")));
    let mut refused = None;
    if let Some(path) = beside.filter(|p| p.is_file()) {
        match check(&path) {
            Ok(()) => return Ok(path),
            Err(e) => refused = Some(format!("{}: {e:#}", path.display())),
        }
    }
    if let Some(path) = BUILT.map(PathBuf::from).filter(|p| p.is_file()) {
        check(&path).with_context(|| format!("the static agent built with this server, {}", path.display()))?;
        return Ok(path);
    }
    match refused {
        Some(why) => bail!("no usable berth-agent: {why}"),
        None => bail!("no berth-agent beside this executable: {FIX}"),
    }
}

/// Ok when `path` is a static executable.
pub fn check(path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    match interpreter(&bytes) {
        Err(why) => bail!("not a usable agent binary ({why})"),
        Ok(Some(loader)) => bail!(
            "berth-agent is dynamically linked (it needs {loader}), so it cannot start in images \
             without that loader and its libc (busybox, alpine); {FIX}"
        ),
        Ok(None) => Ok(()),
    }
}

/// The program interpreter an x86-64 ELF executable names (`PT_INTERP`), if any.
fn interpreter(elf: &[u8]) -> Result<Option<String>, &'static str> {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| elf.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| elf.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let u64_at = |at: usize| elf.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    if elf.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF file");
    }
    // 64-bit, little-endian, x86-64.
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) || u16_at(18) != Some(62) {
        return Err("not an x86-64 ELF executable");
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return Err("truncated ELF header");
    };
    for i in 0..usize::from(phnum) {
        let at = usize::try_from(phoff).map_err(|_| "bad program header offset")? + i * usize::from(phentsize);
        let kind = u32_at(at).ok_or("truncated program headers")?;
        if kind == PT_INTERP {
            let (Some(off), Some(size)) = (u64_at(at + 8), u64_at(at + 32)) else {
                return Err("truncated program headers");
            };
            let (off, size) = (off as usize, size as usize);
            let name = elf.get(off..off.saturating_add(size)).ok_or("truncated interpreter name")?;
            return Ok(Some(String::from_utf8_lossy(name).trim_end_matches('\0').to_string()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_names_its_loader() {
        // This test binary is linked like every host binary: dynamically.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let loader = interpreter(&me).unwrap().expect("a dynamic test binary");
        assert!(loader.contains("ld-linux"), "{loader}");
        let err = check(&std::env::current_exe().unwrap()).unwrap_err().to_string();
        assert!(err.contains("dynamically linked") && err.contains("--agent-bin"), "{err}");
    }

    #[test]
    fn a_static_executable_has_none() {
        // A minimal ELF64 header with one PT_LOAD program header and no PT_INTERP.
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18..20].copy_from_slice(&62u16.to_le_bytes());
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(interpreter(&elf), Ok(None));
        // Naming a program header past the end is an error, not a panic.
        elf[0x38..0x3a].copy_from_slice(&9u16.to_le_bytes());
        assert!(interpreter(&elf).is_err());
        assert_eq!(interpreter(b"#!/bin/sh\n"), Err("not an ELF file"));
    }

    #[test]
    fn the_built_agent_is_static() {
        if let Some(path) = BUILT {
            check(Path::new(path)).unwrap();
        }
    }
}
