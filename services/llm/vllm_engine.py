"""vLLM as the text engine: its async engine (`AsyncLLM`) in-process, behind the `LLMEngine` interface.

The worker renders prompts with the model's own chat template (tools included) and hands vLLM
token ids with typed `SamplingParams`; vLLM does the scheduling (continuous batching, paged KV
cache, prefix caching), sampling, stop handling, detokenisation and structured outputs. One
`RequestOutput` per engine step becomes one list of `Delta`s, so a step leaves as one message.
Closing a request's stream aborts it in vLLM (its `generate` aborts on GeneratorExit), so the
sequence leaves the batch at the next step.

`vllm` is imported lazily: the worker runs without it (the transformers engine is the fallback).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genmesh.errors import InvalidArgument, ModelUnavailable

from .chat import ChatFormatter
from .protocol import Completion, CompletionBuilder, Delta, FinishReason, GenerationRequest, TokenLogprob, \
    TopLogprob, Usage
from .tools import ToolCallParser, resolve_tool_choice, tool_call_lark

log = logging.getLogger(__name__)
MIN_LOGPROB = -9999.0
# vLLM's generation-config keys -> SamplingParams fields genmesh fills when a client leaves them out.
DEFAULT_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
# vLLM's CPU worker with one quiet gloo device (vllm_worker.py): idle, torch's device per process
# group was the engine's whole CPU cost. Named, not imported: vLLM imports it in its worker.
CPU_WORKER = "genmesh.services.llm.vllm_worker.OneDeviceCPUWorker"
# The additional_config key that carries VLLMConfig.gloo_timer_slack_s to that worker.
GLOO_SLACK_KEY = "genmesh_gloo_timer_slack_s"


def available() -> bool:
    """Whether vLLM can be imported here (installed, and a build for this machine)."""
    return importlib.util.find_spec("vllm") is not None


def preload() -> None:
    """Import vLLM's engine modules (for a worker to do ahead of its first vLLM load)."""
    try:
        import vllm.engine.arg_utils  # noqa: F401
        import vllm.v1.engine.async_llm  # noqa: F401
    except Exception:  # noqa: BLE001 - the load will report it with the model's id
        log.warning("vllm import failed", exc_info=True)


@dataclass(frozen=True)
class VLLMConfig:
    max_num_seqs: int = 64  # sequences vLLM schedules together; the worker advertises this concurrency
    # CPU: eager mode starts in a fraction of the compiled start and is what `vllm serve` is
    # compared with in bench/; on CUDA, compiled graphs pay for themselves.
    enforce_eager: bool = True
    kv_cache_gb: int = 1  # VLLM_CPU_KVCACHE_SPACE on CPU (~23k SmolLM2 tokens)
    dtype: str = "auto"
    cache_dir: Path | None = None  # torch.compile / vLLM caches, kept under the models dir
    gpu_memory_utilization: float = 0.5
    # Timer slack of the CPU worker's gloo loop thread (Settings.llm_gloo_timer_slack_s).
    gloo_timer_slack_s: float = 1.0


def engine_args(path: Path | str, max_context: int | None, config: VLLMConfig) -> Any:
    """vLLM's `AsyncEngineArgs` for one model, as the worker starts it."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.platforms import current_platform

    return AsyncEngineArgs(
        model=str(path), tokenizer=str(path), dtype=config.dtype, enforce_eager=config.enforce_eager,
        max_num_seqs=config.max_num_seqs, max_model_len=max_context or None, enable_prefix_caching=True,
        gpu_memory_utilization=config.gpu_memory_utilization, disable_log_stats=True,
        structured_outputs_config={"backend": "guidance"}, generation_config="auto",
        worker_cls=CPU_WORKER if current_platform.is_cpu() else "auto",
        additional_config={GLOO_SLACK_KEY: config.gloo_timer_slack_s})


class VLLMEngine:
    """Serves one model through vLLM; `generate_steps` streams each engine step's `Delta`s."""

    def __init__(self, engine: Any, tokenizer: Any, *, model_id: str, max_context: int, max_num_seqs: int,
                 load_seconds: float = 0.0) -> None:
        self._engine = engine
        self.model_id = model_id
        self.max_num_seqs = max_num_seqs
        self.load_seconds = load_seconds
        self._tokenizer = tokenizer
        self._chat = ChatFormatter(tokenizer, max_context)
        self.sampling_defaults = _defaults(engine)

    @classmethod
    def load(cls, path: Path | str, *, model_id: str = "", max_context: int | None = None,
             config: VLLMConfig = VLLMConfig()) -> "VLLMEngine":
        """Start vLLM's engine on a standard HF checkpoint (blocking: runs in a thread)."""
        if not available():
            raise ModelUnavailable("vLLM is not installed on this worker")
        started = time.perf_counter()
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.kv_cache_gb))
        if config.cache_dir is not None:
            os.environ.setdefault("VLLM_CACHE_ROOT", str(config.cache_dir))
        from vllm.v1.engine.async_llm import AsyncLLM

        args = engine_args(path, max_context, config)
        engine = AsyncLLM.from_engine_args(args)
        tokenizer = engine.get_tokenizer()
        context = int(engine.model_config.max_model_len)
        seconds = time.perf_counter() - started
        log.info("vllm engine started", extra={"model_id": model_id, "seconds": round(seconds, 1),
                                               "max_num_seqs": config.max_num_seqs})
        return cls(engine, tokenizer, model_id=model_id, max_context=context, max_num_seqs=config.max_num_seqs,
                   load_seconds=seconds)

    @property
    def max_context(self) -> int:
        return self._chat.max_context

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def close(self) -> None:
        self._engine.shutdown()

    # ---- requests -----------------------------------------------------------------------------

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids as the engine would render it (blocking; LLM.Tokenize)."""
        return self._prompt(request, resolve_tool_choice(request.tools, request.tool_choice).mode)[0]

    def count_tokens(self, request: GenerationRequest) -> int:
        return len(self.prompt_ids(request))

    def _prompt(self, request: GenerationRequest, tool_mode: str) -> tuple[list[int], str]:
        if (request.messages is None) == (request.prompt is None):
            raise InvalidArgument("give exactly one of messages (chat) or prompt (completion)", field="messages")
        if request.messages is not None:
            return self._chat.render(request.messages, request.tools if tool_mode != "none" else ()), "messages"
        if request.tools:
            raise InvalidArgument("tools need a chat request (messages)", field="tools")
        return self._chat.encode(request.prompt), "prompt"  # type: ignore[arg-type]

    def _sampling(self, request: GenerationRequest, max_tokens: int, tool_mode: str) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        p = request.sampling
        structured = None
        lark = tool_call_lark(request.tools, resolve_tool_choice(request.tools, request.tool_choice),
                              parallel=bool(request.parallel_tool_calls))
        if lark is not None:
            structured = StructuredOutputsParams(grammar=lark)
        elif request.response_format is not None and request.response_format.type == "json_object":
            structured = StructuredOutputsParams(json_object=True)
        elif request.response_format is not None and request.response_format.type == "json_schema":
            structured = StructuredOutputsParams(json=dict(request.response_format.schema or {}))
        return SamplingParams(
            n=p.n, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k, min_p=p.min_p,
            frequency_penalty=p.frequency_penalty, presence_penalty=p.presence_penalty,
            repetition_penalty=p.repetition_penalty, seed=p.seed, stop=list(p.stop) or None,
            stop_token_ids=list(p.stop_token_ids) or None, ignore_eos=p.ignore_eos, min_tokens=p.min_tokens,
            max_tokens=max_tokens, logprobs=p.top_logprobs if p.logprobs else None,
            output_kind=RequestOutputKind.DELTA, structured_outputs=structured)

    async def generate_steps(self, request: GenerationRequest) -> AsyncIterator[list[Delta]]:
        """The deltas of each engine step (one per choice that moved); the last carries usage.

        Closing the iterator (the caller went away) aborts the request in vLLM.
        """
        choice = resolve_tool_choice(request.tools, request.tool_choice)
        prompt_ids, prompt_field = self._prompt(request, choice.mode)
        max_tokens = self._chat.budget(len(prompt_ids), request.sampling.max_tokens, prompt_field=prompt_field)
        params = self._sampling(request, max_tokens, choice.mode)
        parse_tools = bool(request.tools) and choice.mode != "none"
        parsers = ([ToolCallParser(parallel=request.parallel_tool_calls is not False)
                    for _ in range(request.sampling.n)] if parse_tools else [])
        produced = 0
        first = True
        finished = False
        outputs = self._engine.generate({"prompt_token_ids": prompt_ids}, params, request.request_id)
        try:
            async for out in outputs:
                finished = out.finished
                deltas = self._step_deltas(out, request, parsers, choice.mode)
                produced += sum(len(d.token_ids) for d in deltas)
                if not deltas:
                    continue
                if first:
                    deltas[0] = dataclasses.replace(deltas[0], prompt_tokens=len(prompt_ids))
                    first = False
                if out.finished:
                    deltas[-1] = dataclasses.replace(
                        deltas[-1], usage=Usage(prompt_tokens=len(prompt_ids), completion_tokens=produced))
                yield deltas
        finally:
            # The caller went away (this generator closed or its task cancelled): vLLM's generate
            # aborts on GeneratorExit, but only once it is closed itself, which an `async for`
            # left by an exception does not do; and abort directly too, so the sequence leaves the
            # batch at the next step whichever way the stream ended.
            await outputs.aclose()
            if not finished:
                await self._engine.abort(request.request_id)

    def _step_deltas(self, out: Any, request: GenerationRequest, parsers: list[ToolCallParser],
                     tool_mode: str) -> list[Delta]:
        """One engine step's `RequestOutput` as a `Delta` per choice that moved."""
        deltas = []
        for o in out.outputs:
            text, calls, finish = o.text, [], _finish(o.finish_reason)
            if parsers:
                text, calls = parsers[o.index].feed(text)
                if finish is not None:
                    more_text, more_calls = parsers[o.index].finish()
                    text, calls = text + more_text, calls + more_calls
                    if finish == "stop" and parsers[o.index].calls and tool_mode != "function":
                        finish = "tool_calls"
            # vLLM's stop_reason is the matched stop string (or a stop token id, which is no sequence).
            stop = o.stop_reason if finish == "stop" and isinstance(o.stop_reason, str) else None
            deltas.append(Delta(index=o.index, text=text, token_ids=tuple(o.token_ids),
                                logprobs=_logprobs(o.token_ids, o.logprobs, request.sampling.top_logprobs),
                                tool_calls=tuple(calls), finish_reason=finish, stop_sequence=stop))
        return deltas

    def unfinished(self) -> int:
        """Requests vLLM holds (running or waiting); an abandoned one is gone from here at once."""
        return int(self._engine.get_num_unfinished_requests())

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        async for step in self.generate_steps(request):
            for delta in step:
                yield delta

    async def complete(self, request: GenerationRequest) -> Completion:
        builder = CompletionBuilder(request.request_id, self.model_id, request.sampling.n)
        async for delta in self.generate(request):
            builder.add(delta)
        return builder.result()


def _finish(reason: str | None) -> FinishReason | None:
    if reason is None:
        return None
    return "length" if reason == "length" else "stop"


def _logprobs(token_ids: Any, entries: Any, top: int) -> tuple[TokenLogprob, ...]:
    """vLLM's per-token {id: Logprob} (the sampled token plus the top `top` by rank) as genmesh's."""
    if not entries:
        return ()
    out = []
    for token, candidates in zip(token_ids, entries):
        chosen = candidates[token]
        ranked = sorted((lp for lp in candidates.values() if lp.rank is not None and lp.rank >= 1),
                        key=lambda lp: lp.rank)[:top]
        ids = {id(lp): t for t, lp in candidates.items()}
        out.append(TokenLogprob(
            token=chosen.decoded_token or "", token_id=int(token), logprob=max(chosen.logprob, MIN_LOGPROB),
            bytes=tuple((chosen.decoded_token or "").encode()),
            top_logprobs=tuple(TopLogprob(token=lp.decoded_token or "", token_id=int(ids[id(lp)]),
                                          logprob=max(lp.logprob, MIN_LOGPROB),
                                          bytes=tuple((lp.decoded_token or "").encode())) for lp in ranked)))
    return tuple(out)


def _defaults(engine: Any) -> dict[str, Any]:
    """The model's own sampling defaults, as vLLM reads them from its generation config."""
    try:
        diff: Mapping[str, Any] = engine.model_config.get_diff_sampling_param()
    except Exception:  # noqa: BLE001 - a model without a generation config has none
        return {}
    return {k: v for k, v in diff.items() if k in DEFAULT_KEYS}
