#!/usr/bin/env python3
"""Benchmark: start-to-/health time and idle RSS of a berth-agent binary.

Usage: startup_rss.py [BINARY] [RUNS]
  (default: target/static-agent/x86_64-unknown-linux-gnu/release/berth-agent, 20 runs)

Prints a table beside the targets of issue 4 (start to /health <= 50 ms,
idle RSS <= 8 MiB). It measures, it does not assert.
"""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/static-agent/x86_64-unknown-linux-gnu/release/berth-agent"
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def one_run(idle_secs):
    data = tempfile.mkdtemp()
    port = free_port()
    env = dict(os.environ, RUST_LOG="warn", BERTH_MODEL="m", BERTH_LLM_BASE_URL="http://127.0.0.1:9/v1")
    t0 = time.perf_counter()
    p = subprocess.Popen([BIN, "--listen", f"127.0.0.1:{port}", "--data", data], env=env)
    try:
        while not health(port):
            time.sleep(0.0005)
        started_ms = (time.perf_counter() - t0) * 1000
        time.sleep(idle_secs)
        return started_ms, rss_kib(p.pid)
    finally:
        p.terminate()
        p.wait()
        shutil.rmtree(data, ignore_errors=True)


def main():
    starts, rss = [], []
    for i in range(RUNS):
        ms, kib = one_run(idle_secs=1.0 if i < 3 else 0.05)
        starts.append(ms)
        if i < 3:
            rss.append(kib)
    print(f"berth-agent {BIN} ({RUNS} runs)")
    print(f"{'metric':<28}{'measured':>12}{'target':>10}")
    print(f"{'start to /health, median':<28}{statistics.median(starts):>9.1f} ms{'50 ms':>10}")
    print(f"{'start to /health, max':<28}{max(starts):>9.1f} ms{'':>10}")
    print(f"{'idle RSS after 1 s, max':<28}{max(rss) / 1024:>8.2f} MiB{'8 MiB':>10}")


if __name__ == "__main__":
    main()
