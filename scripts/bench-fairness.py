#!/usr/bin/env python3
"""Fair Docker use (issue 9): workspace B's create latency, unloaded and while
workspace A polls `/health` of its instance from 8 threads in a loop, on one server,
in one run. Goal: B's create p50 during A's storm within 1.5x of unloaded.

    scripts/bench-fairness.py [--runs N] [--threads 8] [--image IMAGE] [-- SERVER FLAGS...]

Uses target/release/berth (else target/debug/berth) and the matching static agent,
a running dockerd and the image (scripts/build-images.sh). Extra flags after `--`
go to `berth server` (e.g. `-- --key-rate 0` to take the per-key rate limit away,
so that only the Docker budgets stand between A and B).
"""
import argparse, statistics, threading, time

from benchlib import Server, pct


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--image", default="berth-test/busybox:latest")
    ap.add_argument("server_flags", nargs="*")
    args = ap.parse_args()
    server = Server(args.image, args.server_flags, prefix="berth-bench-fair-")
    profile = server.profile

    def call(key, method, path, body=None):
        return server.call(method, path, body, key=key)

    try:
        server.wait_ready()
        admin = server.admin
        key_a = call(admin, "POST", "/v1/workspaces", {"name": "A"})[1]["key"]
        key_b = call(admin, "POST", "/v1/workspaces", {"name": "B"})[1]["key"]
        st, inst_a = call(key_a, "POST", "/v1/instances", {"name": "a"})
        assert st == 201, inst_a

        def creates_of_b(n):
            times, failures = [], 0
            for _ in range(n):
                t = time.perf_counter()
                st, inst = call(key_b, "POST", "/v1/instances", {})
                elapsed = time.perf_counter() - t
                if st != 201:
                    failures += 1
                    continue
                times.append(elapsed * 1000)
                call(key_b, "DELETE", f"/v1/instances/{inst['id']}?purge=true")
            return times, failures

        creates_of_b(2)  # warm up
        unloaded, fail_u = creates_of_b(args.runs)

        stop = threading.Event()
        statuses, lock = {}, threading.Lock()

        def storm():
            while not stop.is_set():
                st, _ = call(key_a, "GET", f"/v1/instances/{inst_a['id']}/health")
                with lock:
                    statuses[st] = statuses.get(st, 0) + 1

        threads = [threading.Thread(target=storm, daemon=True) for _ in range(args.threads)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(1.0)
        loaded, fail_l = creates_of_b(args.runs)
        stop.set()
        for t in threads:
            t.join()
        storm_secs = time.perf_counter() - started
        total = sum(statuses.values())

        print(f"berth {profile} build, {args.runs} creates of workspace B per phase, "
              f"server flags: {' '.join(args.server_flags) or '(defaults)'}")
        print(f"{'':28}{'p50 ms':>10}{'p90 ms':>10}{'failed':>8}")
        print(f"{'B create, unloaded':28}{statistics.median(unloaded):>10.0f}{pct(unloaded, 90):>10.0f}{fail_u:>8}")
        print(f"{'B create, A health storm':28}{statistics.median(loaded):>10.0f}{pct(loaded, 90):>10.0f}{fail_l:>8}")
        print(f"ratio p50: {statistics.median(loaded) / statistics.median(unloaded):.2f}x (goal <= 1.5x)")
        print(f"A's storm: {args.threads} threads, {total} health calls in {storm_secs:.1f} s "
              f"({total / storm_secs:.0f}/s), statuses {dict(sorted(statuses.items()))}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
