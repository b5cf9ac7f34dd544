#!/usr/bin/env bash
# Builds the image `berth server` runs from on Kubernetes (deploy/kubernetes/): berth
# and the static berth-agent in /usr/local/bin, on Debian, as an unprivileged user.
# Tagged `berth/server:<sha256 of both binaries, 12>`; prints the tag on stdout.
#
#   scripts/build-server-image.sh [--release] [--berth PATH --agent PATH] [--base IMAGE]
#
# The base defaults to debian:bookworm-slim, or berth/base:bookworm (scripts/build-images.sh)
# where only that one is present. Push the image where your nodes pull from.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

berth="" agent="" base="" release=()
while [ $# -gt 0 ]; do
  case "$1" in
    --release) release=(--release) ;;
    --berth) berth="${2:?--berth needs a path}"; shift ;;
    --agent) agent="${2:?--agent needs a path}"; shift ;;
    --base) base="${2:?--base needs an image}"; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown option: $1 (--release, --berth PATH, --agent PATH, --base IMAGE)" ;;
  esac
  shift
done
cd "$BERTH_ROOT"
if [ -z "$berth" ]; then
  cargo build "${release[@]}" -p berth-cli >&2
  profile=debug
  [ "${#release[@]}" -gt 0 ] && profile=release
  berth="${CARGO_TARGET_DIR:-target}/$profile/berth"
fi
[ -n "$agent" ] || agent="$("$BERTH_ROOT/scripts/build-agent.sh" "${release[@]}")"
[ -x "$berth" ] || die "no executable berth at $berth"
[ -x "$agent" ] || die "no executable agent at $agent"
if [ -z "$base" ]; then
  base=debian:bookworm-slim
  docker image inspect "$base" >/dev/null 2>&1 || ! docker image inspect berth/base:bookworm >/dev/null 2>&1 ||
    base=berth/base:bookworm
fi

tag="berth/server:$(cat "$berth" "$agent" | sha256sum | cut -c1-12)"
if docker image inspect "$tag" >/dev/null 2>&1; then
  log "$tag is there already"
else
  dir="$(mktemp -d)"
  trap 'rm -rf "$dir"' EXIT
  install -m 0755 "$berth" "$dir/berth"
  install -m 0755 "$agent" "$dir/berth-agent"
  cat >"$dir/Dockerfile" <<DOCKERFILE
FROM $base
COPY berth berth-agent /usr/local/bin/
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/berth"]
CMD ["server"]
DOCKERFILE
  DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$dir" >/dev/null
  log "built $tag from $berth and $agent on $base"
fi
echo "$tag"
