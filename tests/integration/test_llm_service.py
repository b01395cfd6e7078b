"""The llm worker over gRPC: its server in this process for chat, completions, structured output,
tool calls, token counting, embeddings, vision and errors, and once behind the router (real NATS
and Postgres) as clients reach it."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2
from PIL import Image

from genmesh.models import build
from genmesh.services.llm.protocol import GenerationRequest, Message
from genmesh.services.llm.sampling import SamplingParams
from genmesh.services.llm.server import LLMComponent
from genmesh.settings import Settings
from genmesh.v1 import llm_pb2, llm_pb2_grpc
from tests.conftest import Infra, serve_in_process, start_mesh

pytestmark = pytest.mark.asyncio(loop_scope="session")

CHAT, COMPLETIONS, VISION = "genmesh/tiny-llama", "genmesh/tiny-llama/completions", "genmesh/tiny-llava"
EMBED = "sentence-transformers/all-MiniLM-L6-v2"
PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 6}, "age": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["name", "age"], "additionalProperties": False}
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                            "days": {"type": "integer", "minimum": 1, "maximum": 7}},
           "required": ["city", "days"], "additionalProperties": False}


@dataclass
class Worker:
    component: LLMComponent
    stub: llm_pb2_grpc.LLMStub


@pytest.fixture(scope="module")
def built_models(models_dir: Path) -> Path:
    build.build_missing(models_dir, [CHAT, VISION])
    return models_dir


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def worker(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Worker]:
    """The llm component's gRPC server in this process; no NATS, so no heartbeats."""
    settings = Settings(models_dir=built_models, data_dir=tmp_path_factory.mktemp("llm-worker"),
                        nats_url=None, torch_threads=1, host="127.0.0.1", port=0)
    component = LLMComponent(settings)
    async with serve_in_process(component) as channel:
        yield Worker(component, llm_pb2_grpc.LLMStub(channel))


# --- helpers --------------------------------------------------------------------------------------

async def collect(call: Any) -> list[Any]:
    return [event async for event in call]


def cases(events: list[Any]) -> list[str]:
    return [e.WhichOneof("event") for e in events]


SAMPLING_FIELDS = set(llm_pb2.Sampling.DESCRIPTOR.fields_by_name)


def split_sampling(fields: dict[str, Any]) -> dict[str, Any]:
    """Request fields with the sampling ones gathered into `sampling`, as the proto nests them."""
    sampling = {k: fields.pop(k) for k in list(fields) if k in SAMPLING_FIELDS}
    return {**fields, "sampling": llm_pb2.Sampling(**sampling)}


def chat(content: str = "Tell me a story", **fields: Any) -> llm_pb2.ChatCompleteRequest:
    fields.setdefault("model_id", CHAT)
    return llm_pb2.ChatCompleteRequest(messages=[llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content=content)],
                                       **split_sampling(fields))


def streamed(events: list[Any]) -> dict[int, dict[str, Any]]:
    """Per choice: the joined content, roles seen, finish reasons and tool-call fragments."""
    out: dict[int, dict[str, Any]] = {}
    for event in events:
        if event.HasField("chunk"):
            for d in event.chunk.choices:
                c = out.setdefault(d.index, {"text": "", "roles": [], "finish": [], "calls": [], "first": None})
                if c["first"] is None:
                    c["first"] = d
                c["text"] += getattr(d, "content", "") or getattr(d, "text", "")
                if getattr(d, "role", ""):
                    c["roles"].append(d.role)
                if d.finish_reason:
                    c["finish"].append(d.finish_reason)
                c["calls"] += list(getattr(d, "tool_calls", []))
    return out


def assert_usage_then_result(events: list[Any]) -> None:
    kinds = cases(events)
    assert kinds[-1] == "result" and kinds[-2] == "usage", kinds
    assert kinds.count("result") == 1 and kinds.count("usage") == 1
    usage, result = events[-2].usage, events[-1].result
    assert [(i.unit, i.quantity) for i in usage.items] == [
        ("input_tokens", result.usage.prompt_tokens), ("output_tokens", result.usage.completion_tokens)]
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert result.usage.prompt_tokens > 0


async def expect_invalid(call: Any, field: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await (collect(call) if hasattr(call, "__aiter__") else call)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert ("genmesh-field", field) in tuple(err.value.trailing_metadata()), err.value.details()
    return err.value


def png_data_uri() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


# --- chat -----------------------------------------------------------------------------------------

async def test_streamed_chunks_join_into_the_result_and_repeat_for_the_same_seed(worker: Worker) -> None:
    request = chat(seed=7, temperature=0.9, max_tokens=24, n=2)
    first = await collect(worker.stub.ChatComplete(request))
    again = await collect(worker.stub.ChatComplete(request))
    assert_usage_then_result(first)
    result = first[-1].result
    assert result.id.startswith("chatcmpl") and result.model == CHAT and len(result.choices) == 2
    parts = streamed(first)
    for choice in result.choices:
        got = parts[choice.index]
        assert got["text"] == choice.message.content and choice.message.role == llm_pb2.ROLE_ASSISTANT
        assert got["first"].role == llm_pb2.ROLE_ASSISTANT and got["roles"] == [llm_pb2.ROLE_ASSISTANT]
        assert got["finish"] == [choice.finish_reason]
        assert choice.finish_reason in (llm_pb2.FINISH_REASON_STOP, llm_pb2.FINISH_REASON_LENGTH)
    assert [c.message.content for c in again[-1].result.choices] == [c.message.content for c in result.choices]
    assert result.usage.completion_tokens <= 48


async def test_max_tokens_ends_with_length(worker: Worker) -> None:
    events = await collect(worker.stub.ChatComplete(chat(seed=1, max_tokens=3)))
    result = events[-1].result
    assert result.usage.completion_tokens <= 3
    if result.usage.completion_tokens == 3:
        assert result.choices[0].finish_reason == llm_pb2.FINISH_REASON_LENGTH


async def test_a_stop_string_ends_the_text_before_it(worker: Worker) -> None:
    free = (await collect(worker.stub.ChatComplete(chat(seed=5, max_tokens=40))))[-1].result
    text = free.choices[0].message.content
    assert len(text) > 8, text
    stop = text[4:7]
    cut = (await collect(worker.stub.ChatComplete(chat(seed=5, max_tokens=40, stop=[stop]))))[-1].result
    assert cut.choices[0].message.content == text[:text.find(stop)]
    assert cut.choices[0].finish_reason == llm_pb2.FINISH_REASON_STOP


async def test_json_schema_output_parses_and_validates(worker: Worker) -> None:
    request = chat("A person as JSON", seed=3, max_tokens=120, response_format=llm_pb2.ResponseFormat(
        type="json_schema", name="person", json_schema=struct(PERSON)))
    events = await collect(worker.stub.ChatComplete(request))
    choice = events[-1].result.choices[0]
    assert choice.finish_reason == llm_pb2.FINISH_REASON_STOP, choice
    jsonschema.validate(json.loads(choice.message.content), PERSON)


async def test_a_named_tool_is_called_with_arguments_matching_its_schema(worker: Worker) -> None:
    tool = llm_pb2.Tool(type="function", function=llm_pb2.FunctionDefinition(
        name="get_weather", description="Weather forecast", parameters=struct(WEATHER)))
    request = chat("Weather in Paris?", seed=0, max_tokens=80, tools=[tool],
                   tool_choice=llm_pb2.ToolChoice(mode=llm_pb2.TOOL_CHOICE_MODE_FUNCTION, function_name="get_weather"))
    events = await collect(worker.stub.ChatComplete(request))
    assert_usage_then_result(events)
    choice = events[-1].result.choices[0]
    [call] = choice.message.tool_calls
    assert call.id and call.type == "function" and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)
    fragments = streamed(events)[0]["calls"]
    assert fragments[0].name == "get_weather" and fragments[0].id == call.id
    assert "".join(f.arguments for f in fragments) == call.function.arguments
    assert streamed(events)[0]["finish"] == [choice.finish_reason]


# --- completions ----------------------------------------------------------------------------------

async def test_completions_share_the_chat_engine_and_echo_the_prompt(worker: Worker) -> None:
    await collect(worker.stub.ChatComplete(chat(max_tokens=2)))
    request = llm_pb2.CompleteRequest(model_id=COMPLETIONS, prompt="Once upon a time", echo=True,
                                      sampling=llm_pb2.Sampling(max_tokens=6, seed=2))
    events = await collect(worker.stub.Complete(request))
    assert_usage_then_result(events)
    choice = events[-1].result.choices[0]
    assert choice.text.startswith("Once upon a time") and streamed(events)[0]["text"] == choice.text
    assert streamed(events)[0]["finish"] == [choice.finish_reason]
    entries = worker.component.runtime.cache.entries
    assert CHAT in entries and COMPLETIONS not in entries  # one engine for both ids


# --- token counting and the context -----------------------------------------------------------------

async def test_count_tokens_matches_the_prompt_a_chat_uses(worker: Worker) -> None:
    request = chat("How many tokens is this?", max_tokens=1)
    counted = await worker.stub.CountTokens(llm_pb2.CountTokensRequest(model_id=CHAT, messages=request.messages))
    used = (await collect(worker.stub.ChatComplete(request)))[-1].result.usage.prompt_tokens
    assert counted.tokens == used and counted.max_context == 512
    prompt = await worker.stub.CountTokens(llm_pb2.CountTokensRequest(model_id=CHAT, prompt="hello world"))
    assert 0 < prompt.tokens < counted.tokens


async def test_a_prompt_over_the_context_is_refused_with_counts(worker: Worker) -> None:
    err = await expect_invalid(worker.stub.ChatComplete(chat("word " * 800, max_tokens=4)), "messages")
    assert "512" in err.details() and "tokens" in err.details()
    err = await expect_invalid(worker.stub.ChatComplete(chat("hi", max_tokens=600)), "max_tokens")
    assert "512" in err.details()


# --- embeddings -------------------------------------------------------------------------------------

async def test_similar_sentences_embed_closer(worker: Worker) -> None:
    texts = ["A cat sits on the mat.", "A kitten is sitting on a rug.", "Quarterly tax filings are due."]
    response = await worker.stub.Embed(llm_pb2.EmbedRequest(model_id=EMBED, input=texts))
    vectors = [list(e.embedding) for e in sorted(response.data, key=lambda e: e.index)]
    assert len(vectors) == 3 and len(vectors[0]) == 384 and response.usage.prompt_tokens > 0

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b))  # unit vectors

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.1
    small = await worker.stub.Embed(llm_pb2.EmbedRequest(model_id=EMBED, input=["x"], dimensions=64))
    assert len(small.data[0].embedding) == 64


# --- vision ----------------------------------------------------------------------------------------

async def test_an_image_part_is_read_by_the_vision_model(worker: Worker) -> None:
    message = llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, parts=[
        llm_pb2.ContentPart(type="text", text="What is in this picture?"),
        llm_pb2.ContentPart(type="image_url", image_url=png_data_uri())])
    request = llm_pb2.ChatCompleteRequest(model_id=VISION, messages=[message],
                                          sampling=llm_pb2.Sampling(max_tokens=6, seed=1))
    events = await collect(worker.stub.ChatComplete(request))
    assert_usage_then_result(events)
    choice = events[-1].result.choices[0]
    parts = streamed(events)[0]
    assert parts["text"] == choice.message.content and parts["roles"] == [llm_pb2.ROLE_ASSISTANT]
    assert parts["finish"] == [choice.finish_reason]
    assert events[-1].result.usage.completion_tokens <= 6


async def test_an_image_part_to_a_text_model_names_the_part(worker: Worker) -> None:
    message = llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, parts=[
        llm_pb2.ContentPart(type="text", text="What is this?"),
        llm_pb2.ContentPart(type="image_url", image_url=png_data_uri())])
    await expect_invalid(worker.stub.ChatComplete(llm_pb2.ChatCompleteRequest(
        model_id=CHAT, messages=[message])), "messages[0].parts[1]")


# --- bad input and cancellation -----------------------------------------------------------------------

# Ranges and shapes are the router's to check (llm/params.py; tests/unit/test_llm_params.py and
# test_through_the_router); a worker refuses what only it knows: which models it serves.
async def test_a_chat_to_an_embedding_model_is_invalid_argument_naming_the_model(worker: Worker) -> None:
    await expect_invalid(worker.stub.ChatComplete(chat(max_tokens=2, model_id=EMBED)), "model_id")


async def test_bad_embed_input_is_invalid_argument(worker: Worker) -> None:
    await expect_invalid(worker.stub.Embed(llm_pb2.EmbedRequest(model_id=EMBED, input=[])), "input")
    await expect_invalid(worker.stub.Embed(llm_pb2.EmbedRequest(model_id=EMBED, input=["a", ""])), "input[1]")
    await expect_invalid(worker.stub.Embed(llm_pb2.EmbedRequest(model_id=EMBED, input=["a"], dimensions=999)),
                         "dimensions")


async def test_a_caller_going_away_cancels_its_sequence(worker: Worker) -> None:
    await collect(worker.stub.ChatComplete(chat(max_tokens=1)))  # resident
    engine = worker.component.runtime.cache.entries[CHAT].value
    before = engine.stats().generated_tokens
    call = worker.stub.ChatComplete(chat(max_tokens=400, seed=4))
    async for event in call:
        if event.HasField("chunk"):
            break
    call.cancel()
    assert await asyncio.to_thread(engine.wait_idle, 10)
    assert engine.stats().generated_tokens - before < 400
    events = await collect(worker.stub.ChatComplete(chat(max_tokens=2)))
    assert cases(events)[-1] == "result"


async def test_min_tokens_holds_back_stop_tokens_and_ignore_eos_runs_to_max_tokens(worker: Worker) -> None:
    await collect(worker.stub.ChatComplete(chat(max_tokens=1)))  # resident
    engine = worker.component.runtime.cache.entries[CHAT].value
    messages = (Message(role="user", content="Tell me a story"),)

    async def tokens(**params: Any) -> tuple[int, ...]:
        request = GenerationRequest(messages=messages, sampling=SamplingParams(temperature=0.0, **params))
        return (await engine.complete(request)).choices[0].token_ids

    greedy = await tokens(max_tokens=8, ignore_eos=True)
    assert await tokens(max_tokens=8, stop_token_ids=(greedy[0],)) == greedy[:1]
    held = await tokens(max_tokens=8, stop_token_ids=(greedy[0],), min_tokens=3)
    # The stop token is not sampled before min_tokens; after it, it may end the sequence again.
    assert len(held) >= 3 and greedy[0] not in held[:3]
    events = await collect(worker.stub.ChatComplete(chat(max_tokens=12, ignore_eos=True, seed=2)))
    assert events[-1].result.usage.completion_tokens == 12
    assert events[-1].result.choices[0].finish_reason == llm_pb2.FINISH_REASON_LENGTH


async def test_one_engine_step_is_one_chunk_carrying_the_tokens_so_far(worker: Worker) -> None:
    events = await collect(worker.stub.ChatComplete(chat(max_tokens=5, n=3, seed=7, ignore_eos=True)))
    chunks = [e.chunk for e in events if e.HasField("chunk")]
    # Three choices decoded together: each step's deltas travel in one chunk, not one per choice
    # (a choice whose text is held back, a partial character, is left out of its step's chunk).
    assert len(chunks) == 5 and max(len(c.choices) for c in chunks) == 3
    produced = [c.usage_so_far.completion_tokens for c in chunks]
    assert produced == [3, 6, 9, 12, 15]
    result = events[-1].result
    assert chunks[-1].usage_so_far.prompt_tokens == result.usage.prompt_tokens > 0


async def test_the_worker_advertises_its_engines_batch_and_queue_as_capacity(worker: Worker) -> None:
    settings = worker.component.settings
    assert worker.component.runtime.state().capacity == settings.llm_max_num_seqs + settings.llm_queue_depth


async def test_past_its_queue_bound_a_request_gets_429_with_retry_after(worker: Worker) -> None:
    component = worker.component
    bound = component.max_waiting
    component.max_waiting = 1
    held = worker.stub.ChatComplete(chat(max_tokens=300, ignore_eos=True, seed=1))
    try:
        async for event in held:
            if event.HasField("chunk"):
                break  # one generation is running: the bound is reached
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await collect(worker.stub.ChatComplete(chat(max_tokens=2)))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        metadata = dict(err.value.trailing_metadata())
        assert metadata["genmesh-error-type"] == "rate_limited" and float(metadata["genmesh-retry-after"]) > 0
    finally:
        held.cancel()
        component.max_waiting = bound
    events = await collect(worker.stub.ChatComplete(chat(max_tokens=2)))
    assert cases(events)[-1] == "result"


async def test_the_routers_validator_imports_without_torch() -> None:
    code = ("import sys, genmesh.services.llm.params as p; "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True,
                                  timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# --- through the router -------------------------------------------------------------------------

async def test_through_the_router(infra: Infra, built_models: Path, tmp_path: Path) -> None:
    mesh = await start_mesh(infra, tmp_path, ["router", "llm"], models_dir=built_models)
    try:
        async with mesh.channel() as channel:
            stub = llm_pb2_grpc.LLMStub(channel)
            events = await collect(stub.ChatComplete(chat(max_tokens=6, seed=1), metadata=mesh.metadata))
            assert_usage_then_result(events)
            assert streamed(events)[0]["text"] == events[-1].result.choices[0].message.content
            counted = await stub.CountTokens(llm_pb2.CountTokensRequest(model_id=CHAT, prompt="hello"),
                                             metadata=mesh.metadata)
            assert counted.tokens > 0
            embedded = await stub.Embed(llm_pb2.EmbedRequest(model_id="text-embedding-3-small", input=["hi"]),
                                        metadata=mesh.metadata)
            assert len(embedded.data[0].embedding) == 384
            # Bad input is refused by the router before any worker sees it.
            for fields, field in [({"temperature": 3.0}, "temperature"), ({"top_p": 0.0}, "top_p"),
                                  ({"n": 17}, "n"), ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
                                  ({"max_tokens": 0}, "max_tokens")]:
                await expect_invalid(stub.ChatComplete(chat(**fields), metadata=mesh.metadata), field)
            await expect_invalid(stub.ChatComplete(llm_pb2.ChatCompleteRequest(
                model_id=CHAT, messages=[llm_pb2.ChatMessage(content="x")]),
                metadata=mesh.metadata), "messages[0].role")
    finally:
        await mesh.supervisor.stop()
