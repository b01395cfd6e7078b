"""The edge's OpenAI chat, completion, embedding and image routes through a real router to scripted
LLM and ImageGen workers (in this process, registered over NATS like any worker), read back with
the official SDK under strict validation: exact stream shapes, tool-call deltas, logprobs, usage,
base64 embeddings, results that arrive only whole, mid-stream errors, images, and batches."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
import time
from typing import Any, AsyncIterator

import grpc
import httpx
import openai
import pytest
import pytest_asyncio

from genmesh.errors import InvalidArgument
from genmesh.rpc import servicer_errors
from genmesh.v1 import common_pb2, imagegen_pb2, imagegen_pb2_grpc, llm_pb2, llm_pb2_grpc
from genmesh.worker import WorkerComponent
from tests.conftest import Infra, Mesh, serve_in_mesh, start_mesh, wait_for_workers

pytestmark = pytest.mark.asyncio(loop_scope="session")
CHAT = "genmesh/tiny-llama"
EMBED = "sentence-transformers/all-MiniLM-L6-v2"
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}


def _lp(token: str, top: int) -> llm_pb2.TokenLogprob:
    return llm_pb2.TokenLogprob(token=token, logprob=-0.5, token_bytes=token.encode(), top_logprobs=[
        llm_pb2.TopLogprob(token=f"{token}{k}", logprob=-0.5 - k, token_bytes=f"{token}{k}".encode())
        for k in range(top)])


class ScriptedLLM(llm_pb2_grpc.LLMServicer):
    """Deterministic answers: "Hel" + "lo" per choice, a tool call when tools are given; the last
    user message "whole only" sends no chunks, "fail midway" fails after the first chunk."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.seen: list[Any] = []

    @servicer_errors
    async def ChatComplete(self, request: llm_pb2.ChatCompleteRequest, context: Any) -> AsyncIterator[llm_pb2.ChatCompleteEvent]:
        self.seen.append(request)
        async with self.runtime.job(context, request.model_id):
            last = request.messages[-1].content
            n = request.sampling.n or 1
            top = request.sampling.top_logprobs if request.sampling.logprobs else 0
            result = llm_pb2.ChatCompleteResult(id="chatcmpl-scripted", model=request.model_id,
                                                usage=llm_pb2.TokenUsage(prompt_tokens=7, completion_tokens=2 * n,
                                                                         total_tokens=7 + 2 * n))
            for i in range(n):
                choice = result.choices.add(index=i, finish_reason=llm_pb2.FINISH_REASON_LENGTH,
                                            message=llm_pb2.ChatMessage(role=llm_pb2.ROLE_ASSISTANT, content="Hello"))
                if top:
                    choice.logprobs.extend([_lp("Hel", top), _lp("lo", top)])
                if request.tools:
                    choice.message.content = ""
                    choice.finish_reason = llm_pb2.FINISH_REASON_TOOL_CALLS
                    choice.message.tool_calls.add(id=f"call_{i}", type="function", function=llm_pb2.FunctionCall(
                        name=request.tools[0].function.name, arguments='{"city": "Paris"}'))
            if last != "whole only":
                for i in range(n):
                    if request.tools:
                        name = request.tools[0].function.name
                        for delta in (llm_pb2.ToolCallDelta(index=0, id=f"call_{i}", type="function", name=name),
                                      llm_pb2.ToolCallDelta(index=0, arguments='{"city": '),
                                      llm_pb2.ToolCallDelta(index=0, arguments='"Paris"}')):
                            yield llm_pb2.ChatCompleteEvent(chunk=llm_pb2.ChatCompleteChunk(
                                choices=[llm_pb2.ChoiceDelta(index=i, tool_calls=[delta])]))
                        yield llm_pb2.ChatCompleteEvent(chunk=llm_pb2.ChatCompleteChunk(
                            choices=[llm_pb2.ChoiceDelta(index=i, finish_reason=llm_pb2.FINISH_REASON_TOOL_CALLS)]))
                        continue
                    for k, piece in enumerate(("Hel", "lo")):
                        delta = llm_pb2.ChoiceDelta(index=i, content=piece,
                                                    finish_reason=llm_pb2.FINISH_REASON_LENGTH if k == 1 else 0)
                        if top:
                            delta.logprobs.append(_lp(piece, top))
                        yield llm_pb2.ChatCompleteEvent(chunk=llm_pb2.ChatCompleteChunk(choices=[delta]))
                        if last == "fail midway":
                            raise InvalidArgument("failing midway on purpose", field="messages")
            yield llm_pb2.ChatCompleteEvent(usage=common_pb2.Usage(items=[
                common_pb2.UsageItem(unit="input_tokens", quantity=7)]))
            yield llm_pb2.ChatCompleteEvent(result=result)

    @servicer_errors
    async def Complete(self, request: llm_pb2.CompleteRequest, context: Any) -> AsyncIterator[llm_pb2.CompleteEvent]:
        self.seen.append(request)
        async with self.runtime.job(context, request.model_id):
            n = request.sampling.n or 1
            top = request.sampling.top_logprobs if request.sampling.logprobs else 0
            result = llm_pb2.CompleteResult(id="cmpl-scripted", model=request.model_id,
                                            usage=llm_pb2.TokenUsage(prompt_tokens=3, completion_tokens=2 * n))
            for i in range(n):
                text = f"{request.prompt}!" if request.echo else "!"
                c = result.choices.add(index=i, text=text, finish_reason=llm_pb2.FINISH_REASON_STOP)
                if top:
                    c.logprobs.append(_lp("!", top))
                delta = llm_pb2.CompletionDelta(index=i, text=text, finish_reason=llm_pb2.FINISH_REASON_STOP)
                if top:
                    delta.logprobs.append(_lp("!", top))
                yield llm_pb2.CompleteEvent(chunk=llm_pb2.CompleteChunk(choices=[delta]))
            yield llm_pb2.CompleteEvent(result=result)

    @servicer_errors
    async def Embed(self, request: llm_pb2.EmbedRequest, context: Any) -> llm_pb2.EmbedResponse:
        self.seen.append(request)
        async with self.runtime.job(context, request.model_id):
            dims = request.dimensions if request.HasField("dimensions") else 8
            return llm_pb2.EmbedResponse(model=request.model_id, usage=llm_pb2.TokenUsage(
                prompt_tokens=len(request.input), total_tokens=len(request.input)), data=[
                llm_pb2.Embedding(index=i, embedding=[i + j / 8 for j in range(dims)])
                for i in range(len(request.input))])


class ScriptedLLMComponent(WorkerComponent):
    service = "llm"
    grpc_services = ["genmesh.v1.LLM"]
    uses_torch = False
    loads_weights = False

    def add_servicers(self, server: grpc.aio.Server) -> None:
        self.servicer = ScriptedLLM(self.runtime)
        llm_pb2_grpc.add_LLMServicer_to_server(self.servicer, server)


def png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


class ScriptedImageGen(imagegen_pb2_grpc.ImageGenServicer):
    """Answers every request with inline PNG bytes, whatever `inline` says (the edge must still
    answer a URL when asked for one)."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.seen: list[Any] = []

    @servicer_errors
    async def GenerateImage(self, request: imagegen_pb2.GenerateImageRequest,
                            context: Any) -> AsyncIterator[imagegen_pb2.GenerateImageEvent]:
        self.seen.append(request)
        async with self.runtime.job(context, request.model_id):
            w, h = request.width or 64, request.height or 64
            yield imagegen_pb2.GenerateImageEvent(result=imagegen_pb2.GenerateImageResult(
                prompt=request.prompt, seed=1, images=[
                    common_pb2.Media(data=png(w, h), content_type="image/png", width=w, height=h)
                    for _ in range(request.num_images or 1)]))


class ScriptedImageGenComponent(WorkerComponent):
    service = "imagegen"
    grpc_services = ["genmesh.v1.ImageGen"]
    uses_torch = False
    loads_weights = False

    def add_servicers(self, server: grpc.aio.Server) -> None:
        self.servicer = ScriptedImageGen(self.runtime)
        imagegen_pb2_grpc.add_ImageGenServicer_to_server(self.servicer, server)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mesh(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Mesh, ScriptedLLM]]:
    m = await start_mesh(infra, tmp_path_factory.mktemp("edge-llm"), ["router", "billing", "edge"])
    components = [ScriptedLLMComponent(m.worker_settings("llm")),
                  ScriptedImageGenComponent(m.worker_settings("imagegen"))]
    try:
        async with contextlib.AsyncExitStack() as stack:
            for component in components:
                await stack.enter_async_context(serve_in_mesh(component))
            await wait_for_workers(m.supervisor, ["llm", "imagegen"])
            yield m, components[0].servicer
    finally:
        await m.supervisor.stop()


@pytest.fixture
def client(mesh: tuple[Mesh, ScriptedLLM]) -> openai.AsyncOpenAI:
    m, _ = mesh
    return openai.AsyncOpenAI(base_url=f"{m.edge_url}/v1", api_key=m.api_key, max_retries=0,
                              _strict_response_validation=True)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def test_chat_request_reaches_the_worker_fully_translated(client: openai.AsyncOpenAI,
                                                                mesh: tuple[Mesh, ScriptedLLM]) -> None:
    await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "developer", "content": "sys"},
                                  {"role": "user", "content": [{"type": "text", "text": "look"}, {
                                      "type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}],
        temperature=0.3, top_p=0.9, seed=42, stop=["\n"], max_completion_tokens=9, presence_penalty=0.5,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"},
                                                                "strict": True}},
        extra_body={"top_k": 5})
    req = mesh[1].seen[-1]
    assert req.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the alias, resolved
    assert [m.role for m in req.messages] == [llm_pb2.ROLE_DEVELOPER, llm_pb2.ROLE_USER]
    assert [(p.type, p.text or p.image_url[:10]) for p in req.messages[1].parts] == [
        ("text", "look"), ("image_url", "data:image")]
    s = req.sampling
    assert (s.temperature, s.seed, list(s.stop), s.max_tokens, s.top_k) == (
        pytest.approx(0.3), 42, ["\n"], 9, 5)
    assert req.response_format.type == "json_schema" and req.response_format.strict
    assert dict(req.response_format.json_schema) == {"type": "object"}


async def test_chat_completion_with_logprobs(client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(model=CHAT, messages=user("hi"), n=2,
                                                                 logprobs=True, top_logprobs=2)
    out = raw.parse()
    assert [c.message.content for c in out.choices] == ["Hello", "Hello"]
    # the body's id is the router's request id, not the worker's
    assert out.choices[0].finish_reason == "length" and out.id == "chatcmpl-" + raw.headers["x-request-id"]
    assert [e.token for e in out.choices[0].logprobs.content] == ["Hel", "lo"]
    assert len(out.choices[0].logprobs.content[0].top_logprobs) == 2
    assert out.usage.total_tokens == 11


async def test_streamed_chat_has_role_first_one_finish_per_choice_and_usage_last(client: openai.AsyncOpenAI) -> None:
    for prompt in ("hi", "whole only"):  # a worker that streams, and one that sends only its result
        stream = await client.chat.completions.create(model=CHAT, messages=user(prompt), n=2, stream=True,
                                                      stream_options={"include_usage": True}, logprobs=True,
                                                      top_logprobs=1)
        chunks = [c async for c in stream]
        per_choice: dict[int, list[Any]] = {0: [], 1: []}
        for chunk in chunks[:-1]:
            per_choice[chunk.choices[0].index].append(chunk.choices[0])
        for choices in per_choice.values():
            assert choices[0].delta.role == "assistant" and choices[0].delta.content == ""
            assert "".join(c.delta.content or "" for c in choices) == "Hello"
            assert [c.finish_reason for c in choices if c.finish_reason] == ["length"]
            assert [t.token for c in choices if c.logprobs for t in c.logprobs.content] == ["Hel", "lo"]
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
        assert len({c.id for c in chunks}) == 1


async def test_streamed_tool_calls_follow_openai_deltas(client: openai.AsyncOpenAI) -> None:
    for choice, reason in (("auto", "tool_calls"), ({"type": "function", "function": {"name": "get_weather"}}, "stop")):
        stream = await client.chat.completions.create(model=CHAT, messages=user("weather?"), tools=[TOOL],
                                                      tool_choice=choice, stream=True)
        chunks = [c async for c in stream]
        deltas = [d for c in chunks for ch in c.choices for d in (ch.delta.tool_calls or [])]
        assert (deltas[0].index, deltas[0].id, deltas[0].type, deltas[0].function.name,
                deltas[0].function.arguments) == (0, "call_0", "function", "get_weather", "")
        assert all(d.id is None and d.function.name is None for d in deltas[1:])
        assert json.loads("".join(d.function.arguments for d in deltas)) == {"city": "Paris"}
        assert [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason] == [reason]
        whole = await client.chat.completions.create(model=CHAT, messages=user("weather?"), tools=[TOOL],
                                                     tool_choice=choice)
        call = whole.choices[0].message.tool_calls[0]
        assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
            "call_0", "get_weather", {"city": "Paris"})
        assert whole.choices[0].finish_reason == reason and whole.choices[0].message.content is None


async def test_an_error_mid_stream_is_an_error_event(mesh: tuple[Mesh, ScriptedLLM],
                                                     client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model=CHAT, messages=user("fail midway"), stream=True)
    with pytest.raises(openai.APIError) as err:
        async for _ in stream:
            pass
    assert "failing midway" in err.value.message
    async with httpx.AsyncClient(timeout=30) as raw:  # as it is on the wire
        resp = await raw.post(f"{mesh[0].edge_url}/v1/chat/completions", json={
            "model": CHAT, "messages": user("fail midway"), "stream": True},
            headers={"authorization": f"Bearer {mesh[0].api_key}", "accept": "application/json"})
    events = [line for line in resp.text.split("\n\n") if line]
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert json.loads(events[-1].removeprefix("data: "))["error"]["param"] == "messages"
    assert "[DONE]" not in resp.text


async def test_completions_plain_streamed_and_several_prompts(client: openai.AsyncOpenAI) -> None:
    out = await client.completions.create(model=CHAT, prompt=["a", "b"], n=2, echo=True, logprobs=1)
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    assert [c.text for c in out.choices] == ["a!", "a!", "b!", "b!"]
    assert out.choices[0].logprobs.tokens == ["!"] and out.usage.completion_tokens == 8
    # The SDK parses completion chunks as `Completion`, whose finish_reason its types declare
    # required, yet the API sends null until a choice ends (as OpenAI and vLLM do): read the
    # stream without strict validation.
    lenient = client.with_options()
    lenient._strict_response_validation = False
    stream = await lenient.completions.create(model=CHAT, prompt=["a", "b"], stream=True,
                                              stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert "".join(ch.text for c in chunks for ch in c.choices) == "!!"
    assert sorted(ch.index for c in chunks for ch in c.choices if ch.finish_reason) == [0, 1]
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 6


async def test_embeddings_in_base64_and_float(client: openai.AsyncOpenAI, mesh: tuple[Mesh, ScriptedLLM]) -> None:
    # Left to its default the SDK asks for base64 and decodes it in a post-parser that runs after
    # strict validation (which expects lists): the default path is read without strict validation.
    lenient = client.with_options()
    lenient._strict_response_validation = False
    default = await lenient.embeddings.create(model="text-embedding-3-small", input=["x", "y"])
    assert default.data[1].embedding == [1 + j / 8 for j in range(8)]
    floats = await client.embeddings.create(model=EMBED, input="x", encoding_format="float", dimensions=3)
    assert floats.data[0].embedding == [0, 0.125, 0.25]
    async with httpx.AsyncClient(timeout=30) as raw:
        resp = await raw.post(f"{mesh[0].edge_url}/v1/embeddings", json={
            "model": EMBED, "input": "x", "encoding_format": "base64"},
            headers={"authorization": f"Bearer {mesh[0].api_key}"})
    packed = base64.b64decode(resp.json()["data"][0]["embedding"])
    assert struct.unpack("<8f", packed) == tuple(j / 8 for j in range(8))


async def test_a_batch_of_chat_requests_runs_on_the_queue(client: openai.AsyncOpenAI) -> None:
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": CHAT, "messages": user(f"q{i}"), "tools": [TOOL] if i == 1 else None}}
             for i in range(3)]
    for line in lines:
        if line["body"]["tools"] is None:
            del line["body"]["tools"]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    file = await client.files.create(file=("b.jsonl", data), purpose="batch")
    batch = await client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
    deadline = time.monotonic() + 60
    while batch.status != "completed":
        assert batch.status in ("in_progress", "finalizing") and time.monotonic() < deadline, batch
        await asyncio.sleep(0.1)
        batch = await client.batches.retrieve(batch.id)
    assert batch.request_counts.model_dump() == {"total": 3, "completed": 3, "failed": 0}
    content = await client.files.content(batch.output_file_id)
    out = {line["custom_id"]: line for line in map(json.loads, content.text.splitlines())}
    assert out["r0"]["response"]["body"]["choices"][0]["message"]["content"] == "Hello"
    assert out["r1"]["response"]["body"]["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert all(line["response"]["status_code"] == 200 and line["error"] is None for line in out.values())
    again = await client.batches.retrieve(batch.id)
    assert again.output_file_id == batch.output_file_id and again.status == "completed"


async def test_images_as_b64_json_and_as_urls(client: openai.AsyncOpenAI) -> None:
    b64 = await client.images.generate(model="dall-e-3", prompt="a red square", n=2, size="128x64",
                                       response_format="b64_json")
    assert len(b64.data) == 2 and b64.size == "128x64" and b64.output_format == "png"
    assert base64.b64decode(b64.data[0].b64_json) == png(128, 64)
    urls = await client.images.generate(model="genmesh/tiny-sd", prompt="a red square")
    async with httpx.AsyncClient(timeout=30) as anon:
        got = await anon.get(urls.data[0].url)
    assert got.status_code == 200 and got.content == png(64, 64)
    for size in ("huge", "16x16"):  # malformed at the edge; out of the model's range at the router
        with pytest.raises(openai.BadRequestError) as err:
            await client.images.generate(model="dall-e-3", prompt="x", size=size)
        assert err.value.param == "size"
