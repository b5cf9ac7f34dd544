#!/usr/bin/env bash
# Builds berth-agent as a static executable (it is injected into arbitrary images, which
# may have no libc or a different one) and prints its absolute path on stdout.
#
#   scripts/build-agent.sh [--release]
#
# Only the path goes to stdout, so `AGENT="$(scripts/build-agent.sh)"` works.
# RUSTFLAGS applies to the --target build only (not to build scripts or proc-macros).
# Its artifacts live in target/static-agent/, apart from the normal host build, so the
# two never invalidate each other; `cargo build` of berth-server runs this same build
# (crates/server/build.rs) in the same directory, so whichever runs second has nothing
# left to do.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGET=x86_64-unknown-linux-gnu
profile=debug
cargo_args=()
for arg in "$@"; do
  case "$arg" in
    --release) profile=release; cargo_args+=(--release) ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown option: $arg (only --release)" ;;
  esac
done

require_cargo
# Static glibc linking needs libc.a (libc6-dev) and a C linker.
apt_install gcc libc6-dev

cd "$BERTH_ROOT"
log "cargo build -p berth-agent --target $TARGET ${cargo_args[*]} (static)"
# Static (runs in any base image) and not position-independent: a static-pie binary
# relocates itself at start and dirties ~200 KiB of data pages in every instance
# (measured RssAnon 576 -> 372 KiB). The cost is ASLR for the agent's own code, which
# guards nothing here: only the instance's owner reaches the agent (through the edge,
# with the instance's token), and they already run arbitrary code inside the instance.
# The flags are exactly those of crates/server/build.rs: the same flags, the same artifacts.
target_dir="${CARGO_TARGET_DIR:-$BERTH_ROOT/target}"
case "$target_dir" in /*) ;; *) target_dir="$BERTH_ROOT/$target_dir" ;; esac
CARGO_TARGET_DIR="$target_dir/static-agent" \
  RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
  cargo build -p berth-agent --target "$TARGET" "${cargo_args[@]}" >&2

bin="$target_dir/static-agent/$TARGET/$profile/berth-agent"
[ -x "$bin" ] || die "build finished but $bin is missing"
if command -v ldd >/dev/null 2>&1 && ldd "$bin" 2>&1 | grep -q '=>'; then
  die "$bin is dynamically linked (crt-static did not take effect)"
fi
printf '%s\n' "$bin"
