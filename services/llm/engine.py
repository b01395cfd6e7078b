"""Continuous batching: one causal LM on one device, many concurrent generations sharing its steps.

A background thread owns the model. Each loop it drops cancelled sequences, prefills newly
arrived requests (together, left-padded, in chunks) and merges them into the running batch, then
runs one decode step for every running sequence, each with its own sampling parameters,
generator, grammar, stop strings and budget. Finished sequences leave between steps. Callers use
`await engine.generate(request)` from asyncio; blocking work never runs on their event loop.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable, Sequence

import torch
from tokenizers import Tokenizer
from transformers import DynamicCache, PreTrainedTokenizerFast

from genmesh.errors import GenmeshError, Internal, InvalidArgument, Unavailable
from genmesh.models.language import LanguageModel, load_language_model

from .chat import ChatFormatter
from .constraints import GrammarCompiler, TokenMasker, response_format_grammar
from .detokenize import IncrementalDetokenizer, StopStrings, TokenBytes
from .kvcache import BatchKV
from .protocol import (Completion, CompletionBuilder, Delta, FinishReason, GenerationRequest, TokenLogprob,
                       ToolCallDelta, TopLogprob, Usage)
from .sampling import SequenceSampler, sample
from .tools import ToolCallParser, resolve_tool_choice, tool_call_grammar

log = logging.getLogger(__name__)
MIN_LOGPROB = -9999.0


@dataclass(frozen=True)
class EngineConfig:
    max_batch_size: int = 32  # sequences decoded together (a request with n choices uses n)
    max_prefill_tokens: int = 4096  # padded prompt tokens admitted per loop, so decoding keeps going
    prefill_chunk: int = 512  # prompt tokens per prefill forward (bounds attention memory)
    kv_block: int = 128  # cache columns added at a time
    # Intra-op threads of the engine thread (torch's setting is per thread); None keeps torch's
    # default. On a small shared CPU, 1 avoids OpenMP stalls when other processes hold a core.
    threads: int | None = None


@dataclass(frozen=True)
class EngineStats:
    running: int  # sequences in the decode batch
    waiting: int  # requests not yet prefilled
    active: int  # requests admitted and not finished
    steps: int  # decode steps so far
    generated_tokens: int


@dataclass(eq=False)
class _Group:
    """One request: its n choices, its stream back to the caller and its usage."""

    request: GenerationRequest
    prompt_ids: list[int]
    max_tokens: int
    tool_mode: str
    seqs: list["_Seq"] = field(default_factory=list)
    loop: asyncio.AbstractEventLoop | None = None
    queue: asyncio.Queue | None = None
    cancelled: bool = False
    finished: int = 0
    completion_tokens: int = 0

    def deliver(self, item: list[Delta] | BaseException) -> None:
        _deliver([(self, item)])


def _deliver(items: list[tuple[_Group, list[Delta] | BaseException]]) -> None:
    """Hand results to their callers' event loops: one wake-up per loop, not per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Group, list[Delta] | BaseException]]] = {}
    for group, item in items:
        by_loop.setdefault(group.loop, []).append((group, item))  # type: ignore[arg-type]
    for loop, batch in by_loop.items():
        try:
            loop.call_soon_threadsafe(_put_all, batch)
        except RuntimeError:  # the caller's loop is gone: nobody is listening any more
            for group, _ in batch:
                group.cancelled = True


def _put_all(batch: list[tuple[_Group, list[Delta] | BaseException]]) -> None:
    for group, item in batch:
        group.queue.put_nowait(item)  # type: ignore[union-attr]


@dataclass(eq=False)
class _Seq:
    group: _Group
    index: int
    sampler: SequenceSampler
    matcher: object | None
    detokenizer: IncrementalDetokenizer
    stops: StopStrings
    parser: ToolCallParser | None
    output: list[int] = field(default_factory=list)
    done: bool = False


def _finite(logprob: float) -> float:
    # Tokens a grammar forbids have probability 0; JSON has no -inf, so report OpenAI's floor.
    return max(logprob, MIN_LOGPROB)


class LLMEngine:
    """Serves one language model; `generate` streams `Delta`s, `complete` returns a `Completion`."""

    def __init__(self, lm: LanguageModel, *, model_id: str = "", config: EngineConfig = EngineConfig()) -> None:
        self.model_id = model_id
        self.config = config
        self._lm = lm
        self._model = lm.model
        self._chat = ChatFormatter(lm.tokenizer, lm.max_context)
        self.sampling_defaults = lm.sampling_defaults
        self.max_num_seqs = config.max_batch_size
        text_config = lm.model.config.get_text_config(decoder=True)
        self.vocab_size = int(lm.model.get_output_embeddings().weight.shape[0])
        self._eos = frozenset(lm.eos_token_ids)
        self._pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.eos_token_ids[0]
        # The engine thread decodes with its own copy of the Rust tokenizer (not shared with encoders).
        self._decoder = Tokenizer.from_str(lm.tokenizer.backend_tokenizer.to_str())
        self._token_bytes = TokenBytes(self._decoder)
        self._grammars = GrammarCompiler(lm.tokenizer, lm.eos_token_ids, self.vocab_size)
        self._masker = TokenMasker(self.vocab_size, lm.eos_token_ids)
        self._kv = BatchKV(int(text_config.num_hidden_layers), block=config.kv_block)
        self._running: list[_Seq] = []
        self._waiting: deque[_Group] = deque()
        self._active: set[_Group] = set()
        self._cv = threading.Condition()
        self._stopping = False
        self._steps = 0
        self._generated = 0
        self._thread = threading.Thread(target=self._run, name=f"llm-engine:{model_id}", daemon=True)
        self._thread.start()

    @classmethod
    def load(cls, path: Path | str, *, model_id: str = "", device: str = "cpu", max_context: int | None = None,
             config: EngineConfig = EngineConfig()) -> "LLMEngine":
        return cls(load_language_model(path, device=device, max_context=max_context), model_id=model_id,
                   config=config)

    @property
    def max_context(self) -> int:
        return self._lm.max_context

    @property
    def tokenizer(self) -> PreTrainedTokenizerFast:
        return self._lm.tokenizer

    # ---- public API ---------------------------------------------------------------------------

    def count_tokens(self, request: GenerationRequest) -> int:
        """Prompt tokens of a request as the engine would render it (blocking; a few ms)."""
        return len(self._prompt_ids(request, resolve_tool_choice(request.tools, request.tool_choice).mode)[0])

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids as the engine would render it (blocking; LLM.Tokenize)."""
        return self._prompt_ids(request, resolve_tool_choice(request.tools, request.tool_choice).mode)[0]

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Stream the request's deltas; closing the iterator (client gone) cancels it at the next step.

        Raises `InvalidArgument` before the first delta for a bad request.
        """
        async with contextlib.aclosing(self.generate_steps(request)) as steps:
            async for step in steps:
                for delta in step:
                    yield delta

    async def generate_steps(self, request: GenerationRequest) -> AsyncIterator[list[Delta]]:
        """The deltas of each engine step, as one list (one message downstream, not one per choice)."""
        group = await asyncio.to_thread(self._prepare, request)
        group.loop = asyncio.get_running_loop()
        group.queue = asyncio.Queue()
        self._submit(group)
        finished = False
        try:
            while not finished:
                item = await group.queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = any(delta.usage is not None for delta in item)
                yield item
        finally:
            if not finished:
                self._cancel_group(group)

    async def complete(self, request: GenerationRequest) -> Completion:
        builder = CompletionBuilder(request.request_id, self.model_id, request.sampling.n)
        async for delta in self.generate(request):
            builder.add(delta)
        return builder.result()

    def cancel(self, request_id: str) -> bool:
        """Cancel a request by id (the stream ends without further deltas). True if it was found."""
        with self._cv:
            groups = [g for g in list(self._waiting) + list(self._active) if g.request.request_id == request_id]
        for group in groups:
            self._cancel_group(group)
        return bool(groups)

    def _cancel_group(self, group: _Group) -> None:
        with self._cv:
            group.cancelled = True
            self._cv.notify_all()

    def stats(self) -> EngineStats:
        with self._cv:
            return self._stats()

    def unfinished(self) -> int:
        """Requests this engine holds (waiting or admitted and not finished)."""
        stats = self.stats()
        return stats.waiting + stats.active

    def wait_until(self, predicate: Callable[[EngineStats], bool], timeout: float | None = None) -> bool:
        """Block until `predicate(stats)` holds (checked whenever the engine's state changes)."""
        with self._cv:
            return self._cv.wait_for(lambda: predicate(self._stats()), timeout)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no request is waiting or running (e.g. to drain before unloading)."""
        return self.wait_until(lambda s: s.waiting == 0 and s.active == 0, timeout)

    def _stats(self) -> EngineStats:
        return EngineStats(running=len(self._running), waiting=len(self._waiting), active=len(self._active),
                           steps=self._steps, generated_tokens=self._generated)

    def close(self) -> None:
        """Stop the engine thread; requests still in flight end with `Unavailable`."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join()

    # ---- request preparation (caller's worker thread) -----------------------------------------

    def _prompt_ids(self, request: GenerationRequest, tool_mode: str) -> tuple[list[int], str]:
        if (request.messages is None) == (request.prompt is None):
            raise InvalidArgument("give exactly one of messages (chat) or prompt (completion)", field="messages")
        if request.messages is not None:
            tools = request.tools if tool_mode != "none" else ()
            return self._chat.render(request.messages, tools), "messages"
        if request.tools:
            raise InvalidArgument("tools need a chat request (messages)", field="tools")
        return self._chat.encode(request.prompt), "prompt"  # type: ignore[arg-type]

    def _prepare(self, request: GenerationRequest) -> _Group:
        params = request.sampling
        choice = resolve_tool_choice(request.tools, request.tool_choice)
        prompt_ids, prompt_field = self._prompt_ids(request, choice.mode)
        max_tokens = self._chat.budget(len(prompt_ids), params.max_tokens, prompt_field=prompt_field)
        if params.n > self.config.max_batch_size:
            raise InvalidArgument(f"must be at most {self.config.max_batch_size} on this model, got {params.n}",
                                  field="n")
        grammar = tool_call_grammar(request.tools, choice, parallel=bool(request.parallel_tool_calls))
        grammar_field = "tools"
        if grammar is None:
            grammar = response_format_grammar(request.response_format)
            grammar_field = "response_format"
        matcher = self._grammars.matcher(grammar, grammar_field) if grammar is not None else None
        group = _Group(request=request, prompt_ids=prompt_ids, max_tokens=max_tokens, tool_mode=choice.mode)
        parse_tools = bool(request.tools) and choice.mode != "none"
        base = SequenceSampler(params, None, prompt_ids, self.vocab_size)
        for i in range(params.n):
            group.seqs.append(_Seq(
                group=group, index=i, sampler=base.clone(params.generator(i)),
                matcher=(matcher if i == 0 else matcher.deep_copy()) if matcher is not None else None,
                detokenizer=IncrementalDetokenizer(self._decoder), stops=StopStrings(params.stop),
                parser=ToolCallParser(parallel=request.parallel_tool_calls is not False)
                if parse_tools else None))
        return group

    def _submit(self, group: _Group) -> None:
        with self._cv:
            if self._stopping:
                raise Unavailable("the engine is shutting down")
            self._waiting.append(group)
            self._cv.notify_all()

    # ---- the engine thread --------------------------------------------------------------------

    def _run(self) -> None:
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        with torch.inference_mode():
            while True:
                with self._cv:
                    self._cv.wait_for(lambda: self._stopping or self._waiting or self._running)
                    if self._stopping:
                        break
                    admitted = self._admit()
                try:
                    self._drop_cancelled()
                    if admitted:
                        self._prefill(admitted)
                    if self._running:
                        self._decode()
                except Exception as exc:  # noqa: BLE001 - a failed step must not kill the engine
                    log.exception("llm engine step failed", extra={"model_id": self.model_id})
                    self._fail_all(exc if isinstance(exc, GenmeshError) else Internal(f"generation failed: {exc}"))
                with self._cv:
                    self._cv.notify_all()
        self._fail_all(Unavailable("the engine was shut down"))

    def _admit(self) -> list[_Group]:
        """Waiting requests that fit in the batch and this loop's prefill budget (at least one)."""
        admitted: list[_Group] = []
        rows = len(self._running)
        longest = 0
        while self._waiting:
            group = self._waiting[0]
            if group.cancelled:
                self._waiting.popleft()
                continue
            n = len(group.seqs)
            longest_next = max(longest, len(group.prompt_ids))
            if rows + n > self.config.max_batch_size:
                break
            if admitted and longest_next * (len(admitted) + 1) > self.config.max_prefill_tokens:
                break
            self._waiting.popleft()
            admitted.append(group)
            self._active.add(group)
            rows += n
            longest = longest_next
        return admitted

    def _drop_cancelled(self) -> None:
        keep = [i for i, s in enumerate(self._running) if not s.group.cancelled]
        if len(keep) != len(self._running):
            for seq in self._running:
                if seq.group.cancelled:
                    self._retire(seq)
            self._running = [self._running[i] for i in keep]
            self._kv.keep(keep)

    def _prefill(self, groups: list[_Group]) -> None:
        prompts = [g.prompt_ids for g in groups]
        length = max(len(p) for p in prompts)
        ids = torch.tensor([[self._pad_id] * (length - len(p)) + p for p in prompts], dtype=torch.long)
        mask = torch.tensor([[False] * (length - len(p)) + [True] * len(p) for p in prompts], dtype=torch.bool)
        positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        # Padding queries attend to themselves only, so no softmax row is empty (no NaNs in the cache).
        allowed = (mask[:, None, None, :] & causal) | torch.eye(length, dtype=torch.bool)
        cache = DynamicCache()
        logits = None
        device = self._lm.device
        for start in range(0, length, self.config.prefill_chunk):
            stop = min(start + self.config.prefill_chunk, length)
            out = self._model(input_ids=ids[:, start:stop].to(device),
                              attention_mask=allowed[:, :, start:stop, :stop].to(device),
                              position_ids=positions[:, start:stop].to(device), cache=cache, use_cache=True,
                              logits_to_keep=1)
            logits = out.logits[:, -1, :]
        rows = [gi for gi, g in enumerate(groups) for _ in g.seqs]
        seqs = [s for g in groups for s in g.seqs]
        self._step(seqs, logits.float().cpu()[rows])  # type: ignore[union-attr]
        live = [j for j, s in enumerate(seqs) if not s.done]
        if live:
            index = torch.tensor([rows[j] for j in live], dtype=torch.long)
            on_device = index.to(device)
            keys = [layer.keys.index_select(0, on_device) for layer in cache.layers]
            values = [layer.values.index_select(0, on_device) for layer in cache.layers]
            self._kv.join(keys, values, mask.index_select(0, index))
            self._running.extend(seqs[j] for j in live)

    def _decode(self) -> None:
        tokens = torch.tensor([[s.output[-1]] for s in self._running], dtype=torch.long)
        attention, positions = self._kv.step_inputs()
        device = self._lm.device
        out = self._model(input_ids=tokens.to(device), attention_mask=attention.to(device),
                          position_ids=positions.to(device), cache=self._kv.cache, use_cache=True)
        self._kv.advance()
        self._steps += 1
        self._step(self._running, out.logits[:, -1, :].float().cpu())
        keep = [i for i, s in enumerate(self._running) if not s.done]
        if len(keep) != len(self._running):
            self._running = [self._running[i] for i in keep]
            self._kv.keep(keep)

    def _step(self, seqs: Sequence[_Seq], logits: torch.Tensor) -> None:
        """Sample one token for every sequence and stream what each produced."""
        for row, seq in enumerate(seqs):
            seq.sampler.penalise(logits[row])
            params = seq.sampler.params
            early = len(seq.output) < params.min_tokens
            if seq.matcher is None and (params.ignore_eos or early):
                banned = self._eos | set(params.stop_token_ids) if early else self._eos
                logits[row, list(banned)] = float("-inf")
        self._masker.apply(logits, [s.matcher for s in seqs])
        picked = sample(logits, [s.sampler for s in seqs])
        out: dict[_Group, list[Delta]] = {}
        for row, seq in enumerate(seqs):
            delta = self._advance(seq, picked.tokens[row], picked.logprobs[row], picked.top_logprobs[row])
            out.setdefault(seq.group, []).append(delta)
        _deliver(list(out.items()))  # type: ignore[arg-type]

    def _advance(self, seq: _Seq, token: int, logprob: float | None, top: list[tuple[int, float]]) -> Delta:
        group, params = seq.group, seq.sampler.params
        seq.output.append(token)
        seq.sampler.observe(token)
        group.completion_tokens += 1
        self._generated += 1
        finish: FinishReason | None = None
        text = ""
        if (token in self._eos and not params.ignore_eos) or token in params.stop_token_ids:
            finish = "stop"
        else:
            if seq.matcher is not None and not seq.matcher.consume_token(token):  # type: ignore[attr-defined]
                finish = "stop"  # cannot happen with the mask applied; end rather than emit garbage
            text = seq.stops.push(seq.detokenizer.add(token))
            if seq.stops.stopped:
                finish = "stop"
            elif len(seq.output) >= group.max_tokens:
                finish = "length"
            elif seq.matcher is not None and seq.matcher.is_stopped():  # type: ignore[attr-defined]
                finish = "stop"
        if finish is not None and not seq.stops.stopped:
            text += seq.stops.push(seq.detokenizer.flush())
            text += seq.stops.flush()
        calls: list[ToolCallDelta] = []
        if seq.parser is not None:
            text, calls = seq.parser.feed(text)
            if finish is not None:
                more_text, more_calls = seq.parser.finish()
                text, calls = text + more_text, calls + more_calls
                if finish == "stop" and seq.parser.calls and group.tool_mode != "function":
                    finish = "tool_calls"
        logprobs: tuple[TokenLogprob, ...] = ()
        if logprob is not None:
            logprobs = (self._token_logprob(token, logprob, top),)
        usage = None
        if finish is not None:
            self._retire(seq)
            if group.finished == len(group.seqs):
                usage = Usage(prompt_tokens=len(group.prompt_ids), completion_tokens=group.completion_tokens)
                log.info("generation finished", extra={
                    "request_id": group.request.request_id, "model_id": self.model_id,
                    "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                    "choices": len(group.seqs), "finish_reason": finish})
        prompt_tokens = len(group.prompt_ids) if len(seq.output) == 1 and seq.index == 0 else None
        stop = seq.stops.matched if finish == "stop" else None
        return Delta(index=seq.index, text=text, token_ids=(token,), logprobs=logprobs, tool_calls=tuple(calls),
                     finish_reason=finish, usage=usage, prompt_tokens=prompt_tokens, stop_sequence=stop)

    def _retire(self, seq: _Seq) -> None:
        if seq.done:
            return
        seq.done = True
        seq.group.finished += 1
        if seq.group.finished == len(seq.group.seqs) or seq.group.cancelled:
            with self._cv:
                self._active.discard(seq.group)

    def _token_logprob(self, token: int, logprob: float, top: list[tuple[int, float]]) -> TokenLogprob:
        tb = self._token_bytes
        return TokenLogprob(token=tb.text(token), token_id=token, logprob=_finite(logprob), bytes=tuple(tb(token)),
                            top_logprobs=tuple(TopLogprob(token=tb.text(t), token_id=t, logprob=_finite(lp),
                                                          bytes=tuple(tb(t))) for t, lp in top))

    def _fail_all(self, error: GenmeshError) -> None:
        with self._cv:
            groups = set(self._active) | {s.group for s in self._running}
            if self._stopping:
                groups |= set(self._waiting)
                self._waiting.clear()
            self._active.clear()
            self._cv.notify_all()
        self._running = []
        self._kv.clear()
        for group in groups:
            if not group.cancelled:
                group.deliver(error)
