#!/usr/bin/env python3
"""berth's benchmark harness: every figure beside its baseline, measured in one run.

Figures (`--only` takes their names, comma-separated):

  create   create->running p50/p95, cold, beside `docker run -d` of the same image with the
           same agent bind-mounted read-only as the command, then polling its /health
  warm     warm-pool claim p50/p99 (a server with `--warm-pool berth-agent=K`, claims spaced
           so the pool refills) beside creates while the pool is drained and cold creates
  ttft     create -> first streamed token: POST /v1/instances, then a streamed turn
           (POST /v1/responses through the edge) on a scripted OpenAI-compatible model
           reached through berth's managed LLM proxy
  exec     exec round trip of `true` p50/p95 beside the Docker Engine API exec and `docker exec`
  edge     req/s and p50/p99 of the agent's GET /health with wrk: through berth's edge,
           directly to the agent, and through nginx as a keep-alive reverse proxy
  memory   idle cgroup memory per instance beside `sleep infinity` containers; server RSS
  wake     cold wake: request in -> first byte of an idle-stopped cold_start instance
  density  idle instances created in a time budget (--density-minutes), MemAvailable left,
           create p50 of the first 50 vs the last 50 (4 clients); at --loaded-at instances
           (1,000) the filling pauses for creates one at a time, interleaved with
           `docker run -d` + /health on the same bridge (as the create phase does on an
           empty host); then the server's RSS and the CPU% of berth and dockerd while idle
           for 60 s
  list10k  GET /v1/instances p50/p99 with 10,000 instances in the store (stopped instances
           inserted straight into the server's SQLite: they need no container)
  rss1k    the control plane's RSS with 1,000 instances (taken from the density phase
           when it got that far)

Each phase starts its own `berth server` (free ports, fresh data dir and install id, a
network of this run) and removes everything it made, in batches, also on Ctrl-C or an
error (`--keep` leaves the last state in place). Results: a table on stdout, and
bench/results/<UTC time>.json, bench/results/latest.json, bench/results/latest.png.

    cargo build --release -p berth-cli && scripts/build-agent.sh --release
    scripts/bench.py --quick                    # ~3-5 min, small counts
    scripts/bench.py                            # the full run, ~25-30 min
    scripts/bench.py --only create,exec,edge
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (BATCH, MIB, ROOT, ChatUpstream, Nginx, Server, binaries, container_ip,  # noqa: E402
                      container_memory, cpu_secs, docker, docker_api_exec, http_first_byte, log, machine,
                      mem_available, pct, remove_in_batches, streamed_turn, wrk)

FIGURES = ["create", "warm", "ttft", "exec", "edge", "memory", "wake", "density", "list10k", "rss1k"]
MAIN = {"create", "ttft", "exec", "edge", "memory", "wake"}  # phases sharing one server
AGENT_PATH = "/opt/berth/bin/berth-agent"  # where berth mounts the agent (crates/runtime/src/docker.rs)
AGENT_PORT = 3737
BASE_LABEL = "berth-bench.run"  # baseline containers; never berth.install, or a reconciler removes them
# Every server: no per-key rate (hundreds of calls a second would be 429), room for
# thousands of instances (each size-1 instance promises 2 GiB to memory admission).
COMMON = ["--key-rate", "0", "--instance-limit", "100000", "--memory-overcommit", "1000"]


def ms(seconds):
    return round(seconds * 1000, 3)


def summary(xs):
    if not xs:
        return {}
    return {"n": len(xs), "p50": round(pct(xs, 50), 3), "p95": round(pct(xs, 95), 3), "p99": round(pct(xs, 99), 3),
            "mean": round(statistics.mean(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3)}


class Skip(Exception):
    """A figure that cannot be measured here (the reason is reported)."""


class Bench:
    def __init__(self, args):
        self.args = args
        self.run_id = secrets.token_hex(4)
        self.network = f"berth-bench-{self.run_id}"
        self.base_label = f"{BASE_LABEL}={self.run_id}"
        self.tmp = tempfile.mkdtemp(prefix="berth-bench-run-")
        self.servers, self.nginx, self.upstream = [], None, None
        self.results, self.notes, self.errors = {}, [], {}
        self.seq = 0
        self.main = None
        # Private copies: a rebuild elsewhere during the run cannot change what is measured.
        profile, berth, agent = binaries(args.build)
        self.bins = (profile, os.path.join(self.tmp, "berth"), os.path.join(self.tmp, "berth-agent"))
        shutil.copy2(berth, self.bins[1])
        shutil.copy2(agent, self.bins[2])
        self.built = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(os.stat(berth).st_mtime))

    # ------------------------------------------------------------ plumbing

    def server(self, flags, name):
        log(f"starting a berth server for {name}")
        s = Server(self.args.image, COMMON + flags, prefix=f"berth-bench-{name}-", network=self.network, log=True,
                   bins=self.bins)
        self.servers.append(s)
        s.wait_ready(30)
        return s

    def drop(self, s):
        """Stops a phase's server and removes what it made (unless --keep)."""
        if self.args.keep or s is None:
            return
        n = len(docker("ps", "-aq", "--filter", f"label=berth.install={s.install}").split())
        log(f"removing a server and its {n} containers")
        s.stop(remove_data=True)
        self.servers.remove(s)

    def create(self, s, body=None, expect_running=True):
        """(ms, instance) of one POST /v1/instances answered 201."""
        t0 = time.perf_counter()
        st, inst = s.call("POST", "/v1/instances", body or {})
        dt = time.perf_counter() - t0
        if st != 201:
            raise RuntimeError(f"POST /v1/instances answered {st}: {json.dumps(inst)[:400]}\n{s.log_tail()}")
        if expect_running and inst.get("status") != "running":
            raise RuntimeError(f"created instance is {inst.get('status')!r}, not running")
        return ms(dt), inst

    def baseline_name(self, kind):
        self.seq += 1
        return f"berth-bench-{self.run_id}-{kind}-{self.seq}"

    def baseline_agent_run(self, agent):
        """`docker run -d` of the agent as berth runs it, then poll /health: ms to the first 200."""
        t0 = time.perf_counter()
        name = self.baseline_name("agent")
        docker("run", "-d", "--init", "--network", self.network, "--name", name, "--label", self.base_label,
               "-v", f"{agent}:{AGENT_PATH}:ro", "--entrypoint", AGENT_PATH, self.args.image,
               "--listen", f"0.0.0.0:{AGENT_PORT}", "--data", "/tmp/berth-agent-data")
        ip = docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{self.network}").IPAddress}}}}', name)
        url = f"http://{ip}:{AGENT_PORT}/health"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with opener.open(url, timeout=1) as r:
                    if r.status == 200:
                        return ms(time.perf_counter() - t0), name
            except OSError:
                pass
            time.sleep(0.015)
        raise RuntimeError(f"baseline agent {name} did not answer {url} within 60 s")

    def baselines(self):
        return docker("ps", "-aq", "--filter", f"label={self.base_label}").split()

    def cleanup(self):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.upstream:
            self.upstream.shutdown()
        if self.nginx:
            self.nginx.stop()
        if self.args.keep:
            for s in self.servers:
                print(f"kept: berth server pid {s.proc.pid} at {s.base} (key {s.admin}), data {s.data}, "
                      f"containers label berth.install={s.install}", file=sys.stderr)
            print(f"kept: baseline containers label {self.base_label}; network {self.network}", file=sys.stderr)
            return
        log("cleaning up")
        for s in list(self.servers):
            try:
                s.stop(remove_data=True)
            except Exception as e:  # noqa: BLE001 - report, keep going
                log(f"cleanup: {e}")
        try:
            remove_in_batches(["rm", "-f"], self.baselines(), BATCH)
        except Exception as e:  # noqa: BLE001
            log(f"cleanup: {e}")
        subprocess.run(["docker", "network", "rm", self.network], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        log("cleaned up")

    # ------------------------------------------------------------ the main server's phases

    def start_main(self):
        a = self.args
        flags = ["--min-idle-timeout-secs", "1", "--reconcile-interval-ms", "500",
                 "--access-log", os.path.join(self.tmp, "access.log")]
        if "ttft" in a.only:
            self.upstream = ThreadingHTTPServer(("127.0.0.1", 0), type("Tiny", (ChatUpstream,), {"tokens": 5}))
            threading.Thread(target=self.upstream.serve_forever, daemon=True).start()
            flags += ["--llm-base-url", f"http://127.0.0.1:{self.upstream.server_address[1]}/v1",
                      "--llm-price", "bench-model=1,1", "--llm-proxy-port", "0"]
        self.main = self.server(flags, "main")
        time.sleep(2)
        self.main_rss_idle = self.main.rss()

    def creates_beside_docker_runs(self, s, n, berth, base):
        """`n` creates on `s` and `n` `docker run -d` + /health, appending their ms to
        `berth` and `base`; interleaved, so drift on a shared machine hits both alike."""
        for i in range(n):
            if i % 2 == 0:
                berth.append(self.create(s)[0])
                base.append(self.baseline_agent_run(s.agent_bin)[0])
            else:
                base.append(self.baseline_agent_run(s.agent_bin)[0])
                berth.append(self.create(s)[0])

    def phase_create(self):
        a, s = self.args, self.main
        log("create: warm-up (one of each, not counted)")
        self.create(s)
        self.baseline_agent_run(s.agent_bin)
        berth, base = [], []
        self.creates_beside_docker_runs(s, a.creates, berth, base)
        log(f"create: berth p50 {pct(berth, 50):.0f} ms, docker run + /health p50 {pct(base, 50):.0f} ms")
        remove_in_batches(["rm", "-f"], self.baselines())
        return {"berth_ms": berth, "docker_run_ms": base, "berth": summary(berth), "docker_run": summary(base)}

    def phase_exec(self):
        a, s = self.args, self.main
        _, inst = self.create(s)
        cid = f"berth-{inst['id']}"
        path = f"/v1/instances/{inst['id']}/exec"
        for _ in range(3):  # warm-up
            s.call("POST", path, {"command": ["true"]})
            docker_api_exec(cid)
        berth, api, cli = [], [], []
        for _ in range(a.execs):
            t = time.perf_counter()
            st, r = s.call("POST", path, {"command": ["true"]})
            berth.append(ms(time.perf_counter() - t))
            assert st == 200 and r["exit_code"] == 0, (st, r)
            t = time.perf_counter()
            assert docker_api_exec(cid) == 0
            api.append(ms(time.perf_counter() - t))
            t = time.perf_counter()
            subprocess.run(["docker", "exec", cid, "true"], check=True)
            cli.append(ms(time.perf_counter() - t))
        log(f"exec: berth p50 {pct(berth, 50):.1f} ms, Docker API p50 {pct(api, 50):.1f} ms")
        return {"berth_ms": berth, "docker_api_ms": api, "docker_cli_ms": cli,
                "berth": summary(berth), "docker_api": summary(api), "docker_cli": summary(cli)}

    def phase_memory(self):
        a, s = self.args, self.main
        names = []
        log(f"memory: {a.instances} berth instances and {a.instances} `sleep infinity` containers")
        for _ in range(a.instances):
            names.append(f"berth-{self.create(s)[1]['id']}")
        sleeps = []
        for _ in range(a.instances):
            name = self.baseline_name("sleep")
            docker("run", "-d", "--init", "--network", self.network, "--name", name, "--label", self.base_label,
                   a.image, "sleep", "infinity")
            sleeps.append(name)
        log(f"memory: idling {a.idle_secs} s")
        time.sleep(a.idle_secs)
        bm, src1 = container_memory(names)
        sm, src2 = container_memory(sleeps)
        running = len(docker("ps", "-q", "--filter", f"label=berth.install={s.install}").split())
        rss = s.rss()
        remove_in_batches(["rm", "-f"], self.baselines())
        bu, su = [m[0] / MIB for m in bm.values()], [m[0] / MIB for m in sm.values()]
        ba = [m[1] / MIB for m in bm.values() if m[1] is not None]
        sa = [m[1] / MIB for m in sm.values() if m[1] is not None]
        r2 = lambda xs: [round(x, 3) for x in xs]  # noqa: E731
        return {"source": src1 if src1 == src2 else f"{src1} / {src2}", "berth_mib": r2(bu), "sleep_mib": r2(su),
                "berth_anon_mib": r2(ba), "sleep_anon_mib": r2(sa),
                "berth_mean_mib": statistics.mean(bu), "sleep_mean_mib": statistics.mean(su),
                "berth_anon_mean_mib": statistics.mean(ba) if ba else None,
                "sleep_anon_mean_mib": statistics.mean(sa) if sa else None,
                "server_rss_idle_mib": self.main_rss_idle / MIB, "server_rss_mib": rss / MIB,
                "server_instances": running}

    def turn(self, s, label):
        """ms to the first streamed text delta of one turn through the edge, and to its end."""
        first, total = streamed_turn(s, label, {"input": "hello"}, timeout=120)
        return round(first, 3), round(total, 3)

    def phase_ttft(self):
        a, s = self.args, self.main
        body = {"budget": {"managed_cap_usd": 1000}}
        _, inst = self.create(s, body)  # warm-up
        self.turn(s, inst["id"][5:])
        total, creates, firsts = [], [], []
        for _ in range(a.ttft):
            t0 = time.perf_counter()
            c, inst = self.create(s, body)
            f, _ = self.turn(s, inst["id"][5:])
            total.append(ms(time.perf_counter() - t0))
            creates.append(c)
            firsts.append(f)
        log(f"ttft: create -> first token p50 {pct(total, 50):.0f} ms (create {pct(creates, 50):.0f}, "
            f"turn to first token {pct(firsts, 50):.0f})")
        return {"total_ms": total, "create_ms": creates, "turn_first_token_ms": firsts, "total": summary(total),
                "create": summary(creates), "turn_first_token": summary(firsts)}

    def phase_edge(self):
        a, s = self.args, self.main
        if not shutil.which("wrk"):
            raise Skip("wrk is missing (apt-get install wrk)")
        _, inst = self.create(s)
        ip = container_ip(f"berth-{inst['id']}")
        targets = {
            "direct": (f"http://{ip}:{AGENT_PORT}/health", [], []),
            "berth edge": (f"http://127.0.0.1:{s.edge_port}/health",
                           [f"Host: {inst['id'][5:]}.localhost:{s.edge_port}", f"Authorization: Bearer {s.admin}"],
                           [s.proc.pid]),
        }
        if shutil.which("nginx"):
            self.nginx = Nginx(f"{ip}:{AGENT_PORT}", self.tmp)
            targets["nginx"] = (f"http://127.0.0.1:{self.nginx.port}/health", [], self.nginx.pids())
        else:
            self.notes.append("edge: nginx is missing (apt-get install nginx-light): no nginx baseline")
        for url, hdrs, _ in targets.values():  # warm-up
            wrk(url, hdrs, 2, a.connections)
        rounds = {k: [] for k in targets}
        single = {k: [] for k in targets}
        for rnd in range(a.edge_rounds):
            for name, (url, hdrs, pids) in targets.items():
                before = cpu_secs(pids)
                r = wrk(url, hdrs, a.edge_seconds, a.connections)
                r["cpu_us_per_req"] = (cpu_secs(pids) - before) / r["requests"] * 1e6 if pids else None
                if r["non2xx"]:
                    raise RuntimeError(f"edge: {name} answered {r['non2xx']} non-2xx")
                rounds[name].append(r)
                single[name].append(wrk(url, hdrs, max(2, a.edge_seconds // 3), 1))
                log(f"edge round {rnd + 1} {name}: {r['rps']:.0f} req/s, p50 {r['p50'] * 1000:.0f} us")
        if self.nginx:
            self.nginx.stop()
            self.nginx = None
        med = {}
        for k in targets:
            med[k] = {m: round(statistics.median(x[m] for x in rounds[k]), 4) for m in ("rps", "p50", "p99")}
            cpu = [x["cpu_us_per_req"] for x in rounds[k] if x["cpu_us_per_req"] is not None]
            med[k]["cpu_us_per_req"] = round(statistics.median(cpu), 2) if cpu else None
            med[k]["c1_p50"] = round(statistics.median(x["p50"] for x in single[k]), 4)
            med[k]["c1_p99"] = round(statistics.median(x["p99"] for x in single[k]), 4)
        return {"wrk": f"wrk -t1 -c{a.connections} -d{a.edge_seconds}s, {a.edge_rounds} rounds, medians (ms)",
                "median": med, "rounds": rounds, "c1_rounds": single}

    def phase_wake(self):
        a, s = self.args, self.main
        _, inst = self.create(s, {"lifecycle": {"mode": "cold_start", "idle_timeout_secs": 1}})
        host = f"{inst['id'][5:]}.localhost:{s.edge_port}"
        wakes = []
        for _ in range(a.wakes):
            deadline = time.monotonic() + 90
            while s.call("GET", f"/v1/instances/{inst['id']}")[1]["status"] != "stopped":
                if time.monotonic() > deadline:
                    raise RuntimeError("the cold_start instance was never stopped for idleness")
                time.sleep(0.1)
            wakes.append(ms(http_first_byte(("127.0.0.1", s.edge_port), host, "/health",
                                            [f"Authorization: Bearer {s.admin}"])))
        log(f"wake: p50 {pct(wakes, 50):.0f} ms")
        return {"wake_ms": wakes, "wake": summary(wakes)}

    # ------------------------------------------------------------ phases with their own server

    def phase_warm(self):
        a = self.args
        k = a.pool
        s = self.server(["--warm-pool", f"berth-agent={k}"], "warm")
        ready = lambda: s.metric("berth_warm_pool_ready")  # noqa: E731
        warm = lambda: s.metric('berth_creates_total{kind="warm"')  # noqa: E731

        def wait_full(limit=180):
            deadline = time.monotonic() + limit
            while ready() < k:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the warm pool did not fill to {k} within {limit} s ({ready()} ready)")
                time.sleep(0.1)
        log(f"warm: waiting for the pool to fill ({k})")
        t0 = time.monotonic()
        wait_full()
        fill = time.monotonic() - t0
        time.sleep(1)
        claims, spaced_cold = [], 0
        for _ in range(a.claims):
            wait_full()
            before = warm()
            dt, _ = self.create(s)
            if warm() > before:
                claims.append(dt)
            else:
                spaced_cold += 1
        # Drained: creates back to back until the pool is empty; the cold ones count.
        drained, tries = [], 0
        while len(drained) < a.drained and tries < a.drained + 6 * k + 10:
            tries += 1
            before = warm()
            dt, _ = self.create(s)
            if warm() == before:
                drained.append(dt)
        log(f"warm: claim p50 {pct(claims, 50) if claims else float('nan'):.0f} ms, "
            f"drained-pool create p50 {pct(drained, 50) if drained else float('nan'):.0f} ms")
        self.drop(s)
        return {"pool": f"berth-agent={k}", "fill_secs": round(fill, 2), "claim_ms": claims,
                "drained_ms": drained, "claim": summary(claims), "drained": summary(drained),
                "spaced_claims_served_cold": spaced_cold, "back_to_back_creates": tries}

    def phase_density(self):
        a = self.args
        s = self.server([], "density")
        time.sleep(2)
        dockerd = [int(p) for p in subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True,
                                                  text=True).stdout.split()]
        containerd = [int(p) for p in subprocess.run(["pgrep", "-x", "containerd"], capture_output=True,
                                                     text=True).stdout.split()]
        mem0, rss0 = mem_available(), s.rss()
        budget = a.density_minutes * 60
        floor = a.density_floor_mib * MIB
        lat, lock, state = [], threading.Lock(), {"stop": None, "rss_at": {}, "busy": 0}
        t_start = time.monotonic()
        marks = sorted({100, 500, 1000, a.rss_instances})
        # Filling pauses at `loaded_at` for the one-at-a-time creates (go cleared).
        go, reached = threading.Event(), threading.Event()
        go.set()

        def client():
            while state["stop"] is None:
                go.wait()
                if state["stop"] is not None:
                    return
                if time.monotonic() - t_start > budget:
                    state["stop"] = state["stop"] or "time budget"
                    return
                if mem_available() < floor:
                    state["stop"] = state["stop"] or f"MemAvailable below {a.density_floor_mib} MiB"
                    return
                with lock:
                    state["busy"] += 1
                t0 = time.perf_counter()
                try:
                    st, body = s.call("POST", "/v1/instances", {})
                except OSError as e:
                    st, body = 0, str(e)
                dt = ms(time.perf_counter() - t0)
                with lock:
                    state["busy"] -= 1
                    if st == 201:
                        lat.append(dt)
                        n = len(lat)
                        if n >= a.loaded_at and not reached.is_set():
                            go.clear()
                            reached.set()
                        if n in marks:
                            state["rss_at"][n] = s.rss()
                        if n % 100 == 0:
                            log(f"density: {n} instances, {time.monotonic() - t_start:.0f} s, "
                                f"MemAvailable {mem_available() / MIB:.0f} MiB")
                    else:
                        code = body.get("error", {}).get("code") if isinstance(body, dict) else body
                        msg = body.get("error", {}).get("message", "") if isinstance(body, dict) else ""
                        state["stop"] = state["stop"] or f"create answered {st} {code}: {msg[:200]}"
        log(f"density: creating idle instances for {a.density_minutes} min with {a.density_clients} clients")
        threads = [threading.Thread(target=client) for _ in range(a.density_clients)]
        for t in threads:
            t.start()
        loaded, paused = None, False
        while any(t.is_alive() for t in threads):
            if reached.wait(1) and not paused:
                paused = True
                while state["busy"]:
                    time.sleep(0.05)
                loaded = self.loaded_creates(s, len(lat))
                go.set()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t_start
        n = len(lat)
        running = len(docker("ps", "-q", "--filter", f"label=berth.install={s.install}").split())
        log(f"density: {n} instances ({running} running) in {elapsed:.0f} s; stopped by {state['stop']}; "
            f"idling {a.density_idle_secs} s")
        time.sleep(5)
        mem1 = mem_available()
        pids_b = [s.proc.pid]
        c0 = (cpu_secs(pids_b), cpu_secs(dockerd), cpu_secs(containerd), time.monotonic())
        time.sleep(a.density_idle_secs)
        c1 = (cpu_secs(pids_b), cpu_secs(dockerd), cpu_secs(containerd), time.monotonic())
        wall = c1[3] - c0[3]
        rss_end = s.rss()
        out = {"instances": n, "running": running, "secs": round(elapsed, 1), "clients": a.density_clients,
               "stopped_by": state["stop"], "create_ms": lat, "first50": summary(lat[:50]), "loaded": loaded,
               "last50": summary(lat[-50:]), "mem_available_before_mib": round(mem0 / MIB),
               "mem_available_after_mib": round(mem1 / MIB), "server_rss_idle_mib": round(rss0 / MIB, 1),
               "server_rss_end_mib": round(rss_end / MIB, 1),
               "server_rss_at_mib": {str(k): round(v / MIB, 1) for k, v in sorted(state["rss_at"].items())},
               "idle_secs": round(wall, 1),
               "berth_cpu_pct": round((c1[0] - c0[0]) / wall * 100, 2),
               "dockerd_cpu_pct": round((c1[1] - c0[1]) / wall * 100, 2) if dockerd else None,
               "containerd_cpu_pct": round((c1[2] - c0[2]) / wall * 100, 2) if containerd else None}
        self.drop(s)
        return out

    def loaded_creates(self, s, n):
        """Creates one at a time with `n` idle instances in place, interleaved with
        `docker run -d` + /health on the same bridge (removed afterwards, so the bridge
        keeps its room)."""
        a = self.args
        log(f"density: {n} instances; {a.loaded_creates} creates one at a time, each beside a docker run")
        berth, base = [], []
        try:
            self.creates_beside_docker_runs(s, a.loaded_creates, berth, base)
        except RuntimeError as e:
            log(f"density: loaded creates stopped: {e}")
        remove_in_batches(["rm", "-f"], self.baselines())
        if not berth or not base:
            return None
        log(f"density: at {n}: berth p50 {pct(berth, 50):.0f} ms, docker run + /health p50 {pct(base, 50):.0f} ms")
        return {"at": n, "berth_ms": berth, "docker_run_ms": base, "berth": summary(berth),
                "docker_run": summary(base)}

    def phase_rss1k(self):
        a = self.args
        d = self.results.get("density")
        if d and str(a.rss_instances) in d.get("server_rss_at_mib", {}):
            return {"instances": a.rss_instances, "server_rss_mib": d["server_rss_at_mib"][str(a.rss_instances)],
                    "server_rss_idle_mib": d["server_rss_idle_mib"], "from": "density phase"}
        s = self.server([], "rss1k")
        time.sleep(2)
        rss0 = s.rss()
        made, lock, errors = [0], threading.Lock(), []

        def client():  # a failed create is retried; more than 10 failures end the phase
            while len(errors) <= 10:
                with lock:
                    if made[0] >= a.rss_instances:
                        return
                    made[0] += 1
                try:
                    self.create(s)
                except Exception as e:  # noqa: BLE001
                    errors.append(e)
                    with lock:
                        made[0] -= 1
                    time.sleep(1)
        log(f"rss1k: creating {a.rss_instances} instances with 4 clients")
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if len(errors) > 10:
            raise errors[-1]
        time.sleep(10)
        rss = s.rss()
        self.drop(s)
        return {"instances": a.rss_instances, "server_rss_mib": round(rss / MIB, 1),
                "server_rss_idle_mib": round(rss0 / MIB, 1), "from": "own server",
                "failed_creates": [str(e)[:200] for e in errors]}

    def phase_list10k(self):
        a = self.args
        s = self.server([], "list10k")
        _, inst = self.create(s)
        s.halt()
        db = sqlite3.connect(os.path.join(s.data, "berth.db"))
        db.row_factory = sqlite3.Row
        row = dict(db.execute("SELECT * FROM instances WHERE id = ?", (inst["id"],)).fetchone())
        row.pop("seq")
        cols = list(row)
        now = int(time.time())
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        rows = []
        for i in range(a.records):
            r = dict(row)
            r["id"] = "inst_" + "".join(secrets.choice(alphabet) for _ in range(len(inst["id"]) - 5))
            r["status"], r["status_reason"] = "stopped", None
            r["created_at"] = r["updated_at"] = now - a.records + i
            if "name" in r:
                r["name"] = None
            if "gateway_token" in r and r["gateway_token"] is not None:
                r["gateway_token"] = secrets.token_hex(16)
            if "pooled" in r:
                r["pooled"] = 0
            rows.append(tuple(r[c] for c in cols))
        with db:
            db.executemany(f"INSERT INTO instances ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)
        total = db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        db.close()
        log(f"list10k: {a.records} stopped records inserted; starting the server again")
        t0 = time.monotonic()
        s.start()
        s.wait_ready(1800)
        restart = time.monotonic() - t0
        log(f"list10k: answering /healthz after {restart:.1f} s")
        t0 = time.perf_counter()
        st, page = s.call("GET", "/v1/instances", timeout=1800)
        first = ms(time.perf_counter() - t0)
        assert st == 200, (st, page)
        log(f"list10k: the first GET /v1/instances after the restart took {first / 1000:.1f} s")
        items = page.get("data", page if isinstance(page, list) else [])
        warmup = []
        for _ in range(10):  # warm-up: timed for the slowest call only (the reconciler's first passes run now)
            for path in ("/v1/instances", "/v1/instances?limit=100"):
                t = time.perf_counter()
                s.call("GET", path)
                warmup.append(ms(time.perf_counter() - t))
        default, hundred = [], []
        for _ in range(a.list_calls):
            t = time.perf_counter()
            st, _ = s.call("GET", "/v1/instances")
            default.append(ms(time.perf_counter() - t))
            t = time.perf_counter()
            st2, _ = s.call("GET", "/v1/instances?limit=100")
            hundred.append(ms(time.perf_counter() - t))
            assert st == 200 and st2 == 200
        rss = s.rss()
        cpu = cpu_secs([s.proc.pid])
        log(f"list10k: default page p50 {pct(default, 50):.1f} ms, limit=100 p50 {pct(hundred, 50):.1f} ms")
        self.drop(s)
        return {"records": total, "note": f"{a.records} stopped instances inserted directly into SQLite, "
                f"plus 1 created through the API", "default_page_items": len(items),
                "default_ms": default, "limit100_ms": hundred, "default": summary(default),
                "limit100": summary(hundred), "server_rss_mib": round(rss / MIB, 1),
                "restart_to_healthz_secs": round(restart, 2), "first_list_after_restart_ms": first,
                "slowest_list_ms": max([first, *warmup, *default, *hundred]),
                "server_cpu_secs_since_restart": round(cpu, 1)}

    # ------------------------------------------------------------ the run

    def run(self):
        a = self.args
        order = ["create", "exec", "ttft", "memory", "edge", "wake", "warm", "list10k", "density", "rss1k"]
        for name in order:
            if name not in a.only:
                continue
            if name in MAIN and self.main is None:
                self.start_main()
            log(f"== {name}")
            t0 = time.monotonic()
            try:
                self.results[name] = getattr(self, f"phase_{name}")()
                self.results[name]["phase_secs"] = round(time.monotonic() - t0, 1)
            except Skip as e:
                self.errors[name] = f"skipped: {e}"
                log(f"{name}: skipped: {e}")
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # noqa: BLE001 - the other figures still run
                traceback.print_exc()
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                self.errors[name] = f"failed: {first}"
                log(f"{name}: failed: {first}")
            if self.main is not None and not (MAIN & set(order[order.index(name) + 1:]) & set(a.only)):
                self.drop(self.main)
                self.main = None


# ---------------------------------------------------------------- report


def rows(res, errors):
    out = []

    def ratio(b, base):
        return f"{b / base:.2f}x" if base else "-"

    def add(fig, b, base, r=None, fmt="{:.0f}"):
        bs = fmt.format(b) if isinstance(b, (int, float)) else str(b)
        ds = fmt.format(base) if isinstance(base, (int, float)) else str(base)
        out.append((fig, bs, ds, r if r is not None else (ratio(b, base) if isinstance(b, (int, float))
                                                            and isinstance(base, (int, float)) else "-")))
    if "create" in res:
        c = res["create"]
        for p in ("p50", "p95"):
            add(f"create->running {p}, cold (ms, N={c['berth']['n']}) | docker run -d + /health",
                c["berth"][p], c["docker_run"][p])
    if "warm" in res:
        w = res["warm"]
        cold = res.get("create", {}).get("berth", {})
        for p in ("p50", "p99"):
            if w["claim"]:
                base = w["drained"].get(p) if w["drained"] else "-"
                add(f"warm-pool claim {p} (ms, N={w['claim']['n']}) | create, pool drained", w["claim"][p], base)
        if w["claim"] and cold:
            add("warm-pool claim p50 (ms) | cold create p50 (create phase)", w["claim"]["p50"], cold["p50"])
    if "ttft" in res:
        t = res["ttft"]
        add(f"create -> first streamed token p50 (ms, N={t['total']['n']})", t["total"]["p50"], "-")
        add("  of which the turn, to its first token, p50 (ms)", t["turn_first_token"]["p50"], "-")
    if "exec" in res:
        e = res["exec"]
        for p in ("p50", "p95"):
            add(f"exec round trip {p} (ms, N={e['berth']['n']}) | Docker Engine API exec", e["berth"][p],
                e["docker_api"][p], fmt="{:.1f}")
        add("  `docker exec` CLI p50 (ms), for scale", "-", e["docker_cli"]["p50"], fmt="{:.1f}")
    if "edge" in res:
        m = res["edge"]["median"]
        b = m["berth edge"]
        for base in ("direct", "nginx"):
            if base in m:
                d = m[base]
                add(f"edge req/s (c16) | {base}", b["rps"], d["rps"])
                add(f"edge p50 (us, c16) | {base}", b["p50"] * 1000, d["p50"] * 1000)
                add(f"edge p99 (us, c16) | {base}", b["p99"] * 1000, d["p99"] * 1000)
        add("edge p50 (us, c1) | direct", b["c1_p50"] * 1000, m["direct"]["c1_p50"] * 1000)
    if "memory" in res:
        mm = res["memory"]
        add(f"idle memory/instance, cgroup mean (MiB, M={len(mm['berth_mib'])}) | sleep infinity",
            mm["berth_mean_mib"], mm["sleep_mean_mib"], fmt="{:.2f}")
        if mm["berth_anon_mean_mib"] is not None and mm["sleep_anon_mean_mib"] is not None:
            add("  of which anon (MiB) | sleep infinity", mm["berth_anon_mean_mib"], mm["sleep_anon_mean_mib"],
                fmt="{:.2f}")
        add(f"server RSS idle / with {mm['server_instances']} instances (MiB)",
            f"{mm['server_rss_idle_mib']:.1f} / {mm['server_rss_mib']:.1f}", "-")
    if "wake" in res:
        add(f"cold wake, request -> first byte p50 (ms, N={res['wake']['wake']['n']})", res["wake"]["wake"]["p50"],
            "-")
    if "density" in res:
        d = res["density"]
        add(f"density: idle instances in {d['secs'] / 60:.1f} min ({d['clients']} clients)", d["instances"], "-",
            fmt="{}")
        add("  stopped by", (d["stopped_by"] or "-")[:70], "-")
        add("  MemAvailable before / after (MiB)", f"{d['mem_available_before_mib']} / {d['mem_available_after_mib']}",
            "-")
        if d["first50"]:
            add("  create p50, 4 clients: last 50 | first 50 (ms)", d["last50"]["p50"], d["first50"]["p50"])
        lo, cold = d.get("loaded"), res.get("create")
        if lo:
            add(f"  at {lo['at']} instances: create p50, one at a time | docker run + /health (ms)",
                lo["berth"]["p50"], lo["docker_run"]["p50"])
            if cold:
                add(f"  at {lo['at']} | on an empty host (create phase): create p50 (ms)", lo["berth"]["p50"],
                    cold["berth"]["p50"])
                add(f"  at {lo['at']} | on an empty host (create phase): docker run + /health p50 (ms)",
                    lo["docker_run"]["p50"], cold["docker_run"]["p50"])
        add(f"  idle {d['idle_secs']:.0f} s: server RSS (MiB)", d["server_rss_end_mib"], "-", fmt="{:.1f}")
        add("  idle: CPU% berth / dockerd / containerd",
            f"{d['berth_cpu_pct']} / {d['dockerd_cpu_pct']} / {d['containerd_cpu_pct']}", "-")
    if "list10k" in res:
        li = res["list10k"]
        for k, label in (("default", "default page (50)"), ("limit100", "?limit=100")):
            add(f"GET /v1/instances {label}, {li['records']} records p50 (ms)", li[k]["p50"], "-", fmt="{:.2f}")
            add(f"GET /v1/instances {label}, {li['records']} records p99 (ms)", li[k]["p99"], "-", fmt="{:.2f}")
        add("  first GET /v1/instances after the restart (ms)", li["first_list_after_restart_ms"], "-")
        if "slowest_list_ms" in li:
            add("  slowest GET /v1/instances of the phase, warm-up included (ms)", li["slowest_list_ms"], "-")
        add(f"  server RSS with {li['records']} records (MiB)", li["server_rss_mib"], "-", fmt="{:.1f}")
    if "rss1k" in res:
        r = res["rss1k"]
        add(f"server RSS with {r['instances']} instances (MiB; idle {r['server_rss_idle_mib']})", r["server_rss_mib"],
            "-", fmt="{:.1f}")
    for name, why in errors.items():
        out.append((f"{name}: {why}"[:110], "-", "-", "-"))
    return out


def table(rs):
    head = ("figure | baseline", "berth", "baseline", "ratio")
    w = [max(len(str(r[i])) for r in [head, *rs]) for i in range(4)]
    lines = [" | ".join(str(h).ljust(w[i]) for i, h in enumerate(head)), "-+-".join("-" * x for x in w)]
    for r in rs:
        lines.append(" | ".join(str(c).ljust(w[0]) if i == 0 else str(c).rjust(w[i]) for i, c in enumerate(r)))
    return "\n".join(lines)


def chart(res, path, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("no matplotlib: no chart (pip install matplotlib, or apt-get install python3-matplotlib)")
        return False
    fig, axes = plt.subplots(2, 3, figsize=(17, 10))
    fig.suptitle(title, fontsize=10)

    def box(ax, data, ttl, ylabel="ms"):
        data = [(k, v) for k, v in data if v]
        if not data:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center")
            ax.set_title(ttl)
            return
        ax.boxplot([v for _, v in data], showfliers=True)
        ax.set_xticks(range(1, len(data) + 1))
        ax.set_xticklabels([f"{k}\np50 {pct(v, 50):.1f}" for k, v in data], fontsize=8)
        ax.set_title(ttl)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    c = res.get("create", {})
    box(axes[0][0], [("berth create", c.get("berth_ms")), ("docker run\n+ /health", c.get("docker_run_ms"))],
        "create -> running, cold")
    w = res.get("warm", {})
    box(axes[0][1], [("warm claim", w.get("claim_ms")), ("pool drained", w.get("drained_ms")),
                     ("cold (create phase)", c.get("berth_ms"))], "warm-pool claim vs cold")
    e = res.get("exec", {})
    box(axes[0][2], [("berth exec", e.get("berth_ms")), ("Docker API exec", e.get("docker_api_ms")),
                     ("docker exec CLI", e.get("docker_cli_ms"))], "exec round trip (`true`)")
    ax = axes[1][0]
    m = res.get("edge", {}).get("median")
    if m:
        names = list(m)
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], [m[n]["p50"] * 1000 for n in names], 0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], [m[n]["p99"] * 1000 for n in names], 0.4, label="p99")
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"{n}\n{m[n]['rps']:.0f} req/s" for n in names], fontsize=8)
        ax.set_ylabel("us")
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
    else:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center")
    ax.set_title("edge GET /health, wrk -c16 (medians of rounds)")
    ax = axes[1][1]
    d = res.get("density", {})
    if d.get("create_ms"):
        ax.plot(range(1, len(d["create_ms"]) + 1), d["create_ms"], ".", markersize=2)
        ax.set_xlabel("instance #")
        ax.set_ylabel("create ms")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    else:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center")
    ax.set_title(f"density: create latency ({d.get('instances', 0)} instances)")
    li, t = res.get("list10k", {}), res.get("ttft", {})
    box(axes[1][2], [("list, 10k\ndefault page", li.get("default_ms")), ("list, 10k\nlimit=100", li.get("limit100_ms")),
                     ("create -> first\ntoken", t.get("total_ms"))], "list with 10k records; create -> first token")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small counts (a few minutes), for trying")
    p.add_argument("--only", help=f"comma-separated figures: {','.join(FIGURES)} (default: all)")
    p.add_argument("--image", default="berth-test/busybox:latest", help="image for berth and the baselines")
    p.add_argument("--build", choices=["release", "debug"], help="berth build (default: release if built)")
    p.add_argument("--keep", action="store_true", help="leave servers, containers and volumes in place")
    p.add_argument("--density-minutes", type=float, help="time budget of the density phase (default 10; quick 1)")
    p.add_argument("--density-clients", type=int, default=4, help="parallel creates in the density phase (4)")
    p.add_argument("--density-floor-mib", type=int, default=2048,
                   help="density stops when MemAvailable falls below this (default 2048)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench/results"), help="results directory")
    for name, full, quick, what in (
            ("creates", 20, 5, "cold creates (and docker runs) timed"), ("claims", 20, 5, "spaced warm-pool claims"),
            ("pool", 5, 3, "warm pool size K"), ("drained", 10, 4, "creates timed with the pool drained"),
            ("ttft", 10, 3, "create -> first token samples"), ("execs", 50, 15, "exec round trips each way"),
            ("edge-rounds", 3, 1, "wrk rounds per target"), ("edge-seconds", 10, 3, "seconds per wrk run"),
            ("connections", 16, 16, "wrk connections"), ("instances", 50, 10, "idle instances for memory"),
            ("idle-secs", 10, 5, "idle time before reading memory"), ("wakes", 10, 3, "cold wakes"),
            ("records", 10000, 2000, "stopped records inserted for list10k"),
            ("list-calls", 200, 50, "list calls timed each way"),
            ("rss-instances", 1000, 100, "instances for rss1k"),
            ("loaded-at", 1000, 100, "density: instances in place for the one-at-a-time creates"),
            ("loaded-creates", 10, 4, "density: creates (and docker runs) timed at --loaded-at"),
            ("density-idle-secs", 60, 15, "idle seconds for the CPU figure at the end of density")):
        p.add_argument(f"--{name}", type=int, default=None, help=f"{what} (default {full}; quick {quick})")
        p.set_defaults(**{f"_{name.replace('-', '_')}": (full, quick)})
    a = p.parse_args()
    for k in list(vars(a)):
        if k.startswith("_"):
            full, quick = getattr(a, k)
            if getattr(a, k[1:]) is None:
                setattr(a, k[1:], quick if a.quick else full)
            delattr(a, k)
    if a.density_minutes is None:
        a.density_minutes = 1 if a.quick else 10
    a.only = set(FIGURES) if not a.only else {x.strip() for x in a.only.split(",") if x.strip()}
    unknown = a.only - set(FIGURES)
    if unknown:
        p.error(f"unknown figures {sorted(unknown)}; known: {','.join(FIGURES)}")
    if docker("image", "inspect", "-f", "{{.Id}}", a.image, check=False) == "":
        p.error(f"image {a.image} is not present locally")

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    started = time.time()
    bench = Bench(a)
    rc = 0
    try:
        bench.run()
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    except SystemExit as e:
        log(f"stopped: {e}")
        rc = 1
    finally:
        bench.cleanup()
    res = bench.results
    mach = machine()
    profile = bench.bins[0]
    mach["build_profile"] = profile
    mach["berth_binary_built"] = bench.built
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    os.makedirs(a.out, exist_ok=True)
    doc = {"started_utc": stamp, "secs": round(time.time() - started, 1), "quick": a.quick,
           "command": " ".join(sys.argv), "image": a.image, "machine": mach,
           "server_flags": COMMON, "notes": bench.notes, "errors": bench.errors,
           "table": [list(r) for r in rows(res, bench.errors)], "figures": res,
           "args": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(a).items()}}
    text = json.dumps(doc, indent=1)
    for name in (f"{stamp}.json", "latest.json"):
        with open(os.path.join(a.out, name), "w") as f:
            f.write(text)
    title = (f"berth {mach['berth_commit']} ({profile}), {mach['cores']} cores {mach['cpu']}, {mach['ram']}, "
             f"docker {mach['docker']}, {'quick' if a.quick else 'full'} run {stamp}")
    png = os.path.join(a.out, "latest.png")
    have_png = chart(res, png, title)
    print()
    print(f"machine:  {mach['cpu']}, {mach['cores']} cores, {mach['ram']} RAM, kernel {mach['kernel']}")
    print(f"          docker {mach['docker']}, cgroups {mach['cgroups']}")
    print(f"berth:    {mach['berth_commit']}, {profile} build of {bench.built}; image {a.image}; {'quick' if a.quick else 'full'} run, "
          f"{doc['secs'] / 60:.1f} min")
    print(f"servers:  berth server {' '.join(COMMON)} (+ per phase: --warm-pool, --llm-base-url ...)")
    if "memory" in res:
        print(f"memory:   {res['memory']['source']}, per container")
    if "list10k" in res:
        print(f"list10k:  {res['list10k']['note']}")
    for n in bench.notes:
        print(f"note:     {n}")
    print()
    print(table(rows(res, bench.errors)))
    print()
    print(f"results:  {os.path.join(a.out, stamp + '.json')} ({len(text) // 1024} KiB), "
          f"{os.path.join(a.out, 'latest.json')}" + (f", {png}" if have_png else ""))
    if bench.errors and rc == 0:
        rc = 2
    return rc


if __name__ == "__main__":
    sys.exit(main())
