#!/usr/bin/env bash
# The test command: gets Docker running, builds the test image (busybox) and the base
# image (some end-to-end tests run on the server's default base image), builds the
# static agent, then runs the whole workspace's tests. Extra arguments are test filters
# (passed to cargo nextest run, or after `--` to cargo test).
#
#   scripts/test.sh [FILTER...]
#
# Exports for the tests: BERTH_AGENT_BIN (absolute path of the static agent) and
# BERTH_TEST_IMAGE (berth-test/busybox:latest unless already set), BERTH_AGENT_TEMPLATES
# (none unless already set: servers build no agent template image), BERTH_TEST_PG_URL
# (unless already set: the admin URL of a PostgreSQL cluster started for this run, in a
# temporary directory, stopped and removed when the script exits, whatever the result;
# see crates/test-util/src/postgres.rs).
#   BERTH_TEST_THREADS  parallel tests (default 4)
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BERTH_ROOT"

threads="${BERTH_TEST_THREADS:-4}"

require_cargo
apt_install gcc libc6-dev pkg-config
"$BERTH_ROOT/scripts/ensure-docker.sh"
"$BERTH_ROOT/scripts/ensure-gvisor.sh"
"$BERTH_ROOT/scripts/build-images.sh"

BERTH_AGENT_BIN="$("$BERTH_ROOT/scripts/build-agent.sh")"
BERTH_TEST_IMAGE="${BERTH_TEST_IMAGE:-berth-test/busybox:latest}"
# Servers the tests start build no agent template image (minutes each) unless a test
# asks for one with --agent-templates.
BERTH_AGENT_TEMPLATES="${BERTH_AGENT_TEMPLATES:-none}"
export BERTH_AGENT_BIN BERTH_TEST_IMAGE BERTH_AGENT_TEMPLATES
log "BERTH_AGENT_BIN=$BERTH_AGENT_BIN"
log "BERTH_TEST_IMAGE=$BERTH_TEST_IMAGE"

# The end-to-end tests (crates/e2e) drive the real `berth` binary.
log "cargo build -p berth-cli"
cargo build -p berth-cli

# One PostgreSQL cluster for the whole run: every test that asks for a database gets a
# fresh one on it (berth_test_util::postgres::database_url).
if [ -z "${BERTH_TEST_PG_URL:-}" ]; then
  pg_server_installed || apt_install postgresql postgresql-client
  pg_cluster="$BERTH_ROOT/crates/test-util/src/pg_cluster.sh"
  pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/berth-test-pg.XXXXXX")"
  stop_pg() {
    local rc=$?
    bash "$pg_cluster" stop "$pg_dir" || log "WARNING: could not remove the test cluster in $pg_dir"
    exit "$rc"
  }
  trap stop_pg EXIT
  BERTH_TEST_PG_URL="$(bash "$pg_cluster" start "$pg_dir")"
  export BERTH_TEST_PG_URL
fi
log "BERTH_TEST_PG_URL=$BERTH_TEST_PG_URL"

if cargo nextest --version >/dev/null 2>&1; then
  log "cargo nextest run --workspace --no-fail-fast --test-threads $threads $*"
  cargo nextest run --workspace --no-fail-fast --test-threads "$threads" "$@"
else
  log "cargo test --workspace --no-fail-fast -- --test-threads=$threads $*"
  cargo test --workspace --no-fail-fast -- --test-threads="$threads" "$@"
fi
