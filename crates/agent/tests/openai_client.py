"""Drives a running berth-agent with the official `openai` Python package.

Run by tests/openai_client.rs with AGENT_URL and AGENT_TOKEN set, against a
scripted model that answers "hello" with text and "use a tool" with a shell
call followed by text. Exits non-zero (an assertion) on any incompatibility.
"""

import os
import time

import openai
from openai import OpenAI

URL = os.environ["AGENT_URL"]
TOKEN = os.environ["AGENT_TOKEN"]
client = OpenAI(base_url=f"{URL}/v1", api_key=TOKEN, max_retries=0, timeout=30)


def extra(obj, name):
    """A field the OpenAI schema does not know (berth's session_id)."""
    return (obj.model_extra or {}).get(name, getattr(obj, name, None))


# Plain request: a Response object, output_text, usage, session_id.
r = client.responses.create(model="scripted-model", input="hello")
assert r.object == "response" and r.status == "completed", r
assert r.output_text == "Hello from the scripted model!", r.output_text
assert r.usage.total_tokens == 18, r.usage
session_id = extra(r, "session_id")
assert session_id and session_id.startswith("sess_"), session_id

# Stored responses come back through retrieve().
again = client.responses.retrieve(r.id)
assert again.id == r.id and again.output_text == r.output_text

# Raw streaming: typed events in order, numbered, ending in response.completed.
events = list(
    client.responses.create(
        model="scripted-model", input="hello", stream=True, extra_body={"session_id": session_id}
    )
)
types = [e.type for e in events]
assert types[0] == "response.created" and types[-1] == "response.completed", types
assert [e.sequence_number for e in events] == list(range(len(events)))
text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
assert text == "Hello from the scripted model!", text
assert extra(events[-1].response, "session_id") == session_id

# The SDK's stream helper (strict about event order), with a tool call in the loop.
with client.responses.stream(
    model="scripted-model", input="use a tool", extra_body={"session_id": session_id}
) as stream:
    seen = [event.type for event in stream]
    final = stream.get_final_response()
assert "response.function_call_arguments.delta" in seen, seen
kinds = [item.type for item in final.output]
assert kinds == ["function_call", "function_call_output", "message"], kinds
assert final.output[0].name == "shell"
assert "tool-ran" in final.output[1].output, final.output[1]
assert final.output_text == "The tool said: tool-ran", final.output_text

# previous_response_id continues the conversation too.
follow = client.responses.create(model="scripted-model", input="hello", previous_response_id=final.id)
assert extra(follow, "session_id") == session_id

# Conversations, as SDK code written for OpenAI's uses them.
conv = client.conversations.create(
    metadata={"topic": "py"}, items=[{"type": "message", "role": "user", "content": "hello"}]
)
assert conv.object == "conversation" and conv.metadata == {"topic": "py"}, conv
in_conv = client.responses.create(model="scripted-model", input="hello", conversation=conv.id)
assert in_conv.conversation.id == conv.id, in_conv.conversation
assert in_conv.output_text == "Hello from the scripted model!"
items = list(client.conversations.items.list(conv.id, order="asc"))
assert [i.type for i in items] == ["message", "message", "message"], items
assert [i.role for i in items] == ["user", "user", "assistant"], items
assert client.conversations.retrieve(conv.id).id == conv.id
assert client.conversations.update(conv.id, metadata={"topic": "done"}).metadata == {"topic": "done"}
assert client.conversations.delete(conv.id).deleted is True

# A background turn: answered at once, fetched when done, its stream picked up after event 2.
bg = client.responses.create(model="scripted-model", input="hello", background=True)
assert bg.background is True and bg.status in ("queued", "in_progress"), bg
for _ in range(100):
    bg = client.responses.retrieve(bg.id)
    if bg.status == "completed":
        break
    time.sleep(0.05)
assert bg.status == "completed" and bg.output_text == "Hello from the scripted model!", bg
resumed = list(client.responses.retrieve(bg.id, stream=True, starting_after=2))
assert resumed[0].sequence_number == 3 and resumed[-1].type == "response.completed", resumed
assert client.responses.cancel(bg.id).status == "completed"

# A tool the client runs: the turn ends with its call; the output continues it.
weather = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
asked = client.responses.create(model="scripted-model", input="weather in Paris?", tools=[weather])
calls = [i for i in asked.output if i.type == "function_call"]
assert len(calls) == 1 and calls[0].name == "get_weather", asked.output
answer = client.responses.create(
    model="scripted-model", previous_response_id=asked.id, tools=[weather],
    input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"}],
)
assert answer.output_text == "It is sunny in Paris.", answer.output_text

# Compaction: the SDK's typed answer, and its output taken back as the next input.
compacted = client.responses.compact(
    model="scripted-model",
    input=[{"role": "user", "content": "My name is Alice."}, {"role": "assistant", "content": "Hello Alice!"}],
)
assert compacted.object == "response.compaction", compacted
assert compacted.output[-1].type == "compaction" and compacted.output[-1].encrypted_content, compacted.output
again = client.responses.create(
    model="scripted-model", input=[i.model_dump(exclude_none=True) for i in compacted.output] + [
        {"role": "user", "content": "What is my name?"}])
assert again.status == "completed", again

# Models.
ids = [m.id for m in client.models.list()]
assert "scripted-model" in ids, ids

# Errors arrive as the SDK's typed exceptions with OpenAI's fields.
try:
    client.responses.create(model="scripted-model", input="hi", extra_body={"session_id": "sess_nope"})
    raise AssertionError("unknown session accepted")
except openai.NotFoundError as e:
    assert e.code == "session_not_found", e.body
try:
    client.responses.create(model="scripted-model", input=[{"role": "wizard", "content": "x"}])
    raise AssertionError("bad role accepted")
except openai.BadRequestError as e:
    assert e.param == "input[0].role", e.body
try:
    OpenAI(base_url=f"{URL}/v1", api_key="wrong", max_retries=0).models.list()
    raise AssertionError("wrong key accepted")
except openai.AuthenticationError as e:
    assert e.code == "invalid_api_key", e.body

print(f"openai {openai.__version__}: all checks passed")
