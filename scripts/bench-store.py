#!/usr/bin/env python3
"""The store on PostgreSQL beside SQLite, and replicas (issue 14), in one run:

  1. create p50/p95 (POST /v1/instances -> 201, running) and GET /v1/instances p50/p99
     (20 instances), one server on SQLite, one on PostgreSQL;
  2. GET /v1/instances p50/p99 with 10,000 stopped instances in the store (rows copied
     from a created one straight into the database: they need no container), SQLite
     beside PostgreSQL;
  3. reconciler failover: two replicas on PostgreSQL, kill -9 of the leading one, then
     the time until the other says it leads (/healthz) and until a container removed
     right after the kill is back (restart_count + 1), over --failovers rounds.

    scripts/bench-store.py [--image IMAGE] [--records 10000] [--failovers 3]

PostgreSQL is a throwaway cluster of this run (crates/test-util/src/pg_cluster.sh),
removed at the end. Uses target/release/berth (else target/debug/berth) and the matching
static agent, a running dockerd and the image (scripts/build-images.sh).
"""
import argparse
import json
import os
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time

from benchlib import ROOT, Server, pct

PG_CLUSTER = os.path.join(ROOT, "crates/test-util/src/pg_cluster.sh")


def ms(secs):
    return round(secs * 1000, 2)


def summary(xs):
    return {"p50": round(pct(xs, 50), 2), "p95": round(pct(xs, 95), 2), "p99": round(pct(xs, 99), 2), "n": len(xs)}


class Postgres:
    """A PostgreSQL cluster of this run; `database()` makes a fresh database."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="berth-bench-pg-")
        self.admin = subprocess.run(["bash", PG_CLUSTER, "start", self.dir], check=True, capture_output=True,
                                    text=True).stdout.strip()
        self.n = 0

    def psql(self, url, sql):
        return subprocess.run(["psql", "-qAt", "-v", "ON_ERROR_STOP=1", url, "-c", sql], check=True,
                              capture_output=True, text=True).stdout

    def database(self):
        self.n += 1
        name = f"bench_{os.getpid()}_{self.n}"
        self.psql(self.admin, f"CREATE DATABASE {name}")
        return self.admin.rsplit("/", 1)[0] + "/" + name

    def stop(self):
        subprocess.run(["bash", PG_CLUSTER, "stop", self.dir], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def created(server, n):
    """Creates `n` instances one at a time; answers their ids and the create times (ms)."""
    ids, times = [], []
    for _ in range(n):
        t = time.perf_counter()
        st, inst = server.call("POST", "/v1/instances", {})
        times.append(ms(time.perf_counter() - t))
        assert st == 201, inst
        ids.append(inst["id"])
    return ids, times


def lists(server, calls):
    server.call("GET", "/v1/instances")
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        st, _ = server.call("GET", "/v1/instances")
        out.append(ms(time.perf_counter() - t))
        assert st == 200
    return out


def copy_rows_sqlite(server, template_id, records):
    db = sqlite3.connect(os.path.join(server.data, "berth.db"))
    db.row_factory = sqlite3.Row
    row = dict(db.execute("SELECT * FROM instances WHERE id = ?", (template_id,)).fetchone())
    row.pop("seq")
    cols = list(row)
    rows = []
    for i in range(records):
        r = dict(row, id="inst_" + secrets.token_hex(5), status="stopped", status_reason=None, name=None,
                 gateway_token=None, created_at=row["created_at"] - records + i)
        rows.append(tuple(r[c] for c in cols))
    with db:
        db.executemany(f"INSERT INTO instances ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)
    db.close()


def copy_rows_postgres(pg, url, template_id, records):
    cols = [c for c in pg.psql(url, "SELECT column_name FROM information_schema.columns WHERE table_name = "
                                    "'instances' AND column_name <> 'seq' ORDER BY ordinal_position").split()]
    fresh = {"id": "'inst_' || substr(md5(g::text || random()::text), 1, 10)", "status": "'stopped'",
             "status_reason": "NULL", "name": "NULL", "gateway_token": "NULL", "created_at": f"created_at - {records} + g"}
    select = ", ".join(fresh.get(c, c) for c in cols)
    pg.psql(url, f"INSERT INTO instances ({', '.join(cols)}) SELECT {select} FROM instances, "
                 f"generate_series(1, {records}) AS g WHERE id = '{template_id}'")


def phase_backends(args, pg):
    out = {}
    for backend in ("sqlite", "postgres"):
        flags = [] if backend == "sqlite" else ["--database-url", pg.database()]
        s = Server(args.image, flags, build=args.build, prefix=f"berth-bench-store-{backend}-")
        try:
            s.wait_ready(30)
            ids, create = created(s, args.creates)
            small = lists(s, args.list_calls)
            s.halt()
            if backend == "sqlite":
                copy_rows_sqlite(s, ids[0], args.records)
            else:
                copy_rows_postgres(pg, flags[1], ids[0], args.records)
            s.start()
            s.wait_ready(600)
            big = lists(s, args.list_calls)
            out[backend] = {"create_ms": summary(create), "list_ms": summary(small),
                            "list_10k_ms": summary(big), "instances": len(ids) + args.records}
            print(f"{backend}: create p50 {pct(create, 50):.1f} ms, list p50 {pct(small, 50):.2f} ms, "
                  f"list with {args.records} more p50 {pct(big, 50):.2f} ms", flush=True)
        finally:
            s.stop(remove_data=True)
    return out


def leads(server):
    try:
        st, h = server.call("GET", "/healthz?verbose=true", timeout=2)
        return st == 200 and h.get("leader") is True
    except OSError:
        return False


def phase_failover(args, pg):
    url = pg.database()
    a = Server(args.image, ["--database-url", url], build=args.build, prefix="berth-bench-replica-a-")
    a.wait_ready(30)
    b = Server(args.image, ["--database-url", url, "--disk-dir", os.path.join(a.data, "disks")], build=args.build,
               prefix="berth-bench-replica-b-")
    # One installation: B takes A's secret key, admin key and installation id.
    b.halt()
    shutil.copy(os.path.join(a.data, "secret.key"), os.path.join(b.data, "secret.key"))
    b.admin, b.install = a.admin, a.install
    b.start()
    b.wait_ready(30)
    rounds = []
    try:
        st, inst = a.call("POST", "/v1/instances", {})
        assert st == 201, inst
        iid = inst["id"]
        for _ in range(args.failovers):
            deadline = time.monotonic() + 30
            while not (leads(a) or leads(b)):
                assert time.monotonic() < deadline, "nobody leads"
                time.sleep(0.05)
            leader, other = (a, b) if leads(a) else (b, a)
            restarts = other.call("GET", f"/v1/instances/{iid}")[1]["restart_count"]
            t0 = time.monotonic()
            leader.proc.kill()
            leader.proc.wait()
            subprocess.run(["docker", "rm", "-f", f"berth-{iid}"], check=True, capture_output=True)
            led = back = None
            while back is None:
                now = time.monotonic() - t0
                assert now < 60, "no failover within 60 s"
                if led is None and leads(other):
                    led = now
                if led is not None:
                    st, i = other.call("GET", f"/v1/instances/{iid}")
                    if i["restart_count"] == restarts + 1 and i["status"] == "running":
                        back = now
                time.sleep(0.02)
            rounds.append({"leads_after_secs": round(led, 3), "container_back_after_secs": round(back, 3)})
            print(f"failover: the other replica leads {led * 1000:.0f} ms after the kill, "
                  f"the removed container is back after {back * 1000:.0f} ms", flush=True)
            leader.start()
            leader.wait_ready(30)
    finally:
        b.halt()
        b.stop(remove_data=True)
        a.stop(remove_data=True)
    return {"rounds": rounds,
            "leads_p50_secs": statistics.median(r["leads_after_secs"] for r in rounds),
            "container_back_p50_secs": statistics.median(r["container_back_after_secs"] for r in rounds)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default="berth-test/busybox:latest")
    ap.add_argument("--build", choices=["release", "debug"], help="which build (default: release if built)")
    ap.add_argument("--creates", type=int, default=20)
    ap.add_argument("--list-calls", type=int, default=300)
    ap.add_argument("--records", type=int, default=10000)
    ap.add_argument("--failovers", type=int, default=3)
    args = ap.parse_args()
    pg = Postgres()
    try:
        res = {"backends": phase_backends(args, pg), "failover": phase_failover(args, pg)}
    finally:
        pg.stop()
    sq, po = res["backends"]["sqlite"], res["backends"]["postgres"]
    print()
    print(f"{'figure':44} {'PostgreSQL':>12} {'SQLite':>12}")
    for label, key, p in [("create -> 201 running p50 (ms)", "create_ms", "p50"),
                          ("create -> 201 running p95 (ms)", "create_ms", "p95"),
                          (f"GET /v1/instances p50, {args.creates} instances (ms)", "list_ms", "p50"),
                          (f"GET /v1/instances p99, {args.creates} instances (ms)", "list_ms", "p99"),
                          (f"GET /v1/instances p50, {args.records} more (ms)", "list_10k_ms", "p50"),
                          (f"GET /v1/instances p99, {args.records} more (ms)", "list_10k_ms", "p99")]:
        print(f"{label:44} {po[key][p]:>12} {sq[key][p]:>12}")
    fo = res["failover"]
    print(f"{'failover: other replica leads, p50 (s)':44} {fo['leads_p50_secs']:>12}")
    print(f"{'failover: removed container back, p50 (s)':44} {fo['container_back_p50_secs']:>12}")
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    path = os.path.join(ROOT, "bench/results", time.strftime("store-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print(f"\n(results: {os.path.relpath(path, ROOT)})")


if __name__ == "__main__":
    main()
