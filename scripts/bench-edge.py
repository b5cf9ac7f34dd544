#!/usr/bin/env python3
"""Edge benchmark: berth's edge beside direct access and nginx, measured in the same run.

  1. Small fixed response (the agent's GET /health, ~90 bytes): req/s and p50/p99 latency
     with `wrk -t1 -c16` directly to the agent, through berth's edge, and through nginx
     (Debian's nginx-light as a keep-alive reverse proxy to the same agent: proxy_http_version
     1.1, upstream keepalive, `worker_processes auto` as Debian ships it; berth with its
     default edge threads, one per core). Rounds interleave the three targets; medians are
     reported. Also the CPU time each proxy spends per request (from /proc), and the
     latency of one connection at a time (`wrk -c1`), where added latency is not queueing.
  2. SSE time to first event and WebSocket echo round trip, direct vs through the edge
     (an asyncio SSE + WebSocket server inside a Debian instance, on an exposed port).
  3. Cold wake: request in -> first byte for an idle-stopped cold_start instance (p50).
  4. berth server RSS idle and with N open idle WebSockets through the edge.

It starts its own `berth server` (release build) and nginx on free ports and removes
everything it made at the end. Needs wrk and nginx-light (apt-get install wrk nginx-light)
and the berth/base:bookworm base image (scripts/build-images.sh).

    cargo build --release -p berth-cli && scripts/build-agent.sh --release
    scripts/bench-edge.py                  # 3 rounds of 10 s, 1000 WebSockets
"""

import argparse
import asyncio
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

# scripts/ is on sys.path when run as a script
from benchlib import Nginx, cpu_secs, free_port, http_first_byte, log, release_loops, vm_rss, wrk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

APP = r'''
import asyncio, base64, hashlib, sys, time
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
async def handle(r, w):
    try:
        head = await r.readuntil(b"\r\n\r\n")
    except Exception:
        w.close(); return
    lines = head.decode().split("\r\n")
    path = lines[0].split(" ")[1]
    hdrs = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
    if path.startswith("/sse"):
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        ev = b"data: %f\n\n" % time.time()
        w.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(ev), ev)); await w.drain(); w.close(); return
    if path.startswith("/ws"):
        acc = base64.b64encode(hashlib.sha1(hdrs["sec-websocket-key"].encode() + GUID).digest())
        w.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: " + acc + b"\r\n\r\n")
        await w.drain()
        try:
            while True:
                h = await r.readexactly(2)
                n = h[1] & 0x7F
                if n == 126: n = int.from_bytes(await r.readexactly(2), "big")
                mask = await r.readexactly(4)
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(await r.readexactly(n)))
                if h[0] & 0x0F == 8: break
                w.write(bytes([0x80 | (h[0] & 0x0F), len(data)]) + data); await w.drain()
        except Exception:
            pass
        w.close(); return
    w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"); await w.drain(); w.close()
async def main():
    s = await asyncio.start_server(handle, "0.0.0.0", int(sys.argv[1]), backlog=4096)
    await s.serve_forever()
asyncio.run(main())
'''


class Api:
    def __init__(self, base, key):
        self.base, self.key = base, key

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("authorization", f"Bearer {self.key}")
        if data is not None:
            req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read() or b"null")


def sse_first_event(host_port, host_header, headers=()):
    h, p = host_port
    with socket.create_connection((h, p), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        req = f"GET /sse HTTP/1.1\r\nHost: {host_header}\r\n" + "".join(f"{x}\r\n" for x in headers) + "\r\n"
        t0 = time.perf_counter()
        s.sendall(req.encode())
        buf = b""
        while b"data:" not in buf:
            chunk = s.recv(4096)
            assert chunk, buf
            buf += chunk
        return time.perf_counter() - t0


async def ws_open(host_port, host_header, headers=()):
    r, w = await asyncio.open_connection(*host_port)
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    req = (f"GET /ws HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n" + "".join(f"{x}\r\n" for x in headers) + "\r\n")
    w.write(req.encode())
    head = await r.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    sock = w.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return r, w


async def ws_rtt(host_port, host_header, headers, n):
    r, w = await ws_open(host_port, host_header, headers)
    times = []
    for _ in range(n):
        payload = b"ping"
        mask = secrets.token_bytes(4)
        frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        t0 = time.perf_counter()
        w.write(frame)
        await w.drain()
        head = await r.readexactly(2)
        await r.readexactly(head[1] & 0x7F)
        times.append(time.perf_counter() - t0)
    w.close()
    return times


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="berth-bench-edge-")
        self.key = "sk_" + secrets.token_hex(20)
        self.install = "bench-" + secrets.token_hex(5)
        self.procs = []

    def start_server(self):
        a = self.args
        self.api_port, self.edge_port = free_port(), free_port()
        cmd = [a.berth_bin, "server", "--agent-templates", "none", "--data", os.path.join(self.tmp, "data"),
               "--listen", f"127.0.0.1:{self.api_port}", "--edge-listen", f"127.0.0.1:{self.edge_port}",
               "--base-image", "berth/base:bookworm", "--agent-bin", a.agent_bin,
               "--network", "berth-bench", "--reconcile-interval-ms", "300", "--min-idle-timeout-secs", "1"]
        if a.access_log == "on":
            cmd += ["--access-log", os.path.join(self.tmp, "access.log")]
        if a.edge_threads:
            cmd += ["--edge-threads", str(a.edge_threads)]
        env = dict(os.environ, BERTH_ADMIN_KEY=self.key, BERTH_INSTALL_ID=self.install, RUST_LOG="warn")
        self.server = subprocess.Popen(cmd, env=env, stdout=open(os.path.join(self.tmp, "server.log"), "w"),
                                       stderr=subprocess.STDOUT)
        self.procs.append(self.server)
        self.api = Api(f"http://127.0.0.1:{self.api_port}", self.key)
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/healthz", timeout=1)
                return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError("berth server did not start")

    def start_nginx(self, upstream):
        self.nginx = Nginx(upstream, self.tmp, self.args.nginx_workers)
        self.nginx_port = self.nginx.port
        self.procs.append(self.nginx.proc)

    def cleanup(self):
        for p in self.procs:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=25)
            except Exception:
                p.kill()
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=berth.install={self.install}"],
                             capture_output=True, text=True).stdout.split()
        for i in range(0, len(ids), 8):
            subprocess.run(["docker", "rm", "-f", *ids[i:i + 8]], capture_output=True)
        vols = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=berth.install={self.install}"],
                              capture_output=True, text=True).stdout.split()
        for i in range(0, len(vols), 8):
            subprocess.run(["docker", "volume", "rm", *vols[i:i + 8]], capture_output=True)
        release_loops(self.tmp)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def container_ip(self, inst_id):
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        return subprocess.run(["docker", "inspect", "-f", fmt, f"berth-{inst_id}"], capture_output=True,
                              text=True, check=True).stdout.strip()

    def run(self):
        a = self.args
        self.start_server()
        inst = self.api.call("POST", "/v1/instances", {})
        label = inst["id"][5:]
        ip = self.container_ip(inst["id"])
        self.start_nginx(f"{ip}:3737")
        host = f"{label}.localhost:{self.edge_port}"
        targets = {
            "direct": (f"http://{ip}:3737/health", []),
            "berth edge": (f"http://127.0.0.1:{self.edge_port}/health",
                           [f"Host: {host}", f"Authorization: Bearer {self.key}"]),
            "nginx": (f"http://127.0.0.1:{self.nginx_port}/health", []),
        }
        nginx_pids = self.nginx.pids()
        procs = {"direct": [], "berth edge": [self.server.pid], "nginx": nginx_pids}
        results = {k: [] for k in targets}
        single = {k: [] for k in targets}
        for name, (url, hdrs) in targets.items():  # warm-up
            wrk(url, hdrs, 2, a.connections)
        for rnd in range(a.rounds):
            for name, (url, hdrs) in targets.items():
                before = cpu_secs(procs[name])
                r = wrk(url, hdrs, a.seconds, a.connections)
                r["cpu_us"] = (cpu_secs(procs[name]) - before) / r["requests"] * 1e6 if procs[name] else 0.0
                assert r["non2xx"] == 0, (name, r)
                results[name].append(r)
                log(f"round {rnd + 1} {name}: {r['rps']:.0f} req/s p50 {r['p50'] * 1000:.0f} us")
                single[name].append(wrk(url, hdrs, max(2, a.seconds // 2), 1))
        med = {k: {m: statistics.median(x[m] for x in v) for m in ("rps", "p50", "p99", "cpu_us")}
               for k, v in results.items()}
        for k, v in single.items():
            med[k]["c1_p50"] = statistics.median(x["p50"] for x in v)
            med[k]["c1_p99"] = statistics.median(x["p99"] for x in v)

        # SSE and WebSockets against an asyncio app in a Debian instance.
        app = self.api.call("POST", "/v1/instances", {"expose": [8080]})
        app_ip = self.container_ip(app["id"])
        handle = [p for p in app["ports"] if p["port"] == 8080][0]["url"].split("//")[1]
        self.api.call("POST", f"/v1/instances/{app['id']}/exec",
                      {"command": ["sh", "-c", "cat > /tmp/app.py"], "stdin": APP})
        self.api.call("POST", f"/v1/instances/{app['id']}/exec",
                      {"command": ["sh", "-c", "nohup python3 /tmp/app.py 8080 >/tmp/app.log 2>&1 &"]})
        time.sleep(1.0)
        edge = ("127.0.0.1", self.edge_port)
        auth = [f"Authorization: Bearer {self.key}"]
        direct = (app_ip, 8080)
        sse = {"direct": [], "edge": []}
        for _ in range(a.samples):
            sse["direct"].append(sse_first_event(direct, f"{app_ip}:8080"))
            sse["edge"].append(sse_first_event(edge, handle, auth))
        ws = {
            "direct": asyncio.run(ws_rtt(direct, f"{app_ip}:8080", [], a.samples * 10)),
            "edge": asyncio.run(ws_rtt(edge, handle, auth, a.samples * 10)),
        }

        # Cold wake: request in -> first byte, for an instance stopped for idleness.
        cold = self.api.call("POST", "/v1/instances", {"lifecycle": {"mode": "cold_start", "idle_timeout_secs": 1}})
        cold_host = f"{cold['id'][5:]}.localhost:{self.edge_port}"
        wakes = []
        for _ in range(a.wakes):
            deadline = time.time() + 60
            while self.api.call("GET", f"/v1/instances/{cold['id']}")["status"] != "stopped":
                assert time.time() < deadline, "never idled"
                time.sleep(0.2)
            wakes.append(http_first_byte(edge, cold_host, "/health", auth))

        # RSS with N idle WebSockets open through the edge.
        rss_idle = vm_rss(self.server.pid)

        async def hold_many():
            conns = []
            for i in range(0, a.websockets, 50):
                conns += await asyncio.gather(*[ws_open(edge, handle, auth) for _ in range(min(50, a.websockets - i))])
            await asyncio.sleep(2)
            rss = vm_rss(self.server.pid)
            for _, w in conns:
                w.close()
            return rss

        rss_ws = asyncio.run(hold_many())
        self.report(med, sse, ws, wakes, rss_idle, rss_ws)

    def report(self, med, sse, ws, wakes, rss_idle, rss_ws):
        a = self.args
        d, b, n = med["direct"], med["berth edge"], med["nginx"]
        print(f"\n## Edge benchmark ({a.rounds} rounds x {a.seconds} s, wrk -t1 -c{a.connections}, "
              f"GET /health of the agent, {os.cpu_count()} cores)\n")
        print("| target | req/s (c16) | p50 (c16) | p99 (c16) | proxy CPU per request | p50 (c1) | p99 (c1) |")
        print("|---|---|---|---|---|---|---|")
        for name, m in med.items():
            cpu = f"{m['cpu_us']:.1f} us" if m["cpu_us"] else "-"
            print(f"| {name} | {m['rps']:.0f} | {m['p50'] * 1000:.0f} us | {m['p99'] * 1000:.0f} us | {cpu} | "
                  f"{m['c1_p50'] * 1000:.0f} us | {m['c1_p99'] * 1000:.0f} us |")
        print(f"\nberth / nginx req/s: {b['rps'] / n['rps']:.2f}x (goal >= 1.2x); "
              f"added p50 over direct, one connection: berth {(b['c1_p50'] - d['c1_p50']) * 1000:.0f} us "
              f"(goal <= 80 us), nginx {(n['c1_p50'] - d['c1_p50']) * 1000:.0f} us; under load (c16): "
              f"berth {(b['p50'] - d['p50']) * 1000:.0f} us, nginx {(n['p50'] - d['p50']) * 1000:.0f} us\n")
        ms = lambda xs: f"{statistics.median(xs) * 1000:.2f} ms"
        print("| | direct | through the edge |")
        print("|---|---|---|")
        print(f"| SSE time to first event, p50 of {a.samples} | {ms(sse['direct'])} | {ms(sse['edge'])} |")
        print(f"| WebSocket echo round trip, p50 of {len(ws['direct'])} | {ms(ws['direct'])} | {ms(ws['edge'])} |")
        print(f"\ncold wake (request in -> first byte), p50 of {len(wakes)}: {ms(wakes)} "
              f"(min {min(wakes) * 1000:.0f}, max {max(wakes) * 1000:.0f} ms; goal <= 500 ms)")
        per = (rss_ws - rss_idle) / max(1, a.websockets) / 1024
        print(f"berth server RSS: {rss_idle / 2**20:.1f} MiB idle, {rss_ws / 2**20:.1f} MiB with "
              f"{a.websockets} open WebSockets ({per:.1f} KiB each)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--berth-bin", default=os.path.join(ROOT, "target/release/berth"))
    p.add_argument("--agent-bin", default=os.path.join(ROOT, "target/static-agent/x86_64-unknown-linux-gnu/release/berth-agent"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--wakes", type=int, default=10)
    p.add_argument("--websockets", type=int, default=1000)
    p.add_argument("--nginx-workers", default="auto", help="nginx worker_processes (Debian's default: auto)")
    p.add_argument("--access-log", choices=["on", "off"], default="on",
                   help="berth's access log (nginx's is off in this bench)")
    p.add_argument("--edge-threads", type=int, help="berth --edge-threads (default: berth's, one per core)")
    args = p.parse_args()
    for tool in ("wrk", "nginx", "docker"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (apt-get install wrk nginx-light docker.io)")
    b = Bench(args)
    try:
        b.run()
    finally:
        b.cleanup()


if __name__ == "__main__":
    main()
