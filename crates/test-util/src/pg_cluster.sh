#!/usr/bin/env bash
# pg_cluster.sh start|stop DIR
#
# A throwaway PostgreSQL cluster for tests (see postgres.rs), run by scripts/test.sh
# for a whole test run and by the test harness itself when BERTH_TEST_PG_URL is unset.
#
#   start DIR  Creates the cluster in DIR (made if missing; initdb only when DIR holds
#              no complete cluster yet) unless it is running already, starts it, and
#              prints its admin URL (postgres://postgres@127.0.0.1:PORT/postgres), also
#              written to DIR/url. Trust authentication, listening on 127.0.0.1 only,
#              on a free port picked here, with its unix socket in DIR; durability off
#              (fsync, synchronous_commit, full_page_writes) for speed. Log: DIR/postgres.log.
#   stop DIR   Stops the cluster at once (immediate shutdown, then SIGKILL) and removes DIR.
#
# initdb and postgres refuse to run as root: as root, they run as the `postgres` system
# user (Debian's package creates it; `nobody` otherwise), who then owns DIR, so DIR's
# parent directories must let that user through (not a 0700 home directory).
# The binaries: $BERTH_PG_BIN if set, else the newest /usr/lib/postgresql/*/bin
# (Debian), else initdb's directory on the PATH.
set -euo pipefail

die() { printf 'pg_cluster.sh: %s\n' "$*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: pg_cluster.sh start|stop DIR"
cmd=$1 dir=$2

# The postmaster's pid when one runs for DIR/data, else nothing.
postmaster_pid() {
  local pid
  pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null) || return 0
  case "$pid" in '' | *[!0-9]*) return 0 ;; esac
  # A stale file (a reboot, a SIGKILL) may name another process now.
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'postgres'; then
    echo "$pid"
  fi
}

kill_postmaster() {
  local pid
  pid=$(postmaster_pid)
  if [ -n "$pid" ]; then
    # SIGQUIT: immediate shutdown (the backends are told to quit, nothing is flushed).
    kill -QUIT "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

stop() {
  kill_postmaster
  rm -rf "$dir"
}

bin_dir() {
  local d
  if [ -n "${BERTH_PG_BIN:-}" ]; then
    [ -x "$BERTH_PG_BIN/initdb" ] || die "no initdb in BERTH_PG_BIN=$BERTH_PG_BIN"
    echo "$BERTH_PG_BIN"
    return
  fi
  # shellcheck disable=SC2012 # version directories: plain names
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then
    echo "$d"
  elif command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
  else
    die "PostgreSQL's server binaries (initdb, pg_ctl, postgres) not found; install them: apt-get install postgresql (or set BERTH_PG_BIN)"
  fi
}

start() {
  local bin user=
  bin=$(bin_dir)
  if [ "$(id -u)" -eq 0 ]; then
    user=nobody
    if id -u postgres >/dev/null 2>&1; then user=postgres; fi
  fi
  as_pg() {
    if [ -n "$user" ]; then runuser -u "$user" -- "$@"; else "$@"; fi
  }

  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -n "$user" ]; then
    chown "$user:" "$dir"
    chmod 0755 "$dir"
  fi
  as_pg test -w "$dir" ||
    die "${user:-this user} cannot write to $dir (is a parent directory closed to it? TMPDIR=${TMPDIR:-})"
  # Unix socket paths are limited to 107 bytes.
  [ "${#dir}" -le 80 ] || die "$dir is too long a path for PostgreSQL's unix socket (at most 80 characters here)"

  if [ -n "$(postmaster_pid)" ]; then
    if [ -s "$dir/url" ]; then
      cat "$dir/url"
      return
    fi
    kill_postmaster # started, but its start never finished: start it again
  fi

  # DIR/initialized marks a complete initdb; anything else is redone from scratch.
  if [ ! -e "$dir/initialized" ]; then
    rm -rf "$dir/data"
    # --no-sync: nothing here must survive a crash. The C locale: byte-order text
    # comparison, the same on every machine (and like SQLite's).
    as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
      --no-instructions >"$dir/initdb.log" 2>&1 || die "initdb failed: $(cat "$dir/initdb.log")"
    cat >>"$dir/data/postgresql.conf" <<EOF

# pg_cluster.sh: a throwaway cluster for tests.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    touch "$dir/initialized"
  fi

  # A port that is free now may be taken before the postmaster binds it: try another.
  local port attempt
  for attempt in $(seq 20); do
    port=$((15000 + RANDOM % 17000)) # below Linux's ephemeral ports (32768-)
    : >"$dir/postgres.log"
    [ -z "$user" ] || chown "$user:" "$dir/postgres.log"
    if as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -o "-p $port" -w -t 60 -s start \
      >/dev/null 2>"$dir/pg_ctl.err"; then
      echo "postgres://postgres@127.0.0.1:$port/postgres" >"$dir/url.tmp"
      mv "$dir/url.tmp" "$dir/url"
      cat "$dir/url"
      return
    fi
    grep -q 'Address already in use' "$dir/postgres.log" || break
    kill_postmaster # gone already, normally: it gave up on that port
    [ "$attempt" -lt 20 ] || break
  done
  die "PostgreSQL did not start in $dir: $(cat "$dir/pg_ctl.err")
$(tail -n 30 "$dir/postgres.log")"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) die "usage: pg_cluster.sh start|stop DIR" ;;
esac
