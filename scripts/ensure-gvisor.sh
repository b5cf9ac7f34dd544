#!/usr/bin/env bash
# Registers Debian's gVisor (`runsc`) as a dockerd runtime named `runsc`, for
# `berth server --isolation gvisor`: merges it into /etc/docker/daemon.json and has
# dockerd reload its configuration (SIGHUP; running containers are not touched).
# Does nothing when dockerd already knows `runsc` or when runsc is not installed.
#
# `--network=host` is needed with Docker 20.10: dockerd gives the runtime a network
# namespace that its libnetwork hook configures after the sandbox starts, and runsc's
# own network stack refuses to start there ("cannot run with network enabled in root
# network namespace"). With it, gVisor uses the namespace Docker made for the container
# (not the host's): network system calls go to the host kernel inside that namespace.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runsc_bin="$(command -v runsc || true)"
[ -n "$runsc_bin" ] || { log "runsc not installed; gVisor is not available"; exit 0; }
if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; then
  log "dockerd already has the runsc runtime"
  exit 0
fi
conf=/etc/docker/daemon.json
as_root mkdir -p /etc/docker
as_root python3 - "$conf" "$runsc_bin" <<'PY'
import json, os, sys
path, runsc = sys.argv[1], sys.argv[2]
conf = json.load(open(path)) if os.path.exists(path) and open(path).read().strip() else {}
conf.setdefault("runtimes", {})["runsc"] = {"path": runsc, "runtimeArgs": ["--network=host"]}
json.dump(conf, open(path, "w"), indent=2)
PY
log "registered runsc in $conf; reloading dockerd"
pid="$(pidof dockerd || true)"
[ -n "$pid" ] || die "dockerd is not running"
as_root kill -HUP "$pid"
for _ in $(seq 50); do
  if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; then
    log "dockerd has the runsc runtime"
    exit 0
  fi
  sleep 0.2
done
die "dockerd did not pick up the runsc runtime from $conf"
