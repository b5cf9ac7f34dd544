#!/usr/bin/env python3
"""Benchmark: what the agent adds per streamed token.

Usage: stream_overhead.py [BINARY] [TOKENS]
  (default: target/static-agent/x86_64-unknown-linux-gnu/release/berth-agent, 5000 tokens)

A local OpenAI-compatible server streams TOKENS chat chunks as fast as it can.
The same client reads them once straight from that server and once through the
agent (`POST /v1/responses`, `stream: true`); the difference per token is the
agent's overhead. Prints a table beside the target of issue 4 (<= 0.1 ms/token).
"""

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/static-agent/x86_64-unknown-linux-gnu/release/berth-agent"
TOKENS = int(sys.argv[2]) if len(sys.argv) > 2 else 5000


def chunk(delta, finish=None):
    body = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n".encode()


STREAM = b"".join(chunk({"content": f"t{i} "}) for i in range(TOKENS)) + chunk({}, "stop") + b"data: [DONE]\n\n"


class Model(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        # One write per token, so each is its own chunk on the wire.
        for part in STREAM.split(b"\n\n")[:-1]:
            data = part + b"\n\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args):
        pass


def read_stream(port, path, body, count_marker):
    """Seconds from the first to the last token event, and how many were seen."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    resp = conn.getresponse()
    first = last = None
    seen = 0
    for line in resp:
        if line.startswith(b"data: ") and count_marker in line:
            now = time.perf_counter()
            first = first or now
            last = now
            seen += 1
    conn.close()
    return (last - first), seen


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Model)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    model_port = server.server_address[1]
    data = tempfile.mkdtemp()
    port = free_port()
    env = dict(os.environ, RUST_LOG="warn", BERTH_MODEL="m", BERTH_LLM_BASE_URL=f"http://127.0.0.1:{model_port}/v1")
    agent = subprocess.Popen([BIN, "--listen", f"127.0.0.1:{port}", "--data", data], env=env)
    try:
        time.sleep(0.3)
        direct, n1 = min(read_stream(model_port, "/v1/chat/completions", {}, b'"content"') for _ in range(3))
        via, n2 = min(
            read_stream(port, "/v1/responses", {"input": "go", "stream": True}, b"output_text.delta") for _ in range(3)
        )
    finally:
        agent.terminate()
        agent.wait()
        shutil.rmtree(data, ignore_errors=True)
    assert n1 == n2 == TOKENS, (n1, n2)
    per_token_ms = (via - direct) / TOKENS * 1000
    print(f"berth-agent {BIN} ({TOKENS} tokens, best of 3)")
    print(f"{'metric':<32}{'measured':>14}{'target':>10}")
    print(f"{'provider stream, direct':<32}{direct * 1000:>11.1f} ms")
    print(f"{'same stream through the agent':<32}{via * 1000:>11.1f} ms")
    print(f"{'agent overhead per token':<32}{per_token_ms:>11.4f} ms{'0.1 ms':>10}")


if __name__ == "__main__":
    main()
