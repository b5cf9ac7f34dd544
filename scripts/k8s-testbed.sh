#!/usr/bin/env bash
# The tests' Kubernetes (scripts/k8s-testbed/: a single-node 1.20 on the local Docker).
#
#   scripts/k8s-testbed.sh bin        builds it when not built yet; prints the bin dir
#   scripts/k8s-testbed.sh up DIR     starts a cluster with its state in DIR; prints
#                                     the kubeconfig path (kubectl: DIR/kubectl)
#   scripts/k8s-testbed.sh down DIR   stops it and removes DIR
#
# The build (4-6 minutes on 2 cores) keeps only the binaries, in
# $BERTH_K8S_BIN_CACHE (default: <target dir>/k8s-testbed/bin); the sources and Go's
# cache (about 3 GB) are removed afterwards.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

testbed="$BERTH_ROOT/scripts/k8s-testbed"
cache="${BERTH_K8S_BIN_CACHE:-${CARGO_TARGET_DIR:-$BERTH_ROOT/target}/k8s-testbed/bin}"
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

built() {
  local b
  for b in "${binaries[@]}"; do [ -x "$cache/$b" ] || return 1; done
}

ensure_bin() {
  if built; then
    echo "$cache"
    return
  fi
  local work out b
  work="$(mktemp -d "${TMPDIR:-/tmp}/berth-k8s-build.XXXXXX")"
  log "building Kubernetes 1.20 from Debian's source package in $work (4-6 minutes)"
  out="$(W="$work" bash "$testbed/build.sh")" || { rm -rf "$work"; die "the Kubernetes build failed (log: $work/make.log)"; }
  mkdir -p "$cache"
  for b in "${binaries[@]}"; do cp -L "$out/$b" "$cache/$b"; done
  rm -rf "$work"
  echo "$cache"
}

case "${1:-}" in
  bin) ensure_bin ;;
  up)
    dir="${2:?up needs a state directory}"
    bin="$(ensure_bin)"
    # up.sh needs etcd (build.sh installs it); a cached build may predate this machine.
    command -v etcd >/dev/null 2>&1 || apt_install etcd-server
    mkdir -p "$dir"
    K8S_BIN="$bin" BASE="$dir" bash "$testbed/up.sh" >&2
    echo "$dir/admin.kubeconfig"
    ;;
  down)
    dir="${2:?down needs the state directory}"
    BASE="$dir" bash "$testbed/down.sh" >&2 || log "WARNING: down.sh reported errors"
    rm -rf "$dir"
    ;;
  *) die "usage: scripts/k8s-testbed.sh bin | up DIR | down DIR" ;;
esac
