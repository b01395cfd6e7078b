"""The official openai SDK (strict response validation, no retries) against a running mesh: models,
chat (plain, streamed with usage, tools, JSON mode, logprobs), completions, embeddings (base64 and
float), images, transcription in every format, speech, files and batches, and its error classes.

Modalities whose worker does not exist yet are skipped, naming the missing module."""
from __future__ import annotations

import importlib.util
import io
import json
import re
import time
from pathlib import Path
from dataclasses import dataclass
from typing import AsyncIterator

import httpx
import openai
import pytest
import pytest_asyncio

from genmesh.models import build
from tests.conftest import Infra, Mesh, start_mesh
from tests.e2e.smollm2 import strict_sdk

CHAT = "genmesh/tiny-llama"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
HAS_VLLM = importlib.util.find_spec("vllm") is not None
EMBED = "sentence-transformers/all-MiniLM-L6-v2"
IMAGE = "genmesh/tiny-sd"
SRT_CUE = re.compile(r"^1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n", re.M)
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}}}


def has_service(name: str) -> bool:
    return importlib.util.find_spec(f"genmesh.services.{name}.server") is not None


def needs(service: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not has_service(service),
                              reason=f"genmesh.services.{service}.server does not exist yet")


# Images run on a mesh of their own, so that one modality's trouble never hides another's results.
SERVICES = [s for s in ("llm", "audio") if has_service(s)]
MODELS = {"llm": [CHAT, SMOLLM2], "imagegen": [IMAGE], "audio": []}


async def modality_mesh(infra: Infra, tmp: Path, models_dir: Path, services: list[str],
                        extra_env: dict[str, str] | None = None) -> Mesh:
    build.build_missing(models_dir, [m for service in services for m in MODELS[service]])
    # The fallback (transformers) engine serves every language model here; the vLLM mesh below
    # serves SmolLM2 through vLLM.
    env = {"GENMESH_LLM_ENGINE": "transformers", **(extra_env or {})}
    return await start_mesh(infra, tmp, ["router", "billing", *services, "edge"], models_dir=models_dir,
                            extra_env=env)


def sdk(mesh: Mesh) -> openai.OpenAI:
    return strict_sdk(mesh)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mesh(infra: Infra, tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> AsyncIterator[Mesh]:
    m = await modality_mesh(infra, tmp_path_factory.mktemp("openai"), models_dir, SERVICES)
    try:
        yield m
    finally:
        await m.supervisor.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def image_mesh(infra: Infra, tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> AsyncIterator[Mesh]:
    m = await modality_mesh(infra, tmp_path_factory.mktemp("openai-images"), models_dir, ["imagegen"])
    try:
        yield m
    finally:
        await m.supervisor.stop()


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> openai.OpenAI:
    return sdk(mesh)


@pytest.fixture(scope="module")
def vllm_mesh(smollm2: Mesh) -> Mesh:
    """The session's SmolLM2 mesh (tests/e2e/conftest.py), whose llm worker serves SmolLM2 with
    vLLM's engine where vLLM is installed (GENMESH_LLM_ENGINE=vllm: no silent fallback); it was
    warmed when it started, so vLLM's start is in no test's time."""
    if not HAS_VLLM:
        pytest.skip("vLLM is not installed here (the fallback engine is tested alone)")
    return smollm2


@dataclass
class Chat:
    client: openai.OpenAI
    model: str


@pytest.fixture(scope="module", params=["fallback", "vllm"])
def chat(request: pytest.FixtureRequest) -> Chat:
    """The chat tests run on the transformers engine (tiny Llama) and on vLLM (SmolLM2)."""
    if request.param == "fallback":
        return Chat(sdk(request.getfixturevalue("mesh")), CHAT)
    return Chat(sdk(request.getfixturevalue("vllm_mesh")), SMOLLM2)


# --- models and errors ----------------------------------------------------------------------------

def test_models_list_the_catalog_and_aliases(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {CHAT, EMBED, IMAGE, "gpt-4o-mini", "whisper-1", "tts-1", "text-embedding-3-small"} <= ids
    assert client.models.retrieve("whisper-1").id == "whisper-1"


def test_sdk_errors_map_to_its_exception_classes(mesh: Mesh, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "x"}], temperature=5)
    assert bad.value.param == "temperature" and bad.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="nobody/nothing", input="x")
    assert missing.value.code == "model_not_found"
    stranger = openai.OpenAI(base_url=f"{mesh.edge_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()


# --- chat -----------------------------------------------------------------------------------------

@needs("llm")
def test_chat_completion(chat: Chat) -> None:
    client, model = chat.client, chat.model
    out = client.chat.completions.create(model=model, messages=[{"role": "system", "content": "Be brief."},
                                                               {"role": "user", "content": "Say hi"}],
                                         max_tokens=8, seed=1, temperature=0)
    choice = out.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert 0 < out.usage.completion_tokens <= 8 and out.usage.prompt_tokens > 0
    alias = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                           max_completion_tokens=2)
    assert alias.usage.completion_tokens <= 2


@needs("llm")
def test_streamed_chat_with_usage_finishes_each_choice_once(chat: Chat) -> None:
    client, model = chat.client, chat.model
    chunks = list(client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Count to three"}], max_tokens=12, n=2, seed=3,
        stream=True, stream_options={"include_usage": True}))
    firsts = {}
    finishes: dict[int, list[str]] = {0: [], 1: []}
    text = {0: "", 1: ""}
    for chunk in chunks[:-1]:
        assert chunk.object == "chat.completion.chunk" and len(chunk.choices) == 1
        c = chunk.choices[0]
        firsts.setdefault(c.index, c.delta)
        text[c.index] += c.delta.content or ""
        if c.finish_reason:
            finishes[c.index].append(c.finish_reason)
    for index in (0, 1):
        assert firsts[index].role == "assistant" and firsts[index].content == ""
        assert len(finishes[index]) == 1
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


@needs("llm")
def test_the_readme_chat_without_a_temperature_samples_with_the_models_defaults(vllm_mesh: Mesh) -> None:
    """The model's own sampling defaults (SmolLM2: temperature 0.2, top_p 0.9) fill what the
    README's example leaves out, on the engine this machine serves SmolLM2 with (vLLM): with one
    seed, leaving them out samples exactly as sending them does. (How often the unseeded README
    call answers "Paris" is a measurement, in `make bench`'s LLM section: 2 of 3 here.)"""
    client = sdk(vllm_mesh)

    def ask(**sampling: float) -> str:
        return client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=40, seed=7, **sampling).choices[0].message.content

    assert ask() == ask(temperature=0.2, top_p=0.9)


@needs("llm")
def test_a_named_tool_is_called_with_json_arguments(chat: Chat) -> None:
    client, model = chat.client, chat.model
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    choice = {"type": "function", "function": {"name": "get_weather"}}
    out = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL], tool_choice=choice,
                                         max_tokens=40, seed=0)
    call = out.choices[0].message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    assert isinstance(json.loads(call.function.arguments), dict)
    assert out.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL],
                                            tool_choice=choice, max_tokens=40, seed=0, stream=True)
    deltas = [d for chunk in stream for c in chunk.choices for d in (c.delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].function.name == "get_weather" and deltas[0].function.arguments == ""
    assert isinstance(json.loads("".join(d.function.arguments or "" for d in deltas)), dict)


@needs("llm")
def test_json_mode_and_logprobs(chat: Chat) -> None:
    client, model = chat.client, chat.model
    out = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "A JSON object"}],
                                         response_format={"type": "json_object"}, max_tokens=24, seed=2)
    if out.choices[0].finish_reason == "stop":
        json.loads(out.choices[0].message.content)
    lp = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=3,
                                        logprobs=True, top_logprobs=2)
    entries = lp.choices[0].logprobs.content
    assert entries and all(len(e.top_logprobs) == 2 and e.logprob <= 0 for e in entries)


@needs("llm")
def test_completions_plain_and_streamed(chat: Chat) -> None:
    client, model = chat.client, chat.model
    out = client.completions.create(model=model, prompt="Once upon a time", max_tokens=5, seed=1)
    assert out.object == "text_completion" and isinstance(out.choices[0].text, str)
    assert out.usage.completion_tokens <= 5
    # Completion chunks parse as `Completion`, whose finish_reason the SDK's types declare required,
    # yet the API sends null until a choice ends (as OpenAI does): read them without strict validation.
    lenient = client.with_options()
    lenient._strict_response_validation = False
    chunks = list(lenient.completions.create(model=model, prompt="Once", max_tokens=4, stream=True,
                                             stream_options={"include_usage": True}))
    assert sum(1 for c in chunks for ch in c.choices if ch.finish_reason) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens <= 4


@needs("llm")
def test_embeddings_base64_by_default_and_float(client: openai.OpenAI) -> None:
    # Left to its default the SDK asks for base64 and decodes it in a post-parser that runs after
    # strict validation (which expects lists): the default path is read without strict validation.
    lenient = client.with_options()
    lenient._strict_response_validation = False
    default = lenient.embeddings.create(model="text-embedding-3-small", input=["a cat", "a dog"])
    floats = client.embeddings.create(model=EMBED, input=["a cat", "a dog"], encoding_format="float")
    assert [d.index for d in default.data] == [0, 1] and len(default.data[0].embedding) == 384
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert default.usage.prompt_tokens > 0
    small = client.embeddings.create(model=EMBED, input="x", dimensions=64, encoding_format="float")
    assert len(small.data[0].embedding) == 64


# --- images ---------------------------------------------------------------------------------------

@needs("imagegen")
def test_images_as_b64_json_and_as_urls(image_mesh: Mesh) -> None:
    import base64

    client = sdk(image_mesh)
    b64 = client.images.generate(model=IMAGE, prompt="a red square", n=2, size="64x64", response_format="b64_json")
    assert len(b64.data) == 2
    assert all(base64.b64decode(d.b64_json)[:8] == b"\x89PNG\r\n\x1a\n" for d in b64.data)
    urls = client.images.generate(model="dall-e-3", prompt="a blue circle", size="64x64", response_format="url")
    got = httpx.get(urls.data[0].url, timeout=30)
    assert got.status_code == 200 and got.content[:8] == b"\x89PNG\r\n\x1a\n"


# --- audio ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def speech_wav(client: openai.OpenAI) -> bytes:
    if not has_service("audio"):
        pytest.skip("genmesh.services.audio.server does not exist yet")
    wav = client.audio.speech.create(model="tts-1", voice="alloy", input="hello world, this is genmesh",
                                     response_format="wav").content
    assert wav[:4] == b"RIFF"
    return wav


@needs("audio")
def test_speech_streams_audio_with_its_content_type(client: openai.OpenAI) -> None:
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="nova", input="First sentence. Second sentence.", response_format="mp3") as resp:
        assert resp.headers["content-type"] == "audio/mpeg"
        data = b"".join(resp.iter_bytes())
    assert data[:3] == b"ID3" or data[0] == 0xFF
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(model="tts-1", voice="alloy", input="", response_format="wav")
    assert err.value.param == "input"


@needs("audio")
def test_transcription_in_every_format(client: openai.OpenAI, speech_wav: bytes) -> None:
    def transcribe(**kwargs: object) -> object:
        return client.audio.transcriptions.create(model="whisper-1", file=("hello.wav", io.BytesIO(speech_wav)),
                                                  **kwargs)

    assert isinstance(transcribe().text, str)
    assert isinstance(transcribe(response_format="json").text, str)
    assert isinstance(transcribe(response_format="text"), str)
    assert SRT_CUE.search(transcribe(response_format="srt"))
    assert transcribe(response_format="vtt").startswith("WEBVTT")
    verbose = transcribe(response_format="verbose_json", timestamp_granularities=["word", "segment"],
                         language="en", temperature=0)
    assert verbose.duration > 0 and isinstance(verbose.segments, list) and verbose.words is not None
    with pytest.raises(openai.BadRequestError) as err:
        transcribe(response_format="docx")
    assert err.value.param == "response_format"
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=("x.wav", io.BytesIO(b"not audio at all")))
    assert err.value.param == "file"


# --- files and batches ----------------------------------------------------------------------------

def test_files_upload_list_content_delete(client: openai.OpenAI) -> None:
    body = b'{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {}}\n'
    created = client.files.create(file=("in.jsonl", io.BytesIO(body)), purpose="batch")
    assert created.bytes == len(body) and created.filename == "in.jsonl" and created.status == "processed"
    assert created.id in {f.id for f in client.files.list(purpose="batch")}
    assert client.files.retrieve(created.id).purpose == "batch"
    assert client.files.content(created.id).content == body
    assert client.files.delete(created.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def upload_jsonl(client: openai.OpenAI, lines: list[dict]) -> str:
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return client.files.create(file=("batch.jsonl", io.BytesIO(data)), purpose="batch").id


def test_a_batch_with_invalid_lines_fails_naming_them(client: openai.OpenAI) -> None:
    file_id = upload_jsonl(client, [
        {"custom_id": "ok", "method": "POST", "url": "/v1/embeddings", "body": {"model": EMBED, "input": "x"}},
        {"custom_id": "bad-model", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "nobody/nothing", "input": "x"}},
        {"custom_id": "bad-url", "method": "POST", "url": "/v1/chat/completions", "body": {}},
    ])
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h")
    assert batch.status == "failed" and batch.failed_at
    errors = {e.line: e for e in batch.errors.data}
    assert set(errors) == {2, 3}
    assert errors[2].code == "model_not_found" and errors[2].param == "body.model"
    assert errors[3].code == "mismatched_endpoint"
    assert client.batches.retrieve(batch.id).status == "failed"


@needs("llm")
def test_a_batch_runs_every_line_through_the_queue(client: openai.OpenAI) -> None:
    file_id = upload_jsonl(client, [
        {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": CHAT, "messages": [{"role": "user", "content": f"Hello {i}"}], "max_tokens": 4}}
        for i in range(3)])
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"purpose": "test"})
    assert batch.status == "in_progress" and batch.request_counts.total == 3
    deadline = time.monotonic() + 120
    while batch.status not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.request_counts.completed == 3 and batch.completed_at
    lines = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    assert sorted(line["custom_id"] for line in lines) == ["req-0", "req-1", "req-2"]
    for line in lines:
        assert line["error"] is None and line["response"]["status_code"] == 200 and line["response"]["request_id"]
        assert line["response"]["body"]["object"] == "chat.completion"
    assert batch.id in {b.id for b in client.batches.list()}


@needs("llm")
def test_a_cancelled_batch_ends_cancelled_with_every_request_accounted_for(client: openai.OpenAI) -> None:
    file_id = upload_jsonl(client, [
        {"custom_id": f"c-{i}", "method": "POST", "url": "/v1/embeddings", "body": {"model": EMBED, "input": f"t{i}"}}
        for i in range(20)])
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h")
    batch = client.batches.cancel(batch.id)
    assert batch.status in ("cancelling", "cancelled", "completed")
    deadline = time.monotonic() + 60
    while batch.status == "cancelling":
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    assert batch.status in ("cancelled", "completed")  # it may have finished before the cancel landed
    lines = client.files.content(batch.output_file_id).text.splitlines()
    assert len(lines) == 20 and batch.request_counts.completed + batch.request_counts.failed == 20
