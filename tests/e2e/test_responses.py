"""The official openai SDK's Responses client (strict response validation) against a running mesh
(router, billing, llm with SmolLM2, edge): create, retrieve, stream, structured output,
max_output_tokens, background (poll, cancel), function tools carried by previous_response_id,
input items, delete, isolation per key, and a stored response retrieved and continued after the
router and the edge restart."""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from tests.conftest import Mesh
from tests.e2e.smollm2 import SMOLLM2
from tests.e2e.smollm2 import strict_sdk as sdk

WEATHER = {"type": "function", "name": "get_weather", "description": "Get the current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
QUESTION = "What is the weather like in Paris right now?"


@pytest.fixture(scope="module")
def mesh(smollm2: Mesh) -> Mesh:
    """The session's SmolLM2 mesh, with this module's own key (tests/e2e/conftest.py)."""
    return smollm2


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> openai.OpenAI:
    return sdk(mesh)


def wait_until_done(client: openai.OpenAI, response_id: str, deadline_s: float = 120.0) -> openai.types.responses.Response:
    end = time.monotonic() + deadline_s
    while True:
        out = client.responses.retrieve(response_id)
        if out.status not in ("queued", "in_progress") or time.monotonic() > end:
            return out
        time.sleep(0.2)


def test_create_answers_text_and_usage_and_is_stored(client: openai.OpenAI) -> None:
    out = client.responses.create(model=SMOLLM2, instructions="Answer in one word.", temperature=0,
                                  input="What is the capital of France?", max_output_tokens=16)
    assert out.object == "response" and out.status in ("completed", "incomplete") and out.id.startswith("resp_")
    assert "Paris" in out.output_text and out.instructions == "Answer in one word."
    assert out.usage.input_tokens > 0 and 0 < out.usage.output_tokens <= 16
    assert out.usage.total_tokens == out.usage.input_tokens + out.usage.output_tokens
    again = client.responses.retrieve(out.id)
    assert again.output_text == out.output_text and again.usage == out.usage
    items = client.responses.input_items.list(out.id)
    assert [i.type for i in items.data] == ["message"] and items.data[0].content[0].text.startswith("What")


def test_the_stream_follows_the_event_sequence_and_is_stored(client: openai.OpenAI) -> None:
    with client.responses.stream(model=SMOLLM2, input="Say hello", max_output_tokens=12, temperature=0) as stream:
        events = [e for e in stream]
    final = events[-1].response  # completed, or incomplete when it ran out of tokens (the helper wants completed)
    kinds = [e.type for e in events]
    assert kinds[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          final.status == "incomplete" and "response.incomplete" or "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.output_text == deltas and deltas
    assert client.responses.retrieve(final.id).output_text == deltas


def test_structured_output_follows_the_json_schema(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
              "required": ["city"], "additionalProperties": False}
    out = client.responses.create(model=SMOLLM2, input="Name the capital of France as JSON.", temperature=0,
                                  max_output_tokens=40, text={"format": {"type": "json_schema", "name": "city",
                                                                         "schema": schema, "strict": True}})
    assert out.status == "completed" and set(json.loads(out.output_text)) == {"city"}
    assert out.text.format.type == "json_schema"


def test_max_output_tokens_makes_an_incomplete_response(client: openai.OpenAI) -> None:
    out = client.responses.create(model=SMOLLM2, input="Tell me a long story.", max_output_tokens=2)
    assert out.status == "incomplete" and out.incomplete_details.reason == "max_output_tokens"
    assert out.usage.output_tokens == 2


def test_previous_response_id_carries_the_tool_call_and_its_output(client: openai.OpenAI) -> None:
    first = client.responses.create(model=SMOLLM2, input=QUESTION, tools=[WEATHER], tool_choice="required",
                                    temperature=0, max_output_tokens=64)
    call = next(o for o in first.output if o.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    follow = client.responses.create(model=SMOLLM2, previous_response_id=first.id, tools=[WEATHER],
                                     tool_choice="none", temperature=0, max_output_tokens=12, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24 degrees Celsius"}])
    assert follow.previous_response_id == first.id and follow.output_text
    # The same conversation spelled out as a chat reads exactly the same prompt and answers the same.
    chat = client.chat.completions.create(model=SMOLLM2, temperature=0, max_tokens=12, tools=[
        {"type": "function", "function": {k: WEATHER[k] for k in ("name", "description", "parameters")}}],
        tool_choice="none", messages=[
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": None, "tool_calls": [{"id": call.call_id, "type": "function", "function": {
            "name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": "Sunny, 24 degrees Celsius"}])
    assert follow.usage.input_tokens == chat.usage.prompt_tokens
    assert follow.output_text == chat.choices[0].message.content


def test_background_responses_are_polled_and_cancelled(client: openai.OpenAI) -> None:
    queued = client.responses.create(model=SMOLLM2, input="What is the capital of France?", background=True,
                                     temperature=0, max_output_tokens=8)
    assert queued.status in ("queued", "in_progress") and queued.background is True
    done = wait_until_done(client, queued.id)
    assert done.status in ("completed", "incomplete") and done.output_text and done.usage.output_tokens > 0
    long = client.responses.create(model=SMOLLM2, input="Write a very long essay.", background=True,
                                   max_output_tokens=400)
    cancelled = client.responses.cancel(long.id)
    assert cancelled.status == "cancelled"
    assert client.responses.retrieve(long.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(done.id if not done.background else client.responses.create(
            model=SMOLLM2, input="hi", max_output_tokens=1).id)


def test_another_key_sees_nothing_and_delete_forgets(mesh: Mesh, client: openai.OpenAI) -> None:
    out = client.responses.create(model=SMOLLM2, input="hi", max_output_tokens=2)
    made = httpx.post(f"{mesh.edge_url}/v1/keys", json={"name": "other"},
                      headers={"authorization": f"Bearer {mesh.api_key}"}).json()
    other = sdk(mesh, made["secret"])
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(out.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model=SMOLLM2, input="and then?", previous_response_id=out.id, max_output_tokens=2)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(out.id)
    client.responses.delete(out.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(out.id)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_stored_response_survives_router_and_edge_restarts(mesh: Mesh, client: openai.OpenAI) -> None:
    first = await asyncio.to_thread(client.responses.create, model=SMOLLM2, temperature=0, max_output_tokens=8,
                                    instructions="Answer in one word.", input="What is the capital of France?")
    sup = mesh.supervisor
    for name in ("edge", "router"):
        await sup.stop_child(name)
    for name in ("router", "edge"):
        await sup.start_child(name)
        await sup.wait_healthy(name)
    again = await asyncio.to_thread(client.responses.retrieve, first.id)
    assert again.output_text == first.output_text and again.status == first.status
    follow = await asyncio.to_thread(client.responses.create, model=SMOLLM2, previous_response_id=first.id,
                                     input="And of Italy?", temperature=0, max_output_tokens=8)
    assert follow.status in ("completed", "incomplete") and follow.output_text
    # The earlier turn is in the prompt: more input tokens than the new question alone.
    alone = await asyncio.to_thread(client.responses.create, model=SMOLLM2, input="And of Italy?",
                                    temperature=0, max_output_tokens=1)
    assert follow.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens
