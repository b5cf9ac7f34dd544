#!/usr/bin/env bash
# First command on a fresh Debian 12 machine: gets Docker running, provides the base
# image (pulled, or built locally from the host's apt mirror), builds berth and the
# static berth-agent, then runs `berth server`. Extra arguments go to `berth server`:
#
#   scripts/setup.sh [berth server flags...]     e.g. scripts/setup.sh --listen 0.0.0.0:7070
#
# Re-running it is cheap: existing images are kept and cargo builds incrementally.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BERTH_ROOT"

require_cargo
apt_install gcc libc6-dev pkg-config ca-certificates
"$BERTH_ROOT/scripts/ensure-docker.sh"
"$BERTH_ROOT/scripts/build-images.sh" --base-only

log "cargo build --release -p berth-cli"
cargo build --release -p berth-cli
agent="$("$BERTH_ROOT/scripts/build-agent.sh" --release)"

target_dir="${CARGO_TARGET_DIR:-$BERTH_ROOT/target}"
case "$target_dir" in /*) ;; *) target_dir="$BERTH_ROOT/$target_dir" ;; esac
berth="$target_dir/release/berth"
[ -x "$berth" ] || die "$berth was not built"

log "starting: $berth server --agent-bin $agent $*"
exec "$berth" server --agent-bin "$agent" "$@"
