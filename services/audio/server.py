"""The audio worker's gRPC surface: Transcribe and Synthesize as event streams over the engines.

Requests are checked by params, engines come from the model cache (engines.py loads them), the
blocking compute runs in a thread whose output is streamed as it happens, and this module only
maps between the engines' dataclasses and the protos.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from genmesh import blobstore, inputs
from genmesh.catalog import ModelSpec
from genmesh.errors import InvalidArgument
from genmesh.rpc import servicer_errors
from genmesh.settings import Settings
from genmesh.v1 import audio_pb2, audio_pb2_grpc, common_pb2
from genmesh.worker import WorkerComponent, progress, stream_from_thread
from genmesh.worker.cache import Entry
from genmesh.worker.media import output_media
from genmesh.worker.runtime import ComponentServicer

from .decode import decode_audio
from .encode import audio_format
from .engines import load_engine
from .params import (
    DEFAULT_STT_MODEL,
    DEFAULT_TTS_MODEL,
    MAX_AUDIO_BYTES,
    SynthesizeParams,
    TranscribeParams,
    synthesize_params,
    transcribe_params,
)
from .stt import Segment, SpeechToText, Transcript, Word
from .subtitles import CONTENT_TYPES, render_transcript
from .tts import TextToSpeech


_RPC_OF_TASK = {"speech-to-text": "Audio.Transcribe", "text-to-speech": "Audio.Synthesize"}


@dataclass(frozen=True)
class _Decoded:
    """The upload decoded: how long it is (progress is measured against it)."""

    duration: float


@dataclass(frozen=True)
class _Piece:
    """One piece of the input text spoken."""

    done: int
    total: int
    samples: int


class AudioServicer(ComponentServicer, audio_pb2_grpc.AudioServicer):
    component: AudioComponent

    @servicer_errors
    async def Transcribe(self, request: audio_pb2.TranscribeRequest,
                         context: grpc.aio.ServicerContext
                         ) -> AsyncIterator[audio_pb2.TranscribeEvent]:
        params = transcribe_params(request)
        model_id = self.component.resolve_model(request.model_id or DEFAULT_STT_MODEL)
        async with self.runtime.job(context, model_id) as job:
            _require_task(job.model, "speech-to-text")
            data = params.audio or await self._fetch(params.audio_url)
            if job.cold:
                yield audio_pb2.TranscribeEvent(progress=progress("loading"))
            engine: SpeechToText = await job.load()
            duration, segments = 0.0, 0
            transcript: Transcript | None = None
            work = _transcribe_work(engine, data, params)
            async for item in stream_from_thread(work, job.cancel):
                if isinstance(item, _Decoded):
                    duration = item.duration
                    yield audio_pb2.TranscribeEvent(progress=progress("transcribing", 0.0))
                elif isinstance(item, Segment):
                    segments += 1
                    yield audio_pb2.TranscribeEvent(segment=segment_proto(item))
                    yield audio_pb2.TranscribeEvent(progress=progress(
                        "transcribing", item.end / duration if duration else 0.0, segments))
                else:
                    transcript = item
            assert transcript is not None  # the thread returned it or raised
            job.log_done("transcribed", audio_seconds=round(transcript.duration, 3),
                         segments=len(transcript.segments))
            yield audio_pb2.TranscribeEvent(usage=common_pb2.Usage(items=[common_pb2.UsageItem(
                unit="audio_seconds", quantity=transcript.duration)]))
            yield audio_pb2.TranscribeEvent(result=result_proto(transcript, params.response_format))

    @servicer_errors
    async def Synthesize(self, request: audio_pb2.SynthesizeRequest,
                         context: grpc.aio.ServicerContext
                         ) -> AsyncIterator[audio_pb2.SynthesizeEvent]:
        params = synthesize_params(request)
        model_id = self.component.resolve_model(request.model_id or DEFAULT_TTS_MODEL)
        async with self.runtime.job(context, model_id) as job:
            _require_task(job.model, "text-to-speech")
            if job.cold:
                yield audio_pb2.SynthesizeEvent(progress=progress("loading"))
            engine: TextToSpeech = await job.load()
            sample_rate = engine.output_sample_rate(params.response_format)
            chunks: list[bytes] = []
            samples = 0
            async for item in stream_from_thread(_synthesize_work(engine, params), job.cancel):
                if isinstance(item, _Piece):
                    samples += item.samples
                    yield audio_pb2.SynthesizeEvent(progress=progress(
                        "synthesizing", item.done / item.total, item.done, item.total))
                else:
                    yield audio_pb2.SynthesizeEvent(chunk=audio_pb2.AudioChunk(
                        index=len(chunks), data=item))
                    chunks.append(item)
            seconds = samples / engine.sample_rate
            media = await output_media(
                self.component.store, job.key_id, b"".join(chunks),
                audio_format(params.response_format).content_type, inline=params.inline,
                kind="audio", file_name=f"speech.{params.response_format}",
                sample_rate=sample_rate, duration_seconds=seconds)
            job.log_done("synthesized", characters=len(params.input),
                         audio_seconds=round(seconds, 3), bytes=media.size_bytes)
            yield audio_pb2.SynthesizeEvent(usage=common_pb2.Usage(items=[common_pb2.UsageItem(
                unit="characters", quantity=len(params.input))]))
            yield audio_pb2.SynthesizeEvent(result=audio_pb2.SynthesizeResult(
                audio=media, sample_rate=sample_rate, duration_seconds=seconds))

    async def _fetch(self, url: str) -> bytes:
        media = await inputs.fetch(url, self.component.store, field="audio_url",
                                   max_bytes=MAX_AUDIO_BYTES)
        return media.data


class AudioComponent(WorkerComponent):
    service = "audio"
    grpc_services = ["genmesh.v1.Audio"]

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.store = blobstore.open_store(settings)

    def add_servicers(self, server: grpc.aio.Server) -> None:
        audio_pb2_grpc.add_AudioServicer_to_server(AudioServicer(self), server)

    async def load_model(self, spec: ModelSpec) -> Entry:
        models_dir = self.settings.resolved_models_dir()
        device = self.runtime.device

        async def loader() -> Any:
            return await asyncio.to_thread(load_engine, spec, models_dir, device,
                                           self.settings.torch_threads)

        return await self.runtime.cache.acquire(spec.id, loader, spec.memory_bytes, device)


# --- compute (runs in the stream's thread) ----------------------------------------------------------

Work = Callable[[Callable[[Any], None], threading.Event], Any]


def _transcribe_work(engine: SpeechToText, data: bytes, params: TranscribeParams) -> Work:
    def work(emit: Callable[[Any], None], cancel: threading.Event) -> Transcript:
        audio = decode_audio(data, sample_rate=engine.sample_rate, field=params.audio_field)
        emit(_Decoded(audio.duration))
        return engine.transcribe(
            audio.samples, audio.sample_rate, language=params.language, task=params.task,
            prompt=params.prompt, temperature=params.temperature,
            word_timestamps=params.word_timestamps, on_segment=emit, cancel=cancel)
    return work


def _synthesize_work(engine: TextToSpeech, params: SynthesizeParams) -> Work:
    def work(emit: Callable[[Any], None], cancel: threading.Event) -> None:
        def on_piece(done: int, total: int, samples: int) -> None:
            emit(_Piece(done, total, samples))

        for chunk in engine.synthesize_stream(params.input, params.voice.name, params.speed,
                                              params.response_format, cancel, on_piece):
            emit(chunk)
    return work


# --- engine dataclasses -> protos -------------------------------------------------------------------

def word_proto(word: Word) -> audio_pb2.Word:
    return audio_pb2.Word(word=word.word, start=word.start, end=word.end)


def segment_proto(segment: Segment) -> audio_pb2.TranscriptSegment:
    return audio_pb2.TranscriptSegment(
        id=segment.id, start=segment.start, end=segment.end, text=segment.text,
        words=[word_proto(w) for w in segment.words or ()], seek=segment.seek,
        tokens=list(segment.tokens), temperature=segment.temperature,
        avg_logprob=segment.avg_logprob, compression_ratio=segment.compression_ratio,
        no_speech_prob=segment.no_speech_prob)


def result_proto(transcript: Transcript, response_format: str) -> audio_pb2.TranscribeResult:
    return audio_pb2.TranscribeResult(
        text=transcript.text, language=transcript.language,
        duration_seconds=transcript.duration,
        segments=[segment_proto(s) for s in transcript.segments],
        words=[word_proto(w) for w in transcript.words or ()], task=transcript.task,
        formatted=render_transcript(transcript, response_format),
        content_type=CONTENT_TYPES[response_format])


def _require_task(spec: ModelSpec, task: str) -> None:
    if spec.task != task:
        raise InvalidArgument(f"model '{spec.id}' does {spec.task}; call "
                              f"{_RPC_OF_TASK.get(spec.task, spec.task_spec.method)}",
                              field="model_id")

