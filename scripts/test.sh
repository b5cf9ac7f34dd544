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
#   BERTH_TEST_KUBERNETES=1  afterwards, run the suites that drive the runtime again
#       with instances on Kubernetes: builds the testbed once (scripts/k8s-testbed.sh,
#       4-6 minutes), starts a single-node cluster, runs the Kubernetes runtime's own
#       tests and the runtime-neutral suites (lifecycle, operate, edge_protocols) with
#       BERTH_TEST_RUNTIME=kubernetes, and tears the cluster down.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BERTH_ROOT"

threads="${BERTH_TEST_THREADS:-4}"

# What this run starts is removed when it ends, whatever the result.
pg_cluster="$BERTH_ROOT/crates/test-util/src/pg_cluster.sh"
pg_dir=""
k8s_dir=""
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local rc=$?
  if [ -n "$k8s_dir" ]; then
    "$BERTH_ROOT/scripts/k8s-testbed.sh" down "$k8s_dir" || log "WARNING: could not tear down the cluster in $k8s_dir"
  fi
  if [ -n "$pg_dir" ]; then
    bash "$pg_cluster" stop "$pg_dir" || log "WARNING: could not remove the test cluster in $pg_dir"
  fi
  exit "$rc"
}
trap cleanup EXIT

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
  pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/berth-test-pg.XXXXXX")"
  BERTH_TEST_PG_URL="$(bash "$pg_cluster" start "$pg_dir")"
  export BERTH_TEST_PG_URL
fi
log "BERTH_TEST_PG_URL=$BERTH_TEST_PG_URL"

status=0
if cargo nextest --version >/dev/null 2>&1; then
  log "cargo nextest run --workspace --no-fail-fast --test-threads $threads $*"
  cargo nextest run --workspace --no-fail-fast --test-threads "$threads" "$@" || status=$?
else
  log "cargo test --workspace --no-fail-fast -- --test-threads=$threads $*"
  cargo test --workspace --no-fail-fast -- --test-threads="$threads" "$@" || status=$?
fi

if [ "${BERTH_TEST_KUBERNETES:-0}" != "0" ]; then
  k8s_dir="$(mktemp -d "${TMPDIR:-/tmp}/berth-test-k8s.XXXXXX")"
  BERTH_TEST_KUBECONFIG="$("$BERTH_ROOT/scripts/k8s-testbed.sh" up "$k8s_dir")"
  BERTH_TEST_KUBECTL="$k8s_dir/kubectl"
  BERTH_TEST_K8S_AGENT_IMAGE="$("$BERTH_ROOT/scripts/build-agent-image.sh" --agent "$BERTH_AGENT_BIN")"
  export BERTH_TEST_KUBECONFIG BERTH_TEST_KUBECTL BERTH_TEST_K8S_AGENT_IMAGE
  export BERTH_TEST_RUNTIME=kubernetes BERTH_REQUIRE_K8S=1
  suites=(kubernetes lifecycle operate edge_protocols)
  log "on Kubernetes: ${suites[*]}"
  if cargo nextest --version >/dev/null 2>&1; then
    filter="$(printf 'binary(%s) | ' "${suites[@]}")"
    cargo nextest run -p berth-e2e --no-fail-fast --test-threads "$threads" -E "${filter% | }" || status=$?
  else
    cargo test -p berth-e2e --no-fail-fast "${suites[@]/#/--test=}" -- --test-threads="$threads" || status=$?
  fi
fi
exit "$status"
