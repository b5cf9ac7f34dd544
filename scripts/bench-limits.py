#!/usr/bin/env python3
"""Limits (issue 9), one server, one run:

  1. server RSS idle, and its peak while 40 parallel execs each print 16 MiB
     (goal: peak <= 150 MiB);
  2. 2,000 connections that send nothing: how many the server held, how long until
     it closed them (the header-read timeout), and an API call's latency meanwhile.

    scripts/bench-limits.py [--image IMAGE] [--header-timeout SECS] [-- SERVER FLAGS...]

Uses target/release/berth (else target/debug/berth) and the matching static agent,
a running dockerd and the image (scripts/build-images.sh).
"""
import argparse, os, resource, socket, statistics, threading, time

from benchlib import Server


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", default="berth-test/busybox:latest")
    ap.add_argument("--header-timeout", type=int, default=5)
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--build", choices=["release", "debug"], help="which build (default: release if built)")
    ap.add_argument("server_flags", nargs="*")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    bench = Server(args.image, ["--header-read-timeout-secs", str(args.header_timeout), *args.server_flags],
                   build=args.build, prefix="berth-bench-limits-")
    profile, server, port, call = bench.profile, bench.proc, bench.port, bench.call
    try:
        bench.wait_ready()
        st, inst = call("POST", "/v1/instances", {})
        assert st == 201, inst
        iid = inst["id"]
        time.sleep(1)
        idle = rss_mib(server.pid)

        # 1. exec flood.
        peak, stop = [idle], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mib(server.pid))
                time.sleep(0.02)

        results = []

        def one_exec():
            st, r = call("POST", f"/v1/instances/{iid}/exec",
                         {"command": "head -c 16777216 /dev/zero | tr '\\0' a", "max_output_bytes": 16777216,
                          "timeout_secs": 300})
            results.append((st, len(r.get("stdout", "")) if isinstance(r, dict) else 0))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        threads = [threading.Thread(target=one_exec) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        flood_secs = time.perf_counter() - started
        stop.set()
        sampler.join()
        statuses = {}
        for st, _ in results:
            statuses[st] = statuses.get(st, 0) + 1
        out_mib = sum(n for _, n in results) / 1048576

        # 2. idle connections.
        fds_before = open_fds(server.pid)
        conns = []
        for _ in range(args.connections):
            c = socket.create_connection(("127.0.0.1", port))
            conns.append(c)
        opened = time.perf_counter()
        time.sleep(0.5)
        held = open_fds(server.pid) - fds_before
        lat = []
        for _ in range(20):
            t = time.perf_counter()
            st, _ = call("GET", f"/v1/instances/{iid}")
            lat.append((time.perf_counter() - t) * 1000)
            assert st == 200
        closed_at = {}
        deadline = time.time() + args.header_timeout * 4 + 10
        pending = list(enumerate(conns))
        for c in conns:
            c.setblocking(False)
        while pending and time.time() < deadline:
            still = []
            for i, c in pending:
                try:
                    if c.recv(1) == b"":
                        closed_at[i] = time.perf_counter() - opened
                    else:
                        still.append((i, c))
                except BlockingIOError:
                    still.append((i, c))
                except OSError:
                    closed_at[i] = time.perf_counter() - opened
            pending = still
            time.sleep(0.05)
        for c in conns:
            c.close()
        times = sorted(closed_at.values())

        print(f"berth {profile} build; server flags: --header-read-timeout-secs {args.header_timeout} "
              f"{' '.join(args.server_flags)}")
        print(f"server RSS idle                         {idle:8.1f} MiB")
        print(f"server RSS peak, 40 x 16 MiB execs      {peak[0]:8.1f} MiB  (goal <= 150)  "
              f"{flood_secs:.1f} s, statuses {statuses}, {out_mib:.0f} MiB of output answered")
        print(f"idle connections opened                 {args.connections:8d}")
        print(f"  held by the server                    {held:8d}  (open fds added)")
        print(f"  closed by the server                  {len(times):8d}  "
              f"first {times[0] if times else float('nan'):.1f} s, median "
              f"{statistics.median(times) if times else float('nan'):.1f} s, last {times[-1] if times else float('nan'):.1f} s")
        print(f"  API GET p50 meanwhile                 {statistics.median(lat):8.1f} ms  (max {max(lat):.1f} ms)")
    finally:
        bench.stop()


if __name__ == "__main__":
    main()
