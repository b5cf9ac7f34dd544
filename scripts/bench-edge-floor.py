#!/usr/bin/env python3
"""How far berth's edge is from the floor of its stack, beside nginx, in one run.

Same agent, same small fixed response (GET /health), `wrk -t1 -c16`, rounds interleaved:
direct to the agent; nginx (Debian's nginx-light, keep-alive reverse proxy, access log off);
berth's edge (access log off); `bench/hyper-floor`, a bare reverse proxy on the edge's own
stack (tokio current-thread runtimes per core, hyper auto server, pooled hyper client
connections) with none of the edge's duties; and the same with the edge's header rewriting
(`--rewrite`). Prints req/s and the proxy's CPU time per request (from /proc), medians.

    cargo build --release -p berth-cli && scripts/build-agent.sh --release
    (cd bench/hyper-floor && cargo build --release)
    scripts/bench-edge-floor.py [--rounds 5] [--seconds 5]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

# scripts/ is on sys.path when run as a script
from benchlib import Nginx, Server, cpu_secs, free_port, log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_wrk(url, headers, secs):
    out = subprocess.run(["wrk", "-t1", "-c16", f"-d{secs}s", *headers, url],
                         capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    requests = int(next(l for l in lines if "requests in" in l).split()[0])
    rps = float(next(l for l in lines if "Requests/sec" in l).split()[1])
    bad = [l.strip() for l in lines if "Non-2xx" in l or "Socket errors" in l]
    return requests, rps, bad


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="edge threads and floor threads")
    # Where `cargo build --release` in bench/hyper-floor puts it.
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "bench/hyper-floor/target")
    p.add_argument("--floor-bin", default=os.path.join(target, "release/hyper-floor"))
    a = p.parse_args()
    if not os.path.exists(a.floor_bin):
        sys.exit(f"{a.floor_bin} is missing: (cd bench/hyper-floor && cargo build --release)")
    srv = Server("berth-test/busybox:latest",
                 ["--key-rate", "0", "--access-log", "off", "--edge-threads", str(a.threads)], build="release")
    nginx, floors = None, []
    try:
        srv.wait_ready(30)
        st, inst = srv.call("POST", "/v1/instances", {"name": "floor"})
        assert st == 201, inst
        ip = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                             f"berth-{inst['id']}"], capture_output=True, text=True).stdout.strip()
        if not ip:
            ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=berth.instance={inst['id']}"],
                                 capture_output=True, text=True).stdout.split()
            ip = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                                 ids[0]], capture_output=True, text=True).stdout.strip()
        agent = f"{ip}:3737"
        nginx = Nginx(agent, tempfile.mkdtemp(prefix="berth-floor-"))
        host = inst["url"].split("//")[1].rstrip("/")
        auth = ["-H", f"Host: {host}", "-H", f"Authorization: Bearer {srv.admin}"]
        targets = {
            "direct": (f"http://{agent}/health", [], []),
            "nginx": (f"http://127.0.0.1:{nginx.port}/health", auth, nginx.pids()),
            "berth edge": (f"http://127.0.0.1:{srv.edge_port}/health", auth, [srv.proc.pid]),
        }
        for name, extra in (("hyper floor", []), ("hyper floor + rewrite", ["--rewrite"])):
            port = free_port()
            proc = subprocess.Popen([a.floor_bin, f"127.0.0.1:{port}", agent, str(a.threads), *extra],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            floors.append(proc)
            targets[name] = (f"http://127.0.0.1:{port}/health", auth, [proc.pid])
        for url, headers, _ in targets.values():
            run_wrk(url, headers, 1)  # warm: connections pooled, caches filled
        results = {name: [] for name in targets}
        for r in range(a.rounds):
            for name, (url, headers, pids) in targets.items():
                c0 = cpu_secs(pids) if pids else 0
                n, rps, bad = run_wrk(url, headers, a.seconds)
                c1 = cpu_secs(pids) if pids else 0
                if bad:
                    sys.exit(f"{name}: {bad}")
                results[name].append((rps, (c1 - c0) / n * 1e6 if pids else None))
                log(f"round {r + 1} {name}: {rps:.0f} req/s")
        nginx_rps = statistics.median(x[0] for x in results["nginx"])
        print(f"\n## The edge and the floor of its stack ({a.rounds} rounds x {a.seconds} s, wrk -t1 -c16, "
              f"GET /health of the agent, {os.cpu_count()} cores, {a.threads} proxy threads)\n")
        print("| target | req/s (median) | / nginx | proxy CPU per request |")
        print("|---|---|---|---|")
        for name, xs in results.items():
            rps = statistics.median(x[0] for x in xs)
            cpu = [x[1] for x in xs if x[1] is not None]
            cpu_s = f"{statistics.median(cpu):.1f} us" if cpu else "-"
            print(f"| {name} | {rps:.0f} | {rps / nginx_rps:.2f}x | {cpu_s} |")
    finally:
        for proc in floors:
            proc.kill()
            proc.wait()
        if nginx:
            nginx.stop()
        srv.stop()


if __name__ == "__main__":
    main()
