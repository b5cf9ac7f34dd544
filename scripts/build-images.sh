#!/usr/bin/env bash
# Builds the images berth's tests and default template need, without a registry.
#
#   scripts/build-images.sh [--test-only | --base-only] [--force]
#
#   berth-test/busybox:latest  tiny rootfs from Debian's busybox-static (docker import)
#   debian:bookworm-slim       `docker pull` when a registry answers, else
#   berth/base:bookworm        an equivalent built with mmdebstrap from the host's own apt
#                              mirror (ca-certificates, curl, git, python3, procps), under
#                              berth's own name; `berth server` uses whichever exists
#
# An image that already exists is left alone unless --force is given.
# Environment:
#   BERTH_TEST_IMAGE   test image ref   (default berth-test/busybox:latest)
#   BERTH_BASE_IMAGE   base image ref to pull, else build (default: pull
#                      debian:bookworm-slim, else build berth/base:bookworm)
#   BERTH_BASE_SUITE   Debian suite     (default bookworm)
#   BERTH_BASE_MIRROR  Debian mirror URI, overrides the one read from the host
#   BERTH_PULL_TIMEOUT seconds for `docker pull` (default 60; 0 skips the pull)
#   BERTH_BASE_HOST_CA 1 (default) copies the host's extra CAs from
#                      /usr/local/share/ca-certificates into the built base image, so
#                      HTTPS from instances works behind the same TLS-inspecting egress
#                      as the host; 0 leaves the image with Debian's CAs only
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TEST_IMAGE="${BERTH_TEST_IMAGE:-berth-test/busybox:latest}"
UPSTREAM_IMAGE="${BERTH_BASE_IMAGE:-debian:bookworm-slim}"
BASE_IMAGE="${BERTH_BASE_IMAGE:-berth/base:bookworm}"
SUITE="${BERTH_BASE_SUITE:-bookworm}"
PULL_TIMEOUT="${BERTH_PULL_TIMEOUT:-60}"
DEFAULT_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

want_test=1 want_base=1 force=0
for arg in "$@"; do
  case "$arg" in
    --test-only) want_base=0 ;;
    --base-only) want_test=0 ;;
    --force) force=1 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown option: $arg (use --test-only, --base-only, --force)" ;;
  esac
done
[ "$want_test$want_base" = 00 ] && die "--test-only and --base-only exclude each other"

docker info >/dev/null 2>&1 || die "no docker daemon answers: run scripts/ensure-docker.sh first"

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/berth-images.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# import_stream REF CMD_JSON PRODUCER...: pipes the producer's tar stream into
# `docker import`, untagged; tags only when both sides succeeded, so a producer that
# fails half-way never leaves a truncated image under REF.
import_stream() {
  local ref="$1" cmd="$2" id rc=0 old
  shift 2
  old="$(docker image inspect -f '{{.Id}}' "$ref" 2>/dev/null || true)"
  id="$("$@" | docker import \
    --change "ENV PATH=$DEFAULT_PATH" \
    --change "CMD $cmd" \
    --change "LABEL org.berth.built-by=scripts/build-images.sh" \
    - 2>"$WORK/import.err")" || rc=$?
  if [ "$rc" != 0 ] || [ -z "$id" ]; then
    cat "$WORK/import.err" >&2 || true
    if [ -n "$id" ]; then docker rmi -f "$id" >/dev/null 2>&1 || true; fi
    die "building $ref failed (exit $rc)"
  fi
  docker tag "$id" "$ref"
  log "tagged $ref (${id#sha256:})"
  # --force: drop the image this one replaces, unless something still uses it.
  if [ -n "$old" ] && [ "$old" != "$id" ]; then docker rmi "$old" >/dev/null 2>&1 || true; fi
}

# ---------------------------------------------------------------- test image --------
busybox_bin() {
  local b
  b="$(dpkg -L busybox-static | grep -E '/s?bin/busybox$' | head -n1)"
  if [ -z "$b" ] || [ ! -x "$b" ]; then
    die "busybox-static installed but its binary was not found"
  fi
  # The image has no libc: the binary must be static.
  if command -v ldd >/dev/null 2>&1 && ldd "$b" 2>&1 | grep -q '=>'; then
    die "$b is dynamically linked; need the static busybox"
  fi
  printf '%s\n' "$b"
}

build_test_image() {
  if [ "$force" = 0 ] && image_exists "$TEST_IMAGE"; then
    log "$TEST_IMAGE exists; skipping (use --force to rebuild)"
    return 0
  fi
  local bb root="$WORK/busybox-root" applet
  pkg_installed busybox-static || apt_install busybox-static
  bb="$(busybox_bin)"
  log "building $TEST_IMAGE from $bb"
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,home,root,proc,sys,dev,run,var/tmp}
  chmod 1777 "$root/tmp" "$root/var/tmp"
  chmod 700 "$root/root"
  cp "$bb" "$root/bin/busybox"
  chmod 755 "$root/bin/busybox"
  # Every applet at its usual place (bin/sh, usr/bin/env, ...), pointing at /bin/busybox.
  while read -r applet; do
    case "$applet" in "" | linuxrc) continue ;; esac
    [ -e "$root/$applet" ] || [ -L "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
  done < <("$root/bin/busybox" --list-full)
  [ -L "$root/bin/sh" ] || ln -s /bin/busybox "$root/bin/sh"
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/home:/bin/false
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
  printf 'berth-test\n' >"$root/etc/hostname"
  : >"$root/etc/resolv.conf"
  printf '127.0.0.1\tlocalhost\n' >"$root/etc/hosts"
  import_stream "$TEST_IMAGE" '["/bin/sh"]' \
    tar -C "$root" --numeric-owner --owner=0 --group=0 -cf - .
}

# ---------------------------------------------------------------- base image --------
# Prints "URI SUITE COMPONENT" for every deb source the host's apt knows, reading both
# one-line sources.list and deb822 *.sources (apt parses them; no index download needed).
host_apt_sources() {
  # shellcheck disable=SC2016 # $(...) are apt's format fields, not shell
  apt-get indextargets --no-release-info \
    --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' 2>/dev/null |
    sort -u || true
}

# Prints the sources.list lines (one-line style) for $SUITE, from the host's mirrors.
base_sources() {
  local main="" sec="" uri suite comp host_codename=""
  if [ -n "${BERTH_BASE_MIRROR:-}" ]; then
    main="$BERTH_BASE_MIRROR"
  else
    # shellcheck disable=SC1091
    host_codename="$(. /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-}")"
    while read -r uri suite comp; do
      [ -n "$uri" ] || continue
      case "$suite" in
        "$SUITE" | "$host_codename" | stable) [ -z "$main" ] && main="$uri" ;;
        "$SUITE"-security | "$SUITE"/updates | "$host_codename"-security) [ -z "$sec" ] && sec="$uri" ;;
      esac
      : "$comp"
    done < <(host_apt_sources)
  fi
  if [ -z "$main" ]; then
    main="http://deb.debian.org/debian"
    log "no Debian mirror for $SUITE found in the host's apt sources; using $main"
  fi
  main="${main%/}"
  printf 'deb %s %s main\n' "$main" "$SUITE"
  printf 'deb %s %s-updates main\n' "$main" "$SUITE"
  if [ -z "$sec" ] && [ -z "${BERTH_BASE_MIRROR:-}" ]; then
    # Same host, conventional path (deb.debian.org/debian -> deb.debian.org/debian-security).
    sec="${main}-security"
  fi
  [ -n "$sec" ] && printf 'deb %s %s-security main\n' "${sec%/}" "$SUITE"
  return 0
}

# mmdebstrap runs apt with a config of its own (Dir = the new root), so the host's
# /etc/apt/apt.conf.d is NOT read. Carry over the proxy and validity settings.
host_aptopts() {
  apt-config dump 2>/dev/null |
    grep -E '^Acquire::(https?|ftp)::Proxy|^Acquire::Check-Valid-Until |^Acquire::Check-Date |^Acquire::Retries ' || true
}

# built_here REF: true when REF is an image this script built (it carries our label).
built_here() {
  [ "$(docker image inspect -f '{{index .Config.Labels "org.berth.built-by"}}' "$1" 2>/dev/null)" = scripts/build-images.sh ]
}

build_base_image() {
  # Earlier versions tagged their local build as the upstream image: give it our name.
  if [ "$UPSTREAM_IMAGE" != "$BASE_IMAGE" ] && built_here "$UPSTREAM_IMAGE"; then
    image_exists "$BASE_IMAGE" || docker tag "$UPSTREAM_IMAGE" "$BASE_IMAGE"
    if docker rmi "$UPSTREAM_IMAGE" >/dev/null 2>&1; then
      log "renamed the local build tagged $UPSTREAM_IMAGE to $BASE_IMAGE"
    else
      log "$UPSTREAM_IMAGE is berth's local build but still in use; tagged it $BASE_IMAGE too"
    fi
  fi
  if [ "$force" = 0 ]; then
    for ref in "$UPSTREAM_IMAGE" "$BASE_IMAGE"; do
      if image_exists "$ref"; then
        log "$ref exists; skipping (use --force to rebuild)"
        return 0
      fi
    done
  fi
  if [ "$PULL_TIMEOUT" != 0 ]; then
    log "trying: docker pull $UPSTREAM_IMAGE (timeout ${PULL_TIMEOUT}s)"
    if timeout "$PULL_TIMEOUT" docker pull -q "$UPSTREAM_IMAGE" >&2 2>"$WORK/pull.err"; then
      log "pulled $UPSTREAM_IMAGE"
      return 0
    fi
    log "pull failed: $(tr '\n' ' ' <"$WORK/pull.err" | cut -c1-200)"
  fi

  command -v mmdebstrap >/dev/null 2>&1 || apt_install mmdebstrap
  # Keyrings for the host's trusted dirs (mmdebstrap verifies with them).
  pkg_installed debian-archive-keyring || apt_install debian-archive-keyring

  local -a mirrors=() opts=()
  local line
  while IFS= read -r line; do mirrors+=("$line"); done < <(base_sources)
  while IFS= read -r line; do opts+=(--aptopt="$line"); done < <(host_aptopts)
  log "building $BASE_IMAGE with mmdebstrap ($SUITE, minbase) from:"
  printf '    %s\n' "${mirrors[@]}" >&2
  [ "${#opts[@]}" -gt 0 ] && printf '    apt option from host: %s\n' "${opts[@]#--aptopt=}" >&2

  local -a ca_hooks=()
  if [ "${BERTH_BASE_HOST_CA:-1}" = 1 ] && compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    log "adding the host's CAs from /usr/local/share/ca-certificates (BERTH_BASE_HOST_CA=0 to skip)"
    # shellcheck disable=SC2016 # $1 is expanded by mmdebstrap's hook shell
    ca_hooks=(
      --customize-hook='copy-in /usr/local/share/ca-certificates /usr/local/share/'
      --customize-hook='chroot "$1" update-ca-certificates >/dev/null'
    )
  fi

  local t0=$SECONDS
  # shellcheck disable=SC2016 # $1 is expanded by mmdebstrap's hook shell
  # Slim like the registry image: no docs/man/locales. The apt options carried over from
  # the host (proxy!) must not stay in the image, so 99mmdebstrap is removed at the end.
  import_stream "$BASE_IMAGE" '["/bin/bash"]' \
    mmdebstrap --variant=minbase --mode=auto --format=tar \
    --include=ca-certificates,curl,git,python3,procps \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --customize-hook='rm -f "$1/etc/apt/apt.conf.d/99mmdebstrap"' \
    --customize-hook='rm -f "$1/etc/hostname" "$1/etc/resolv.conf"' \
    "${opts[@]}" "${ca_hooks[@]}" \
    "$SUITE" - "${mirrors[@]}"
  log "$BASE_IMAGE built in $((SECONDS - t0))s"
}

[ "$want_test" = 1 ] && build_test_image
[ "$want_base" = 1 ] && build_base_image
log "done"
