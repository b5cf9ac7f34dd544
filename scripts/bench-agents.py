#!/usr/bin/env python3
"""Agent templates (issue 12), one run:

  1. build time of the `claude-code` agent template's image: cold (every agent image
     and every dangling image removed first, so apt and npm run again) and cached (a
     second server start), from server start to the template saying `ready`;
  2. time to first token through the edge, Claude Code, Codex, Hermes and OpenClaw vs
     berth-agent, on the same scripted model (a server this script runs: Anthropic
     Messages for Claude Code and berth-agent, the OpenAI Responses API for Codex, chat
     completions for Hermes and OpenClaw, the same words), turns alternating between the
     instances; each turn a new session (the first turn of each instance apart: it
     starts OpenClaw's Gateway); then each instance's memory after its turns.

    scripts/bench-agents.py [--turns N] [--build release|debug] [--cached-only]

Uses the release build when there is one (else debug; CARGO_TARGET_DIR is honoured),
a running dockerd, and berth/base:bookworm (scripts/build-images.sh).
"""
import argparse, json, subprocess, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from benchlib import Server, pct, streamed_turn

IMAGE = "berth/agent-claude-code:latest"
BASE = "berth/base:bookworm"
WORDS = ["the ", "scripted ", "model ", "says ", "hello"]


class Model(BaseHTTPRequestHandler):
    """A streaming Anthropic Messages endpoint answering every call with WORDS."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        model = body.get("model", "m")
        if self.path.endswith("/responses"):
            return self.responses_api(model)
        if self.path.endswith("/chat/completions"):
            return self.chat(model)
        if not body.get("stream"):
            out = json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                              "content": [{"type": "text", "text": "".join(WORDS)}], "stop_reason": "end_turn",
                              "usage": {"input_tokens": 5, "output_tokens": 5}}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()

        def ev(kind, data):
            self.wfile.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()
        ev("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "usage": {"input_tokens": 5, "output_tokens": 1}}})
        ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        for w in WORDS:
            ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}})
        ev("content_block_stop", {"type": "content_block_stop", "index": 0})
        ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}})
        ev("message_stop", {"type": "message_stop"})
        self.close_connection = True


    def chat(self, model):
        """The same words as OpenAI chat completion chunks (Hermes's protocol)."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()

        def chunk(delta, finish=None, **extra):
            data = dict({"id": "c1", "object": "chat.completion.chunk", "model": model,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}, **extra)
            self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()
        for w in WORDS:
            chunk({"content": w})
        chunk({}, "stop", usage={"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def responses_api(self, model):
        """The same words as an OpenAI Responses stream (Codex's protocol)."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        seq = iter(range(1000))

        def ev(data):
            data["sequence_number"] = next(seq)
            self.wfile.write(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()
        resp = {"id": "resp_1", "object": "response", "status": "in_progress", "model": model, "output": []}
        ev({"type": "response.created", "response": resp})
        msg = {"type": "message", "id": "msg_1", "role": "assistant", "status": "in_progress", "content": []}
        ev({"type": "response.output_item.added", "output_index": 0, "item": msg})
        for w in WORDS:
            ev({"type": "response.output_text.delta", "output_index": 0, "item_id": "msg_1", "content_index": 0,
                "delta": w})
        done = dict(msg, status="completed", content=[{"type": "output_text", "text": "".join(WORDS), "annotations": []}])
        ev({"type": "response.output_item.done", "output_index": 0, "item": done})
        ev({"type": "response.completed", "response": dict(resp, status="completed", output=[done], usage={
            "input_tokens": 5, "output_tokens": 5, "total_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}})})
        self.close_connection = True


def gateway(network):
    return subprocess.run(["docker", "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", network],
                          capture_output=True, text=True, check=True).stdout.strip()


def until_ready(server, name="claude-code", limit=1800):
    """Seconds until the agent template is ready (from now)."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        try:
            st, t = server.call("GET", f"/v1/templates/{name}")
        except OSError:
            st, t = 0, None
        if st == 200 and t["status"] == "ready":
            return time.monotonic() - started
        if st == 200 and t["status"] == "failed":
            raise SystemExit(f"the {name} image did not build: {t['build']}")
        time.sleep(0.2)
    raise SystemExit(f"the {name} image is still building")


def ttft(server, label, body):
    """(ms to the first text delta, ms to the end) of one streamed turn through the edge."""
    try:
        return streamed_turn(server, label, body)
    except RuntimeError as e:
        raise SystemExit(str(e))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--build", choices=["release", "debug"])
    ap.add_argument("--cached-only", action="store_true", help="skip the cold build (keep the image)")
    args = ap.parse_args()
    flags = ["--agent-templates", "claude-code"]

    cold = None
    if not args.cached_only:
        # Every agent image goes (the others share its layers), so apt and npm run again.
        for name in ("hermes", "claude-code", "codex", "openclaw", "all"):
            subprocess.run(["docker", "rmi", "-f", f"berth/agent-{name}:latest"], capture_output=True)
        # The classic builder's cache is the intermediate images they leave: dangling ones go too.
        subprocess.run(["docker", "image", "prune", "-f"], capture_output=True)
        server = Server(BASE, flags, args.build)
        try:
            server.wait_ready()
            cold = until_ready(server)
        finally:
            server.stop()
    server = Server(BASE, ["--agent-templates", "claude-code,codex,hermes,openclaw"], args.build)
    model = ThreadingHTTPServer(("0.0.0.0", 0), Model)
    threading.Thread(target=model.serve_forever, daemon=True).start()
    try:
        server.wait_ready()
        cached = until_ready(server)
        # Built after claude-code, one after the other (cold after a cold run, but for
        # the Debian + npm layer they share with it).
        codex = cached + until_ready(server, "codex")
        hermes = codex + until_ready(server, "hermes")
        openclaw = hermes + until_ready(server, "openclaw")
        gw = gateway("berth-bench")
        url = f"http://{gw}:{model.server_address[1]}"
        network = {"egress": {"allow": [f"{gw}/32:{model.server_address[1]}"]}}
        env = {"BERTH_ANTHROPIC_BASE_URL": url, "BERTH_ANTHROPIC_API_KEY": "sk-ant-bench",
               "BERTH_LLM_BASE_URL": url + "/v1", "BERTH_LLM_API_KEY": "sk-bench",
               "BERTH_MODEL": "claude-bench", "BERTH_LLM_PROVIDER": "anthropic"}
        made, labels = [], {}
        for kind in ("claude-code", "codex", "hermes", "openclaw", "berth-agent"):
            st, inst = server.call("POST", "/v1/instances", {"template": kind, "env": env, "network": network})
            if st != 201:
                raise SystemExit(f"create from {kind} failed ({st}): {inst}")
            made.append(inst["id"])
            labels[kind] = inst["id"][5:]
        times = {k: ([], []) for k in labels}
        first_turn = {}
        for k in labels:  # one first turn each, not counted (OpenClaw's starts its Gateway)
            first_turn[k] = ttft(server, labels[k], {"input": "hello"})[0]
        for i in range(args.turns):
            order = list(labels) if i % 2 == 0 else list(reversed(list(labels)))
            for k in order:
                first, total = ttft(server, labels[k], {"input": f"hello {i}"})
                times[k][0].append(first)
                times[k][1].append(total)
        print(f"berth {server.profile} build; claude-code image on {BASE}")
        print(f"{'claude-code image build':<34}{'cold s':>8}{'cached s':>10}")
        cold_text = f"{cold:>8.1f}" if cold is not None else f"{'-':>8}"
        print(f"{'server start -> template ready':<34}{cold_text}{cached:>10.1f}")
        print(f"then, same second start: codex ready after {codex:.1f} s, hermes after {hermes:.1f} s,"
              f" openclaw after {openclaw:.1f} s")
        print(f"\n{args.turns} streamed turns each through the edge, alternating, same scripted model")
        print(f"{'agent':<34}{'TTFT p50 ms':>12}{'p90 ms':>9}{'turn p50 ms':>13}{'first turn TTFT ms':>20}")
        for k in labels:
            first, total = times[k]
            print(f"{k:<34}{pct(first, 50):>12.0f}{pct(first, 90):>9.0f}{pct(total, 50):>13.0f}{first_turn[k]:>20.0f}")
        # What each instance holds after its turns (OpenClaw keeps its Gateway running).
        print(f"\n{'agent':<34}{'instance memory after the turns, MiB':>38}")
        for k, iid in zip(labels, made):
            st, h = server.call("GET", f"/v1/instances/{iid}/health")
            print(f"{k:<34}{h.get('memory_mb', float('nan')) if st == 200 else float('nan'):>38.0f}")
        for iid in made:
            server.call("DELETE", f"/v1/instances/{iid}?purge=true")
    finally:
        model.shutdown()
        server.stop()


if __name__ == "__main__":
    main()
