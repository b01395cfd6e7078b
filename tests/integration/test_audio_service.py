"""The audio worker over gRPC: its server in this process for the engines (PocketSphinx, tiny
Whisper, Whisper base, espeak-ng, tiny VITS, Piper), formats, errors and cancellation, and once
behind the router (real NATS and Postgres) as clients reach it, availability included."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import grpc
import numpy as np
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2

from genmesh import blobstore
from genmesh.models import build
from genmesh.rpc import KEY_ID_KEY
from genmesh.services.audio.encode import FORMATS, encode_audio
from genmesh.services.audio.params import SPEECH_FORMATS
from genmesh.services.audio.server import AudioComponent
from genmesh.services.audio.tts_espeak import EspeakTTS
from genmesh.services.audio.voices import resolve_voice
from genmesh.settings import Settings
from genmesh.v1 import audio_pb2, audio_pb2_grpc, router_pb2, router_pb2_grpc
from tests.conftest import Infra, serve_in_process, start_mesh

pytestmark = pytest.mark.asyncio(loop_scope="session")

SIGNING_SECRET = "test-signing-secret"  # the one start_mesh gives its services
SPHINX, TINY_WHISPER, ESPEAK, TINY_VITS = ("cmusphinx/pocketsphinx-en", "genmesh/tiny-whisper",
                                           "espeak-ng/espeak-ng", "genmesh/tiny-vits")
PIPER = "rhasspy/piper-en_US-joe-medium"
SRT_CUE = re.compile(r"\d+\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n[^\n]+")
VTT_CUE = re.compile(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\n[^\n]+")
TEXT = "Hello there. Streaming speech arrives one sentence at a time! Does it work? It does."


@dataclass
class Speech:
    wav: bytes
    seconds: float


@dataclass
class Worker:
    component: AudioComponent
    stub: audio_pb2_grpc.AudioStub


@pytest.fixture(scope="module")
def built_models(models_dir: Path) -> Path:
    build.build_missing(models_dir, [TINY_WHISPER, TINY_VITS])
    return models_dir


@pytest.fixture(scope="module")
def speech() -> Speech:
    """Two sentences spoken by espeak-ng with a clear pause between them, as an uploaded WAV."""
    tts = EspeakTTS()
    voice = resolve_voice("ash")
    rate = tts.sample_rate
    silence = np.zeros(int(0.25 * rate), np.float32)
    audio = np.concatenate([silence, tts.render("one two three four five", voice, 1.0),
                            np.zeros(int(1.2 * rate), np.float32),
                            tts.render("seven eight nine ten", voice, 1.0), silence])
    return Speech(encode_audio(audio, rate, "wav"), len(audio) / rate)



@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def worker(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Worker]:
    """The audio component's gRPC server in this process; no NATS, so no heartbeats."""
    settings = Settings(models_dir=built_models, data_dir=tmp_path_factory.mktemp("audio-worker"),
                        nats_url=None, signing_secret=SIGNING_SECRET, torch_threads=1,
                        host="127.0.0.1", port=0)
    component = AudioComponent(settings)
    async with serve_in_process(component) as channel:
        yield Worker(component, audio_pb2_grpc.AudioStub(channel))


async def collect(call: Any) -> list[Any]:
    return [event async for event in call]


def cases(events: list[Any]) -> list[str]:
    return [e.WhichOneof("event") for e in events]


def assert_result_last_usage_before(events: list[Any], unit: str) -> None:
    kinds = cases(events)
    assert kinds[-1] == "result" and kinds[-2] == "usage", kinds
    assert kinds.count("result") == 1 and kinds.count("usage") == 1
    assert [i.unit for i in events[-2].usage.items] == [unit]


def assert_well_formed(segments: list[audio_pb2.TranscriptSegment], duration: float) -> None:
    previous_end = 0.0
    for index, segment in enumerate(segments):
        assert segment.id == index
        assert previous_end <= segment.start <= segment.end <= duration + 1e-6
        assert segment.text and segment.text == segment.text.strip()
        for word in segment.words:
            assert segment.start <= word.start <= word.end <= segment.end
        previous_end = segment.end


def decode(data: bytes) -> tuple[int, float]:
    """(sample rate, seconds) of a whole file, read by PyAV."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.rate, samples / stream.rate


async def expect_invalid(call: Any, field: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(call)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert field in err.value.details()
    assert ("genmesh-field", field) in tuple(err.value.trailing_metadata())
    return err.value


async def assert_still_serving(stub: audio_pb2_grpc.AudioStub) -> None:
    events = await collect(stub.Synthesize(audio_pb2.SynthesizeRequest(
        model_id=ESPEAK, input="Still here.", response_format="pcm", inline=True)))
    assert events[-1].result.audio.data


# --- Transcribe ---------------------------------------------------------------------------------

async def test_transcribe_streams_segments_before_usage_and_result(worker: Worker,
                                                                   speech: Speech) -> None:
    events = await collect(worker.stub.Transcribe(audio_pb2.TranscribeRequest(
        model_id=SPHINX, audio=speech.wav, response_format="verbose_json",
        timestamp_granularities=["segment", "word"])))
    assert_result_last_usage_before(events, "audio_seconds")
    kinds = cases(events)
    streamed = [e.segment for e in events if e.HasField("segment")]
    result = events[-1].result
    # Every segment went out as soon as it was recognised, before usage and the result.
    assert len(streamed) == 2 and max(i for i, k in enumerate(kinds) if k == "segment") < len(
        kinds) - 2
    assert list(result.segments) == streamed
    assert result.duration_seconds == pytest.approx(speech.seconds, abs=0.01)
    assert events[-2].usage.items[0].quantity == pytest.approx(result.duration_seconds)
    assert_well_formed(streamed, result.duration_seconds)
    assert streamed[0].start == pytest.approx(0.25, abs=0.15) and streamed[0].end < streamed[1].start
    assert "three" in streamed[0].text.split()  # espeak's robot voice is hard; digits come through
    assert result.text == f"{streamed[0].text} {streamed[1].text}"
    assert (result.language, result.task) == ("en", "transcribe")
    assert result.words and list(result.words) == [w for s in streamed for w in s.words]
    fractions = [e.progress.fraction for e in events if e.HasField("progress")
                 and e.progress.stage == "transcribing"]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] <= 1
    body = json.loads(result.formatted)
    assert result.content_type == "application/json"
    assert body["language"] == "english" and len(body["segments"]) == 2 and body["words"]


@pytest.mark.parametrize("fmt, cue, separator", [("srt", SRT_CUE, ","), ("vtt", VTT_CUE, ".")],
                         ids=["srt", "vtt"])
async def test_transcript_comes_back_as_valid_subtitles(worker: Worker, speech: Speech, fmt: str,
                                                        cue: re.Pattern[str],
                                                        separator: str) -> None:
    events = await collect(worker.stub.Transcribe(audio_pb2.TranscribeRequest(
        model_id=SPHINX, audio=speech.wav, response_format=fmt)))
    result = events[-1].result
    assert result.content_type.startswith("application/x-subrip" if fmt == "srt" else "text/vtt")
    body = result.formatted
    if fmt == "vtt":
        assert body.startswith("WEBVTT\n\n")
        body = body[len("WEBVTT\n\n"):]
    cues = body.strip("\n").split("\n\n")
    assert len(cues) == len(result.segments) == 2
    for text, segment in zip(cues, result.segments, strict=True):
        assert cue.fullmatch(text), text
        assert text.endswith(segment.text)
        seconds = int(segment.start * 1000 + 0.5) // 1000
        assert f"00:00:{seconds:02d}{separator}" in text
    assert not result.words  # words only when asked for


async def test_audio_url_takes_a_data_uri_or_a_signed_file_url(worker: Worker,
                                                               speech: Speech) -> None:
    store = worker.component.store
    key = blobstore.new_key("uploader", "uploads", "audio/wav")
    await store.put(key, speech.wav, "audio/wav")
    data_uri = "data:audio/wav;base64," + base64.b64encode(speech.wav).decode()
    texts = []
    for url in (data_uri, store.url(key)):
        events = await collect(worker.stub.Transcribe(audio_pb2.TranscribeRequest(
            model_id=SPHINX, audio_url=url, response_format="text")))
        texts.append(events[-1].result.formatted)
    assert texts[0] == texts[1] and "three" in texts[0]
    await expect_invalid(worker.stub.Transcribe(audio_pb2.TranscribeRequest(
        model_id=SPHINX, audio_url="https://example.com/speech.wav")), "audio_url")


async def test_tiny_whisper_transcribes_through_the_service(worker: Worker) -> None:
    # Random weights: the text is noise, but detection, windows and timestamps are Whisper's.
    noise = np.random.default_rng(0).standard_normal(5 * 16000).astype(np.float32) * 0.1
    events = await collect(worker.stub.Transcribe(audio_pb2.TranscribeRequest(
        model_id=TINY_WHISPER, audio=encode_audio(noise, 16000, "wav"), response_format="vtt")))
    assert_result_last_usage_before(events, "audio_seconds")
    result = events[-1].result
    streamed = [e.segment for e in events if e.HasField("segment")]
    assert streamed and list(result.segments) == streamed
    assert_well_formed(streamed, result.duration_seconds)
    assert result.duration_seconds == pytest.approx(5.0, abs=0.01)
    assert result.language and result.formatted.startswith("WEBVTT\n\n")
    assert all(s.tokens for s in streamed)
    # The model loaded once and stays resident, idle, for the next request.
    assert worker.component.runtime.cache.entries[TINY_WHISPER].in_flight == 0


async def test_whisper_base_hears_piper_through_the_service(worker: Worker) -> None:
    spoken = await collect(worker.stub.Synthesize(audio_pb2.SynthesizeRequest(
        model_id=PIPER, input="The weather is nice today, so we will walk to the park.",
        voice="onyx", response_format="flac", inline=True)))
    rate, seconds = decode(spoken[-1].result.audio.data)
    assert rate == spoken[-1].result.sample_rate == 22050 and seconds > 1.5
    events = await collect(worker.stub.Transcribe(audio_pb2.TranscribeRequest(
        model_id="whisper-1", audio=spoken[-1].result.audio.data, response_format="verbose_json",
        timestamp_granularities=["word"])))
    assert_result_last_usage_before(events, "audio_seconds")
    result = events[-1].result
    streamed = [e.segment for e in events if e.HasField("segment")]
    assert streamed and list(result.segments) == streamed
    assert_well_formed(streamed, result.duration_seconds)
    words = [w.word.lower().strip(",.") for w in result.words]
    assert words == "the weather is nice today so we will walk to the park".split()
    assert json.loads(result.formatted)["language"] == "english"


# --- Synthesize ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", SPEECH_FORMATS)
async def test_streamed_chunks_join_into_the_inline_file(worker: Worker, fmt: str) -> None:
    events = await collect(worker.stub.Synthesize(audio_pb2.SynthesizeRequest(
        model_id=ESPEAK, input=TEXT, voice="nova", response_format=fmt, inline=True)))
    assert_result_last_usage_before(events, "characters")
    assert events[-2].usage.items[0].quantity == len(TEXT)
    chunks = [e.chunk for e in events if e.HasField("chunk")]
    assert len(chunks) > 1 and [c.index for c in chunks] == list(range(len(chunks)))
    result = events[-1].result
    media = result.audio
    assert b"".join(c.data for c in chunks) == media.data
    assert not media.url and media.size_bytes == len(media.data)
    assert media.content_type == FORMATS[fmt].content_type
    assert media.sample_rate == result.sample_rate and media.file_name == f"speech.{fmt}"
    if fmt == "pcm":  # headerless 16-bit little-endian mono
        seconds = len(media.data) / 2 / result.sample_rate
    else:
        rate, seconds = decode(media.data)
        assert rate == result.sample_rate
    assert seconds == pytest.approx(result.duration_seconds, abs=0.1)
    assert result.duration_seconds > 2.0
    done = [e.progress for e in events if e.HasField("progress")
            and e.progress.stage == "synthesizing"]
    assert done[-1].fraction == 1.0 and done[-1].step == done[-1].total_steps == 4


async def test_the_file_is_stored_under_the_callers_key(worker: Worker) -> None:
    store = worker.component.store
    for metadata, owner in ((((KEY_ID_KEY, "key_abc"),), "key_abc"), ((), "anonymous")):
        events = await collect(worker.stub.Synthesize(audio_pb2.SynthesizeRequest(
            model_id="tts-1", input="Stored, not inline.", response_format="opus"),
            metadata=metadata))
        media = events[-1].result.audio
        assert media.url and not media.data
        key = store.key_from_url(media.url)
        assert key is not None and key.startswith(f"{owner}/audio/") and key.endswith(".opus")
        blob = await store.get(key)
        assert blob.data == b"".join(e.chunk.data for e in events if e.HasField("chunk"))
        assert blob.content_type == media.content_type == "audio/ogg; codecs=opus"


async def test_tiny_vits_synthesizes_through_the_service(worker: Worker) -> None:
    events = await collect(worker.stub.Synthesize(audio_pb2.SynthesizeRequest(
        model_id=TINY_VITS, input="Hello there. General greeting.", voice="echo",
        response_format="flac", inline=True)))
    result = events[-1].result
    assert b"".join(e.chunk.data for e in events if e.HasField("chunk")) == result.audio.data
    rate, seconds = decode(result.audio.data)
    assert rate == result.sample_rate == 16000
    assert seconds == pytest.approx(result.duration_seconds, abs=0.05) and seconds > 0


# --- errors -------------------------------------------------------------------------------------

TRANSCRIBE_ERRORS = [
    pytest.param({"audio": b""}, "audio", id="empty-audio"),
    pytest.param({"audio": b"\x13\x37garbage bytes that are no audio container" * 20}, "audio",
                 id="garbage-bytes"),
    pytest.param({"audio": b"RIFF\x00\x00\x00\x00WAVE" + bytes(range(256)) * 8}, "audio",
                 id="undecodable-wav"),
    pytest.param({"audio_url": "data:audio/wav;base64,bm90IGF1ZGlv"}, "audio_url",
                 id="data-uri-of-no-audio"),
    pytest.param({"response_format": "docx"}, "response_format", id="unknown-format"),
    pytest.param({"task": "summarize"}, "task", id="unknown-task"),
    pytest.param({"temperature": 2.0}, "temperature", id="temperature-above-1"),
    pytest.param({"language": "fr"}, "language", id="language-the-model-lacks"),
    pytest.param({"model_id": ESPEAK}, "model_id", id="speech-model"),
]
SYNTHESIZE_ERRORS = [
    pytest.param({"input": ""}, "input", id="empty-input"),
    pytest.param({"voice": "darth"}, "voice", id="unknown-voice"),
    pytest.param({"speed": 0.1}, "speed", id="speed-too-slow"),
    pytest.param({"speed": 9.0}, "speed", id="speed-too-fast"),
    pytest.param({"response_format": "midi"}, "response_format", id="unknown-format"),
    pytest.param({"model_id": SPHINX}, "model_id", id="transcription-model"),
]


@pytest.mark.parametrize("fields, field", TRANSCRIBE_ERRORS)
async def test_bad_transcribe_input_is_invalid_argument_and_the_worker_keeps_serving(
        worker: Worker, speech: Speech, fields: dict, field: str) -> None:
    request = {"model_id": SPHINX, "audio": speech.wav} | fields
    if "audio_url" in fields:
        del request["audio"]
    await expect_invalid(worker.stub.Transcribe(audio_pb2.TranscribeRequest(**request)), field)
    await assert_still_serving(worker.stub)


@pytest.mark.parametrize("fields, field", SYNTHESIZE_ERRORS)
async def test_bad_synthesize_input_is_invalid_argument_and_the_worker_keeps_serving(
        worker: Worker, fields: dict, field: str) -> None:
    request = {"model_id": ESPEAK, "input": "Hi.", "inline": True} | fields
    await expect_invalid(worker.stub.Synthesize(audio_pb2.SynthesizeRequest(**request)), field)
    await assert_still_serving(worker.stub)


@pytest.mark.parametrize("model_id", ["openai/whisper-large-v3-turbo", "facebook/mms-tts-eng"])
async def test_absent_weights_are_failed_precondition_naming_where_they_go(
        worker: Worker, speech: Speech, built_models: Path, model_id: str) -> None:
    if model_id.startswith("openai/"):
        call = worker.stub.Transcribe(audio_pb2.TranscribeRequest(model_id=model_id,
                                                                  audio=speech.wav))
    else:
        call = worker.stub.Synthesize(audio_pb2.SynthesizeRequest(model_id=model_id, input="Hi."))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(call)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert str(built_models / model_id) in err.value.details()
    await assert_still_serving(worker.stub)


async def test_unknown_model_is_not_found(worker: Worker) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(worker.stub.Synthesize(audio_pb2.SynthesizeRequest(
            model_id="nobody/nothing", input="Hi.")))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


# --- cancellation -------------------------------------------------------------------------------

async def test_cancelling_mid_synthesis_stops_the_engine(worker: Worker,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    await assert_still_serving(worker.stub)  # espeak resident
    runtime = worker.component.runtime
    entry = runtime.cache.entries[ESPEAK]
    rendered: list[str] = []
    render = entry.value.render

    def counting_render(text: str, *args: Any) -> Any:
        rendered.append(text)
        return render(text, *args)

    monkeypatch.setattr(entry.value, "render", counting_render)
    sentences = 40
    text = " ".join(f"This is sentence number {i} of a long speech." for i in range(sentences))
    call = worker.stub.Synthesize(audio_pb2.SynthesizeRequest(model_id=ESPEAK, input=text,
                                                              response_format="mp3"))
    async for event in call:
        if event.HasField("chunk"):
            break
    call.cancel()
    async with asyncio.timeout(20):
        while runtime.running:  # the job ends once its compute thread has stopped
            await asyncio.sleep(0.02)
    stopped_after = len(rendered)
    assert stopped_after < sentences / 2
    await asyncio.sleep(0.3)
    assert len(rendered) == stopped_after  # and nothing renders afterwards
    assert entry.in_flight == 0
    monkeypatch.undo()
    await assert_still_serving(worker.stub)


# --- through the router -------------------------------------------------------------------------

async def test_through_the_router(infra: Infra, built_models: Path, speech: Speech,
                                  tmp_path: Path) -> None:
    mesh = await start_mesh(infra, tmp_path, ["router", "audio"], models_dir=built_models)
    try:
        async with mesh.channel() as channel:
            audio = audio_pb2_grpc.AudioStub(channel)
            # Typed Transcribe on the router's address, by the OpenAI alias (Whisper base).
            events = await collect(audio.Transcribe(audio_pb2.TranscribeRequest(
                model_id="whisper-1", audio=speech.wav, response_format="srt"),
                metadata=mesh.metadata))
            assert_result_last_usage_before(events, "audio_seconds")
            assert cases(events).count("segment") >= 1
            assert SRT_CUE.match(events[-1].result.formatted)
            # A model whose weights are not here is listed as such and fails at once, saying why.
            router = router_pb2_grpc.RouterStub(channel)
            listed = {m.id: m for m in (await router.ListModels(
                router_pb2.ListModelsRequest(service="audio"), metadata=mesh.metadata)).models}
            turbo = listed["openai/whisper-large-v3-turbo"]
            assert not turbo.available
            assert "`genmesh models pull openai/whisper-large-v3-turbo`" in turbo.unavailable_reason
            assert listed["openai/whisper-base"].available
            assert "third party" in listed["openai/whisper-base"].weights_source
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await collect(audio.Transcribe(audio_pb2.TranscribeRequest(
                    model_id=turbo.id, audio=speech.wav), metadata=mesh.metadata))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert turbo.unavailable_reason in err.value.details()
            # The queue refuses it at submit too: nothing is enqueued that could never run.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await router.Submit(router_pb2.SubmitRequest(
                    model_id=turbo.id, input=struct_from({"audio_url": "data:audio/wav;base64,"
                                                          + base64.b64encode(speech.wav).decode()})),
                    metadata=mesh.metadata)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert turbo.unavailable_reason in err.value.details()
            # Typed Synthesize: the file lands in the blob store under the caller's key.
            events = await collect(audio.Synthesize(audio_pb2.SynthesizeRequest(
                model_id="tts-1", input=TEXT, response_format="mp3"), metadata=mesh.metadata))
            media = events[-1].result.audio
            store = blobstore.open_store(Settings(data_dir=tmp_path,
                                                  signing_secret=SIGNING_SECRET))
            key = store.key_from_url(media.url)
            assert key is not None and not key.startswith("anonymous/")
            blob = await store.get(key)
            assert blob.data == b"".join(e.chunk.data for e in events if e.HasField("chunk"))
            # Bad input is refused by the router before any worker sees it.
            await expect_invalid(audio.Synthesize(audio_pb2.SynthesizeRequest(
                model_id="tts-1", input="Hi.", speed=9.0), metadata=mesh.metadata), "speed")
            # The generic JSON API reaches the same worker.
            response = await router.Run(router_pb2.RunRequest(model_id="tts-1", input=struct_from(
                {"input": "Hello.", "response_format": "wav", "inline": True})),
                metadata=mesh.metadata)
            wav = base64.b64decode(response.output["audio"]["data"])
            assert wav.startswith(b"RIFF") and response.usage.items[0].unit == "characters"
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await router.Submit(router_pb2.SubmitRequest(
                    model_id="whisper-1", input=struct_from({"audio_url": "ftp://x/y.wav"})),
                    metadata=mesh.metadata)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert ("genmesh-field", "audio_url") in tuple(err.value.trailing_metadata())
    finally:
        await mesh.supervisor.stop()


def struct_from(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s
