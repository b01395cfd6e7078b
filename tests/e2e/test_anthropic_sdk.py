"""The official `anthropic` SDK against a running mesh (router, billing, llm with SmolLM2, edge):
messages create (system, multi-turn), the streamed event sequence, tools (tool_use, tool_result,
tool_choice), count_tokens, `x-api-key` auth and Anthropic's error shape."""
from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from tests.conftest import Mesh
from tests.e2e.smollm2 import SMOLLM2

GREEDY = {"temperature": 0}  # this SDK no longer exposes sampling parameters; raw clients send them
WEATHER = {"name": "get_weather", "description": "Get the current weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def mesh(smollm2: Mesh) -> Mesh:
    """The session's SmolLM2 mesh, with this module's own key (tests/e2e/conftest.py)."""
    return smollm2


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=mesh.edge_url, api_key=mesh.api_key, max_retries=0,
                               _strict_response_validation=True, timeout=120)


def test_a_message_with_a_system_prompt_answers_text_and_usage(client: anthropic.Anthropic) -> None:
    out = client.messages.create(model=SMOLLM2, max_tokens=16, system="Answer in one word.", extra_body=GREEDY,
                                 messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert out.type == "message" and out.role == "assistant" and out.id.startswith("msg_")
    assert out.content[0].type == "text" and "Paris" in out.content[0].text
    assert out.stop_reason in ("end_turn", "max_tokens")
    assert out.usage.input_tokens > 0 and 0 < out.usage.output_tokens <= 16


def test_max_tokens_stops_with_max_tokens(client: anthropic.Anthropic) -> None:
    out = client.messages.create(model=SMOLLM2, max_tokens=2, extra_body=GREEDY, messages=[
        {"role": "user", "content": "Tell me a long story about a dragon."},
        {"role": "assistant", "content": "Once upon a time"},
        {"role": "user", "content": [{"type": "text", "text": "Go on, at length."}]}])
    assert out.stop_reason == "max_tokens" and out.usage.output_tokens == 2


def test_the_stream_follows_anthropics_event_sequence(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=SMOLLM2, max_tokens=12, extra_body=GREEDY,
                                messages=[{"role": "user", "content": "Say hello"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    raw = [k for k in kinds if k not in ("text", "input_json")]  # the helper's own derived events
    assert raw[0] == "message_start" and raw[-1] == "message_stop" and raw[-2] == "message_delta"
    assert raw[1] == "content_block_start" and raw[-3] == "content_block_stop"
    assert set(raw[2:-3]) == {"content_block_delta"}
    assert final.content[0].type == "text" and final.content[0].text
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0


def test_a_forced_tool_is_used_and_its_result_continues_the_turn(client: anthropic.Anthropic) -> None:
    question = {"role": "user", "content": "What is the weather like in Paris right now?"}
    out = client.messages.create(model=SMOLLM2, max_tokens=64, extra_body=GREEDY, tools=[WEATHER],
                                 tool_choice={"type": "tool", "name": "get_weather"}, messages=[question])
    use = next(b for b in out.content if b.type == "tool_use")
    assert out.stop_reason == "tool_use" and use.name == "get_weather" and use.input == {"city": "Paris"}
    with client.messages.stream(model=SMOLLM2, max_tokens=64, extra_body=GREEDY, tools=[WEATHER],
                                tool_choice={"type": "any"}, messages=[question]) as stream:
        streamed = stream.get_final_message()
    assert [b.type for b in streamed.content] == ["tool_use"] and streamed.content[0].input == {"city": "Paris"}
    follow = client.messages.create(model=SMOLLM2, max_tokens=8, extra_body=GREEDY, tools=[WEATHER],
                                    tool_choice={"type": "none"}, messages=[
        question, {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name,
                                                     "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": "Sunny, 24 degrees Celsius"}]}])
    assert follow.stop_reason in ("end_turn", "max_tokens")
    assert [b.type for b in follow.content] == ["text"] and follow.content[0].text


def test_count_tokens_counts_the_prompt_the_model_reads(client: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    counted = client.messages.count_tokens(model=SMOLLM2, messages=messages, system="Answer in one word.")
    out = client.messages.create(model=SMOLLM2, max_tokens=1, system="Answer in one word.", messages=messages)
    assert counted.input_tokens == out.usage.input_tokens > 0
    with_tools = client.messages.count_tokens(model=SMOLLM2, messages=messages, tools=[WEATHER])
    assert with_tools.input_tokens > counted.input_tokens - 8  # the tool's schema is in the prompt


def test_errors_come_in_anthropics_shape(mesh: Mesh, client: anthropic.Anthropic) -> None:
    stranger = anthropic.Anthropic(base_url=mesh.edge_url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as denied:
        stranger.messages.create(model=SMOLLM2, max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert denied.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="nobody/nothing", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["type"] == "error" and missing.value.body["error"]["type"] == "not_found_error"
    raw = httpx.post(f"{mesh.edge_url}/v1/messages", headers={"x-api-key": mesh.api_key},
                     json={"model": SMOLLM2, "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]})
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in raw.json()["error"]["message"]
    image = {"role": "user", "content": [{"type": "image", "source": {
        "type": "url", "url": "http://169.254.169.254/latest/meta-data"}}]}
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model=SMOLLM2, max_tokens=4, messages=[image])
    assert "messages[0].content[0].source.url" in refused.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=SMOLLM2, max_tokens=4, tools=[WEATHER],
                               tool_choice={"type": "tool", "name": "nope"},
                               messages=[{"role": "user", "content": "hi"}])
    assert json.loads(raw.text)["type"] == "error"
