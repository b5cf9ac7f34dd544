"""Open Responses conformance of berth-agent, written from the public specification.

Run by tests/openresponses.rs against a real agent and a scripted model:
    python3 openresponses.py BASE_URL TOKEN

Every response object, every streamed event (SSE and WebSocket) and every compaction
answer is validated against the specification's JSON schemas in tests/openresponses/
(its releases 2026-04-24 and 2026-01-15, vendored unchanged), the way its compliance
suite checks a server: objects may carry more fields than the schema names, an unknown
event or item `type` fails. The cases are the suite's (basic, streaming, system prompt,
tool calling, image input, multi-turn, compaction, the WebSocket mode) plus streamed tool
calling, reasoning and a failed turn. Needs `jsonschema` and `websockets`.
"""

import base64
import json
import os
import sys
import urllib.error
import urllib.request

from jsonschema import Draft202012Validator
from websockets.sync.client import connect

BASE, TOKEN = sys.argv[1].rstrip("/"), sys.argv[2]
HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = "scripted-model"

# A 1x1 PNG.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()


class Spec:
    def __init__(self, name):
        self.name = name
        spec = json.load(open(os.path.join(HERE, "openresponses", f"openapi-{name}.json")))
        comps = {"components": spec["components"]}
        post = spec["paths"]["/responses"]["post"]["responses"]["200"]["content"]
        self.response = Draft202012Validator({**comps, "$ref": "#/components/schemas/ResponseResource"})
        self.event = Draft202012Validator({**comps, **post["text/event-stream"]["schema"]})
        schemas = spec["components"]["schemas"]
        self.compact = (
            Draft202012Validator({**comps, "$ref": "#/components/schemas/CompactResource"})
            if "CompactResource" in schemas
            else None
        )
        self.ws_error = (
            Draft202012Validator({**comps, "$ref": "#/components/schemas/WebSocketErrorEvent"})
            if "WebSocketErrorEvent" in schemas
            else None
        )


SPECS = [Spec("2026-04-24"), Spec("2026-01-15")]
checked = {"responses": 0, "events": 0}


def valid(kind, doc, label):
    for spec in SPECS:
        v = getattr(spec, kind)
        if v is None:
            continue
        errors = sorted(v.iter_errors(doc), key=lambda e: list(e.absolute_path))
        assert not errors, f"{label} fails the {spec.name} schema ({kind}): " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:200]}" for e in errors[:5]
        )
    checked["responses" if kind != "event" else "events"] += 1


def request(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def create(body, label):
    status, r = request("POST", "/v1/responses", {"model": MODEL, **body})
    assert status == 200, f"{label}: {status} {r}"
    valid("response", r, label)
    assert r["output"], f"{label}: empty output"
    return r


def stream(body, label):
    """POST with stream: true; every event validated; answers (events, final response)."""
    data = json.dumps({"model": MODEL, "stream": True, **body}).encode()
    req = urllib.request.Request(BASE + "/v1/responses", data=data, method="POST")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    req.add_header("Content-Type", "application/json")
    events, name, final, done = [], None, None, False
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for raw in r:
            line = raw.decode().rstrip("\n")
            assert not line.endswith("\r"), "lines end with \\n"
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                payload = line[6:]
                if payload == "[DONE]":
                    assert name is None, "[DONE] is a bare data line"
                    done = True
                    continue
                assert not done, "nothing follows [DONE]"
                ev = json.loads(payload)
                assert name == ev["type"], f"{label}: event: {name} but type {ev['type']}"
                valid("event", ev, f"{label} event {ev['type']}")
                events.append(ev)
                if ev["type"] in ("response.completed", "response.failed", "response.incomplete"):
                    final = ev["response"]
            elif line == "":
                name = None
    assert done, f"{label}: the stream ends with data: [DONE]"
    seqs = [e["sequence_number"] for e in events]
    assert seqs == list(range(len(seqs))), f"{label}: sequence numbers {seqs}"
    assert final is not None, f"{label}: no terminal event"
    valid("response", final, f"{label} final response")
    return events, final


def user(text):
    return {"type": "message", "role": "user", "content": text}


# --- the compliance suite's HTTP cases ---

r = create({"input": [user("Say hello in exactly 3 words.")]}, "basic-response")
assert r["status"] == "completed" and r["completed_at"] >= r["created_at"], r

events, final = stream({"input": [user("Count from 1 to 5.")]}, "streaming-response")
assert final["status"] == "completed"
kinds = [e["type"] for e in events]
assert kinds[:2] == ["response.created", "response.in_progress"], kinds
assert "response.output_text.delta" in kinds and kinds[-1] == "response.completed", kinds

r = create(
    {"input": [{"type": "message", "role": "system", "content": "You are a pirate. Always respond in pirate speak."},
               user("Say hello.")]},
    "system-prompt",
)
assert r["status"] == "completed"

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a location",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}
r = create({"input": [user("What's the weather like in San Francisco?")], "tools": [WEATHER]}, "tool-calling")
calls = [i for i in r["output"] if i["type"] == "function_call"]
assert calls and calls[0]["name"] == "get_weather", r
assert r["tools"][0]["name"] == "get_weather" and "strict" in r["tools"][0], r["tools"]

events, final = stream({"input": [user("What's the weather like in San Francisco?")], "tools": [WEATHER]},
                       "streamed-tool-calling")
assert [i["type"] for i in final["output"]] == ["function_call"], final["output"]
assert "response.function_call_arguments.delta" in [e["type"] for e in events]
# The client runs it and continues.
r = create({"previous_response_id": final["id"], "tools": [WEATHER],
            "input": [{"type": "function_call_output", "call_id": calls[0]["call_id"], "output": "foggy, 14 C"}]},
           "tool result")
assert r["status"] == "completed", r

r = create(
    {"input": [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "What do you see in this image?"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]}]},
    "image-input",
)
assert r["status"] == "completed", r

r = create({"input": [user("My name is Alice."),
                      {"type": "message", "role": "assistant", "content": "Hello Alice! Nice to meet you."},
                      user("What is my name?")]}, "multi-turn")
assert r["status"] == "completed"

# --- beyond the suite: reasoning, a failed turn, store: false, compaction ---

events, final = stream({"input": [user("Think first.")]}, "reasoning")
kinds = [e["type"] for e in events]
assert "response.reasoning.delta" in kinds and "response.reasoning.done" in kinds, kinds
assert any(i["type"] == "reasoning" for i in final["output"])

events, final = stream({"input": [user("Fail, please.")]}, "failed turn")
assert final["status"] == "failed" and final["error"]["code"], final
status, r = request("POST", "/v1/responses", {"model": MODEL, "input": "Fail, please."})
assert status == 200 and r["status"] == "failed", r
valid("response", r, "failed response")

r = create({"input": "Say hello in exactly 3 words.", "store": False}, "store false")
assert r["store"] is False
status, e = request("GET", f"/v1/responses/{r['id']}")
assert status == 404, "a store: false response is not kept for GET"
status, e = request("POST", "/v1/responses", {"model": MODEL, "input": "again", "previous_response_id": r["id"]})
assert status == 404 and e["error"]["code"] == "previous_response_not_found", e
status, e = request("POST", f"/v1/responses/{r['id']}/cancel", {})
assert status == 404, "nor for cancel"
status, e = request("POST", "/v1/responses/compact", {"model": MODEL, "previous_response_id": r["id"]})
assert status == 404 and e["error"]["code"] == "previous_response_not_found", "nor for compaction"

status, c = request("POST", "/v1/responses/compact", {
    "model": MODEL, "prompt_cache_key": "openresponses-compact",
    "input": [user("My name is Alice."), {"type": "message", "role": "assistant", "content": "Hello Alice!"},
              user("Remember that I like tea.")]})
assert status == 200, c
valid("compact", c, "compact-response")
assert c["object"] == "response.compaction" and c["output"][-1]["type"] == "compaction", c
status, e = request("POST", "/v1/responses/compact", {"input": "x"})
assert status in (400, 422) and e["error"]["param"] == "model", e
compacted = c["output"]


# --- the WebSocket mode ---

WS_URL = BASE.replace("http://", "ws://") + "/v1/responses"


def ws_connect():
    return connect(WS_URL, additional_headers={"Authorization": f"Bearer {TOKEN}"}, open_timeout=10)


def ws_turn(ws, body, label):
    """One response.create; answers ("response", final) or ("error", frame)."""
    ws.send(json.dumps({"type": "response.create", "model": MODEL, **body}))
    seq = 0
    while True:
        frame = ws.recv(timeout=30)
        assert frame != "[DONE]", f"{label}: no [DONE] frames on a WebSocket"
        ev = json.loads(frame)
        if ev["type"] == "error" and "status" in ev:
            valid("ws_error", ev, f"{label} error frame")
            return "error", ev
        valid("event", ev, f"{label} event {ev['type']}")
        assert ev["sequence_number"] == seq, f"{label}: sequence numbers"
        seq += 1
        if ev["type"] in ("response.completed", "response.failed", "response.incomplete"):
            valid("response", ev["response"], f"{label} final response")
            return "response", ev["response"]


with ws_connect() as ws:
    kind, first = ws_turn(ws, {"input": "Say hello in exactly 3 words."}, "websocket-response")
    assert kind == "response" and first["status"] == "completed", first
    kind, second = ws_turn(ws, {"input": "Count from 1 to 5."}, "websocket-sequential-responses")
    assert kind == "response" and second["status"] == "completed"
    # Two messages sent at once run one after the other.
    ws.send(json.dumps({"type": "response.create", "model": MODEL, "input": "Say hello in exactly 3 words."}))
    kind, third = ws_turn(ws, {"input": "Count from 1 to 5."}, "queued")
    finals = [third]
    while len(finals) < 2:
        ev = json.loads(ws.recv(timeout=30))
        if ev["type"] == "response.completed":
            finals.append(ev["response"])
    assert all(f["status"] == "completed" for f in finals)

    kind, local = ws_turn(ws, {"input": "Remember the code word: ember. Reply with OK.", "store": False},
                          "websocket-continuation (first)")
    assert kind == "response" and local["store"] is False
    kind, cont = ws_turn(ws, {"store": False, "previous_response_id": local["id"],
                              "input": "What was the code word?"}, "websocket-continuation")
    assert kind == "response" and cont["status"] == "completed", cont

    kind, err = ws_turn(ws, {"store": False, "previous_response_id": "resp_openresponses_missing_1",
                             "input": "This should fail."}, "websocket-previous-response-not-found")
    assert kind == "error" and err["error"]["code"] == "previous_response_not_found", err

    kind, bad = ws_turn(ws, {"store": False, "previous_response_id": local["id"],
                             "input": [{"type": "function_call_output", "call_id": "call_openresponses_missing",
                                        "output": "No matching tool call."}]}, "failed continuation")
    assert kind == "error" and bad["error"]["param"] == "input[0].call_id", bad
    kind, stale = ws_turn(ws, {"store": False, "previous_response_id": local["id"], "input": "stale"},
                          "websocket-failed-continuation-evicts-cache")
    assert kind == "error" and stale["error"]["code"] == "previous_response_not_found", stale

    ws.send(json.dumps({"type": "response.create", "model": MODEL, "input": "x", "stream": True}))
    err = json.loads(ws.recv(timeout=30))
    assert err["type"] == "error" and err["error"]["param"] == "stream", err

    kind, chain = ws_turn(ws, {"store": False, "input": compacted + [user("What do I like?")]},
                          "websocket-compact-new-chain")
    assert kind == "response" and chain["status"] == "completed", chain

with ws_connect() as ws:
    kind, err = ws_turn(ws, {"store": False, "previous_response_id": local["id"], "input": "Do you remember?"},
                        "websocket-reconnect-store-false-recovery")
    assert kind == "error" and err["error"]["code"] == "previous_response_not_found", err
    kind, fresh = ws_turn(ws, {"store": False, "input": "Start over: say hello in exactly 3 words."}, "recovery")
    assert kind == "response" and fresh["status"] == "completed"

print(f"open responses conformance: {checked['responses']} objects and {checked['events']} events valid")
