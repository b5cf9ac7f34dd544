#!/usr/bin/env python3
"""Benchmark: a long-lived agent (issue 16's figures), one run, release static binary.

Usage: sessions.py [BINARY] [TURNS]
  (default: the static release build under $CARGO_TARGET_DIR or target/, 200 turns)

Against a scripted chat-completions model this script serves (real HTTP, real SSE;
it refuses requests larger than its window, like a real model):
  1. idle RSS after start;
  2. RSS after TURNS turns in one session, with a 3,000-token window (the session is
     compacted as it goes) and with the default 128k window (it is not);
  3. compaction cost: summarising model calls per 100 turns;
  4. resume latency: reconnect (GET /v1/responses/{id}?stream=true&starting_after=N)
     to the first replayed event, of a turn still running (its log in memory) and of a
     finished turn after a restart of the agent (read from the store) — beside, in the
     same run, POST /v1/responses with stream=true to its first event.
It measures, it does not assert; the goal named in the issue is printed beside.
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TARGET = os.environ.get("CARGO_TARGET_DIR", "target")
BIN = sys.argv[1] if len(sys.argv) > 1 else f"{TARGET}/static-agent/x86_64-unknown-linux-gnu/release/berth-agent"
TURNS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
WINDOW = 3000
STATS = {"summaries": 0, "turn_calls": 0, "too_big": 0}


class Model(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        try:
            self.answer()
        except (BrokenPipeError, ConnectionResetError):
            pass  # a client that read its first event and left (the resume figures)

    def answer(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        msgs = body.get("messages", [])
        size = sum(len(m.get("content") or "") for m in msgs if isinstance(m.get("content"), str)) // 4
        system = msgs[0].get("content", "") if msgs else ""
        limit = body["model"] == "small" and WINDOW or 128_000
        if size > limit:
            STATS["too_big"] += 1
            data = json.dumps({"error": {"message": "context length exceeded"}}).encode()
            self.send_response(400)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        slow = "slowly" in (msgs[-1].get("content") or "")
        if system.startswith("You compact conversations"):
            STATS["summaries"] += 1
            words = ["SUMMARY: the user asked numbered questions; answers were given."]
        else:
            STATS["turn_calls"] += 1
            words = [f"answer {i} " for i in range(40 if slow else 8)] + ["x" * 120]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def chunk(obj):
            data = f"data: {json.dumps(obj)}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        for w in words:
            chunk({"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]})
            if slow:
                time.sleep(0.05)
        chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        chunk({"choices": [], "usage": {"prompt_tokens": size, "completion_tokens": 20, "total_tokens": size + 20}})
        data = b"data: [DONE]\n\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n")
        self.wfile.flush()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Agent:
    def __init__(self, data, model_url, window_spec):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, RUST_LOG="warn", BERTH_MODEL="small", BERTH_LLM_BASE_URL=model_url,
                   BERTH_LLM_API_KEY="k", BERTH_CONTEXT_WINDOW=window_spec, BERTH_AGENT_WORKDIR=data)
        self.p = subprocess.Popen([BIN, "--listen", f"127.0.0.1:{self.port}", "--data", data], env=env)
        for _ in range(2000):
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1).read()
                return
            except OSError:
                time.sleep(0.005)
        raise SystemExit("the agent did not start")

    def post(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())

    def first_event_ms(self, req):
        """Time from sending `req` to the first `event:` line of its SSE answer."""
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=60) as r:
            for line in r:
                if line.startswith(b"event:"):
                    return (time.perf_counter() - t0) * 1000
        return float("nan")

    def stop(self):
        self.p.terminate()
        self.p.wait()


def long_session(model_url, model, turns):
    data = tempfile.mkdtemp()
    agent = Agent(data, model_url, f"small={WINDOW}")
    idle = None
    try:
        time.sleep(1.0)
        idle = rss_mib(agent.p.pid)
        before = dict(STATS)
        session = None
        failed = 0
        for n in range(turns):
            body = {"model": model, "input": f"question {n}: " + "please consider this carefully " * 6}
            if session:
                body["session_id"] = session
            r = agent.post("/v1/responses", body)
            session = r["session_id"]
            failed += r["status"] != "completed"
        after = rss_mib(agent.p.pid)
        summaries = STATS["summaries"] - before["summaries"]
        return idle, after, summaries, failed
    finally:
        agent.stop()
        shutil.rmtree(data, ignore_errors=True)


def resume_latency(model_url, runs=20):
    data = tempfile.mkdtemp()
    agent = Agent(data, model_url, f"small={WINDOW}")
    fresh, live, stored = [], [], []
    finished = []
    try:
        for _ in range(runs):
            body = json.dumps({"model": "big", "input": "answer slowly", "stream": True}).encode()
            req = urllib.request.Request(agent.url + "/v1/responses", data=body, method="POST",
                                         headers={"content-type": "application/json"})
            fresh.append(agent.first_event_ms(req))
            r = agent.post("/v1/responses", {"model": "big", "input": "answer slowly", "background": True})
            time.sleep(0.3)
            req = urllib.request.Request(f"{agent.url}/v1/responses/{r['id']}?stream=true&starting_after=5")
            live.append(agent.first_event_ms(req))
            finished.append(r["id"])
        time.sleep(3)
    finally:
        agent.stop()
    agent = Agent(data, model_url, f"small={WINDOW}")
    try:
        for rid in finished:
            req = urllib.request.Request(f"{agent.url}/v1/responses/{rid}?stream=true&starting_after=5")
            stored.append(agent.first_event_ms(req))
    finally:
        agent.stop()
        shutil.rmtree(data, ignore_errors=True)
    return fresh, live, stored


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Model)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    model_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    print(f"berth-agent {BIN}; scripted model with a {WINDOW}-token window ('small') and a 128k one ('big')")
    idle, small_rss, summaries, failed_small = long_session(model_url, "small", TURNS)
    _, big_rss, _, failed_big = long_session(model_url, "big", TURNS)
    fresh, live, stored = resume_latency(model_url)
    med = statistics.median
    print(f"{'figure':<58}{'measured':>14}{'goal / beside':>22}")
    print(f"{'idle RSS (1 s after start)':<58}{idle:>10.2f} MiB{'12 MiB':>22}")
    print(f"{f'RSS after {TURNS} turns, {WINDOW}-token window (compacted)':<58}{small_rss:>10.2f} MiB{'12 MiB':>22}")
    print(f"{f'RSS after {TURNS} turns, 128k window (not compacted)':<58}{big_rss:>10.2f} MiB{'12 MiB':>22}")
    print(f"{'turns that did not complete (small / big)':<58}{f'{failed_small} / {failed_big}':>14}")
    print(f"{'summarising calls per 100 turns (small window)':<58}{summaries * 100 / TURNS:>14.1f}"
          f"{f'{TURNS} turn calls':>22}")
    print(f"{'requests the model refused as too big':<58}{STATS['too_big']:>14}")
    print(f"{'resume a running turn: reconnect → first event, p50':<58}{med(live):>11.2f} ms"
          f"{f'new stream {med(fresh):.2f} ms':>22}")
    print(f"{'resume after an agent restart (from the store), p50':<58}{med(stored):>11.2f} ms"
          f"{f'new stream {med(fresh):.2f} ms':>22}")


if __name__ == "__main__":
    main()
