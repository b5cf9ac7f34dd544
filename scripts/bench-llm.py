#!/usr/bin/env python3
"""Managed LLM proxy overhead (issue 11): a streamed chat completion from a local
upstream, directly and through berth's proxy (with an instance's token, metered and
capped), in the same run, calls interleaved.

    scripts/bench-llm.py [--calls N] [--tokens N] [--build release|debug]

Prints time to first token (request sent → first content event) and the time per
streamed token, both ways, and the proxy's overhead per call and per token. The upstream
is a small HTTP/1.1 server in this script answering SSE chat chunks as fast as it can.
"""
import argparse, http.client, json, socket, statistics, threading, time
from http.server import ThreadingHTTPServer

from benchlib import ChatUpstream as Upstream, Server, pct


def stream(host, port, path, token, n, burst=False, pace_ms=0):
    """(time to first content event, total time) of one streamed call, new connection each."""
    body = json.dumps({"model": "bench-model", "stream": True, "n_tokens": n, "max_tokens": n, "burst": burst,
                       "pace_ms": pace_ms,
                       "messages": [{"role": "user", "content": "go"}]})
    c = http.client.HTTPConnection(host, port, timeout=60)
    c.connect()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.perf_counter()
    c.request("POST", path, body=body, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200, (r.status, r.read()[:300])
    first = None
    seen = 0
    while True:
        line = r.readline()
        if not line:
            break
        if b'"tok ' in line:
            seen += 1
            if first is None:
                first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    c.close()
    assert seen == n, (seen, n)
    return first, total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--tokens", type=int, default=500)
    ap.add_argument("--image", default="berth-test/busybox:latest")
    ap.add_argument("--build", choices=["release", "debug"])
    args = ap.parse_args()
    up = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=up.serve_forever, daemon=True).start()
    up_port = up.server_address[1]
    s = Server(args.image, ["--llm-base-url", f"http://127.0.0.1:{up_port}/v1", "--llm-price", "bench-model=1,1",
                            "--llm-proxy-port", "0"], build=args.build, prefix="berth-bench-llm-")
    try:
        s.wait_ready()
        st, inst = s.call("POST", "/v1/instances", {"budget": {"managed_cap_usd": 1000}})
        assert st == 201, inst
        st, out = s.call("POST", f"/v1/instances/{inst['id']}/exec",
                         {"command": ["sh", "-c", "echo $BERTH_LLM_BASE_URL $BERTH_LLM_API_KEY"]})
        base, token = out["stdout"].split()
        host, port = base.split("//")[1].split("/")[0].split(":")
        port = int(port)
        direct, proxied, burst_d, burst_p, paced_d, paced_p = [], [], [], [], [], []
        paced_tokens = 100
        for i in range(args.calls + 3):
            d = stream("127.0.0.1", up_port, "/v1/chat/completions", "x", args.tokens)
            p = stream(host, port, "/v1/chat/completions", token, args.tokens)
            bd = stream("127.0.0.1", up_port, "/v1/chat/completions", "x", args.tokens, burst=True)
            bp = stream(host, port, "/v1/chat/completions", token, args.tokens, burst=True)
            pd = stream("127.0.0.1", up_port, "/v1/chat/completions", "x", paced_tokens, pace_ms=1)
            pp = stream(host, port, "/v1/chat/completions", token, paced_tokens, pace_ms=1)
            if i >= 3:  # warm-up
                paced_d.append(pd)
                paced_p.append(pp)
                direct.append(d)
                proxied.append(p)
                burst_d.append(bd)
                burst_p.append(bp)
        ttft_d = [f * 1000 for f, _ in direct]
        ttft_p = [f * 1000 for f, _ in proxied]
        per_tok_d = [(t - f) * 1000 / (args.tokens - 1) for f, t in direct]
        per_tok_p = [(t - f) * 1000 / (args.tokens - 1) for f, t in proxied]
        time.sleep(0.5)  # the last stream settles just after its end
        st, after = s.call("GET", f"/v1/instances/{inst['id']}")
        print(f"berth {s.profile} build; {args.calls} streamed calls of {args.tokens} tokens each way, interleaved")
        print(f"{'':28}{'direct':>12}{'via proxy':>12}{'overhead':>12}")
        for name, d, p in (("time to first token p50 ms", ttft_d, ttft_p),):
            print(f"{name:28}{statistics.median(d):12.3f}{statistics.median(p):12.3f}"
                  f"{statistics.median(p) - statistics.median(d):12.3f}")
        print(f"{'time to first token p90 ms':28}{pct(ttft_d, 90):12.3f}{pct(ttft_p, 90):12.3f}"
              f"{pct(ttft_p, 90) - pct(ttft_d, 90):12.3f}")
        md, mp = statistics.median(per_tok_d), statistics.median(per_tok_p)
        print(f"{'per token, trickled, p50 ms':28}{md:12.4f}{mp:12.4f}{mp - md:12.4f}")
        bd = statistics.median([t * 1000 / args.tokens for _, t in burst_d])
        bp = statistics.median([t * 1000 / args.tokens for _, t in burst_p])
        print(f"{'per token, burst, p50 ms':28}{bd:12.4f}{bp:12.4f}{bp - bd:12.4f}")
        pd_ = statistics.median([(t - f) * 1000 / (paced_tokens - 1) for f, t in paced_d])
        pp_ = statistics.median([(t - f) * 1000 / (paced_tokens - 1) for f, t in paced_p])
        print(f"{'per token, paced 1 ms, p50 ms':28}{pd_:12.4f}{pp_:12.4f}{pp_ - pd_:12.4f}")
        print("(trickled: the upstream writes each token as fast as it can, one write each, so every token\n"
              " wakes the proxy and the client; burst: the whole answer in one write, the proxy's own work\n"
              " per token; paced: a token every 1 ms, as a model streams, the delay the proxy adds per token)")
        used = after["budget"]["managed_used_micros"]
        calls = 2 * (args.calls + 3)
        used -= (args.calls + 3) * (5 + paced_tokens)
        print(f"metered: {used} micros for {calls} calls (expected {calls * (5 + args.tokens)} at $1/M tokens)")
    finally:
        s.stop()
        up.shutdown()


if __name__ == "__main__":
    main()
