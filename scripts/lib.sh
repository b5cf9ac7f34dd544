# shellcheck shell=bash source-path=SCRIPTDIR
# Shared helpers for berth's scripts. Source it; do not execute it.
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Repository root (the parent of scripts/).
BERTH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BERTH_ROOT

# rustup installs cargo under ~/.cargo/bin, which a non-login shell (CI) may lack.
if [ -d "${HOME:-/root}/.cargo/bin" ]; then
  case ":$PATH:" in
    *":${HOME:-/root}/.cargo/bin:"*) ;;
    *) PATH="${HOME:-/root}/.cargo/bin:$PATH" ;;
  esac
fi
# Debian's docker.io puts dockerd in /usr/sbin, which some shells leave out.
case ":$PATH:" in *":/usr/sbin:"*) ;; *) PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" ;; esac
export PATH

export DEBIAN_FRONTEND=noninteractive
# Keep needrestart (if installed) from prompting or chattering during apt-get install.
export NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=a

log() { printf '[berth:%s] %s\n' "${BERTH_SCRIPT:-$(basename "$0")}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Run as root: directly when we are root, else through sudo when there is one.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -E "$@"
  else
    die "need root to run: $*"
  fi
}

# pkg_installed PKG: true when the Debian package is installed.
pkg_installed() {
  dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed
}

# apt_install PKG...: installs those of the packages that are missing.
# `apt-get update` runs at most once per process tree (BERTH_APT_UPDATED is exported).
apt_install() {
  local missing=() p
  for p in "$@"; do
    pkg_installed "$p" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "missing packages (${missing[*]}) and no apt-get to install them"
  if [ -z "${BERTH_APT_UPDATED:-}" ]; then
    log "apt-get update"
    as_root apt-get update -qq || die "apt-get update failed"
    BERTH_APT_UPDATED=1
    export BERTH_APT_UPDATED
  fi
  log "apt-get install ${missing[*]}"
  as_root apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
}

# pg_server_installed: true when PostgreSQL's server binaries are installed (Debian's
# in /usr/lib/postgresql/VERSION/bin, or initdb on the PATH).
pg_server_installed() {
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1
}

require_cargo() {
  command -v cargo >/dev/null 2>&1 ||
    die "cargo not found (install the Rust toolchain with rustup; PATH=$PATH)"
}
