#!/usr/bin/env bash
# Makes sure a Docker daemon answers: installs docker.io when dockerd is missing,
# starts dockerd in the background when no daemon answers, then waits for it.
# Idempotent: does nothing when `docker info` already works.
#   BERTH_DOCKER_WAIT  seconds to wait for the daemon (default 60)
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

wait_s="${BERTH_DOCKER_WAIT:-60}"

docker_ok() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && docker_ok; then
  log "docker daemon is up ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
  exit 0
fi

# A remote DOCKER_HOST is not ours to start.
case "${DOCKER_HOST:-unix://}" in
  unix://*) ;;
  *) die "DOCKER_HOST=$DOCKER_HOST does not answer (docker info failed); not starting a local daemon" ;;
esac

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  log "dockerd or docker missing: installing docker.io"
  apt_install docker.io
  command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd not on PATH"
fi

if docker_ok; then
  exit 0
fi

# Permission problems are not solved by starting another daemon.
out="$(docker info 2>&1 || true)"
if printf '%s' "$out" | grep -qi 'permission denied'; then
  die "docker socket exists but access is denied (run as root or join the docker group): $out"
fi

if command -v pgrep >/dev/null 2>&1 && pgrep -x dockerd >/dev/null 2>&1; then
  log "dockerd is running but not answering yet; waiting"
elif [ "$(ps -o comm= -p 1 2>/dev/null || true)" = systemd ] && command -v systemctl >/dev/null 2>&1 &&
  as_root systemctl start docker 2>/dev/null; then
  log "started docker.service with systemctl"
else
  log "starting dockerd in the background (log: /var/log/dockerd.log)"
  # A pid file left by a daemon that is gone would stop dockerd from starting.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid 2>/dev/null)" 2>/dev/null; then
    as_root rm -f /var/run/docker.pid
  fi
  as_root sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 </dev/null &'
fi

for _ in $(seq "$wait_s"); do
  if docker_ok; then
    log "docker daemon is up ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
    exit 0
  fi
  sleep 1
done

log "last lines of /var/log/dockerd.log:"
tail -n 30 /var/log/dockerd.log >&2 2>/dev/null || true
die "docker daemon did not answer within ${wait_s}s"
