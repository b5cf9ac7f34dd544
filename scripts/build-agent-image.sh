#!/usr/bin/env bash
# Builds the image the Kubernetes runtime copies the agent from: one file,
# /berth-agent (the static agent), nothing else. Tagged by the binary's content hash,
# `berth/agent-bin:<sha256[:12]>`, because nodes never pull again a tag they already
# have (`imagePullPolicy: IfNotPresent`). Prints the tag on stdout:
#
#   scripts/build-agent-image.sh [--release] [--agent PATH]
#   berth server --runtime kubernetes --k8s-agent-image "$(scripts/build-agent-image.sh --release)"
#
# The image lands in the local Docker; push it where the cluster's nodes pull from
# (`docker tag` + `docker push`), or load it into each node's runtime.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

agent=""
build_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --release) build_args+=(--release) ;;
    --agent) agent="${2:?--agent needs a path}"; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown option: $1 (--release, --agent PATH)" ;;
  esac
  shift
done
[ -n "$agent" ] || agent="$("$BERTH_ROOT/scripts/build-agent.sh" "${build_args[@]}")"
[ -x "$agent" ] || die "no executable agent at $agent"

tag="berth/agent-bin:$(sha256sum "$agent" | cut -c1-12)"
if docker image inspect "$tag" >/dev/null 2>&1; then
  log "$tag is there already"
else
  dir="$(mktemp -d)"
  trap 'rm -rf "$dir"' EXIT
  install -m 0755 "$agent" "$dir/berth-agent"
  tar -C "$dir" -c berth-agent | docker import --change 'ENTRYPOINT ["/berth-agent"]' - "$tag" >/dev/null
  log "built $tag from $agent"
fi
echo "$tag"
