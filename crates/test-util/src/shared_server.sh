# berth-shared-server DIR INSTALL_ID GRACE BERTH_SERVER_COMMAND...
#
# The supervisor of a shared test server (TestServer::shared, see shared.rs), run by
# bash in a process group of its own. It starts `berth server` as its child (log in
# DIR/data/server.log) and checks once a second, holding DIR/start.lock (so no test
# is attaching meanwhile), whether a test process still holds DIR/users.lock shared.
# After GRACE checks in a row with none, or when the server has died, or on
# SIGTERM/SIGINT/SIGHUP, it stops the server and removes its containers, volumes and
# DIR (data and log with it).
set -u
dir=$1 install=$2 grace=$3
shift 3
exec 8>>"$dir/start.lock" 9>>"$dir/users.lock"
"$@" >>"$dir/data/server.log" 2>&1 </dev/null 8>&- 9>&- &
server=$!
echo "$server" >"$dir/server.pid"

teardown() {
  kill -TERM "$server" 2>/dev/null
  for _ in $(seq 50); do
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$server" 2>/dev/null
  wait "$server" 2>/dev/null
  containers=$(docker ps -aq --filter "label=berth.install=$install")
  # shellcheck disable=SC2086 # one word per id
  [ -z "$containers" ] || docker rm -f $containers >/dev/null
  volumes=$(docker volume ls -q --filter "label=berth.install=$install")
  # shellcheck disable=SC2086
  [ -z "$volumes" ] || docker volume rm -f $volumes >/dev/null
  # Loop devices still backed by home images of this server (--disk-quota).
  losetup --list --noheadings --output NAME,BACK-FILE 2>/dev/null | while read -r dev file; do
    case "$file" in "$dir"/*) losetup --detach "$dev" ;; esac
  done
  rm -rf "$dir"
}
trap 'teardown; exit 0' TERM INT HUP

idle=0
while sleep 1; do
  flock -x 8
  if ! kill -0 "$server" 2>/dev/null; then
    echo "berth server exited: tearing down" >&2
    teardown
    exit 0
  fi
  if flock -x -n 9; then
    idle=$((idle + 1))
    if [ "$idle" -ge "$grace" ]; then
      teardown
      exit 0
    fi
    flock -u 9
  else
    idle=0
  fi
  flock -u 8
done
