//! Builds the static `berth-agent` that `berth server` injects into instances, so that a
//! plain `cargo build` gives a system whose instances run on any image (busybox, alpine:
//! no glibc, or another one). The workspace's own `berth-agent` binary is linked
//! dynamically like every host binary; static glibc linking needs `+crt-static`, which
//! cargo can only apply to a `--target` build of its own, so this script runs one: the
//! same command as `scripts/build-agent.sh`, in the same directory
//! (`<target dir>/static-agent`), so the two share their work. Its path is baked into
//! the server as `BERTH_STATIC_AGENT`.
//!
//! `BERTH_SKIP_STATIC_AGENT=1` skips it (the server then needs `--agent-bin`).

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    println!("cargo:rerun-if-env-changed=BERTH_SKIP_STATIC_AGENT");
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../..");
    for input in ["crates/agent", "crates/sse", "crates/responses", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }
    if std::env::var("BERTH_SKIP_STATIC_AGENT").is_ok_and(|v| v == "1")
        || std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("x86_64")
        || std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux")
    {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // OUT_DIR is <target dir>[/<triple>]/<profile>/build/<pkg>-<hash>/out.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| target_dir_of(&out));
    let profile = std::env::var("PROFILE").unwrap();
    let dir = target_dir.join("static-agent");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "berth-agent", "--target", TARGET, "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &dir)
        // Static, and not position-independent: see scripts/build-agent.sh.
        .env("RUSTFLAGS", "-C target-feature=+crt-static -C relocation-model=static")
        .env_remove("CARGO_BUILD_TARGET");
    // What cargo set for this script must not leak into the inner build: the outer flags
    // (they take precedence over RUSTFLAGS), clippy's wrapper, and this package's
    // variables, which dependencies' build scripts watch (ring reruns on
    // CARGO_MANIFEST_DIR), so the inner build would differ from build-agent.sh's.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_us =
            ["CARGO_PKG_", "CARGO_CFG_", "CARGO_FEATURE_", "CARGO_MANIFEST_"].iter().any(|p| name.starts_with(p))
                || [
                    "CARGO_ENCODED_RUSTFLAGS",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_CRATE_NAME",
                    "RUSTC_WORKSPACE_WRAPPER",
                    "CLIPPY_ARGS",
                    "RUSTC_LINKER",
                    "RUSTDOC",
                    "OUT_DIR",
                    "TARGET",
                    "HOST",
                    "NUM_JOBS",
                    "OPT_LEVEL",
                    "DEBUG",
                    "PROFILE",
                ]
                .contains(&name.as_ref());
        if set_for_us {
            cmd.env_remove(name.as_ref());
        }
    }
    if profile == "release" {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("running cargo for the static berth-agent");
    assert!(
        status.success(),
        "building the static berth-agent failed (it needs libc6-dev for libc.a); \
         set BERTH_SKIP_STATIC_AGENT=1 to skip it and pass --agent-bin to berth server"
    );
    let bin = dir.join(TARGET).join(&profile).join("berth-agent");
    assert!(bin.is_file(), "{} missing after its build", bin.display());
    println!("cargo:rustc-env=BERTH_STATIC_AGENT={}", bin.display());
}

fn target_dir_of(out: &Path) -> PathBuf {
    let profile_dir = out.ancestors().nth(3).expect("OUT_DIR has the usual depth");
    let parent = profile_dir.parent().expect("OUT_DIR has the usual depth");
    // A `--target` build nests the profile under the triple.
    if parent.file_name().is_some_and(|n| n == TARGET) {
        parent.parent().unwrap().to_path_buf()
    } else {
        parent.to_path_buf()
    }
}
