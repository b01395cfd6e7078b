"""The continuous-batching engine on the tiny seeded-random Llama: streaming, seeds, batching,
stops, budgets, n choices, logprobs and cancellation."""
from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path
from typing import Iterator

import pytest

from genmesh.errors import InvalidArgument
from genmesh.models.language import BUILDERS, TINY_CONTEXT
from genmesh.services.llm.engine import EngineConfig, LLMEngine
from genmesh.services.llm.protocol import CompletionBuilder, Delta, GenerationRequest, Message
from genmesh.services.llm.sampling import SamplingParams


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMEngine]:
    path: Path = tmp_path_factory.mktemp("tiny-llama")
    BUILDERS["genmesh/tiny-llama"](path)
    # One engine thread: on a small shared machine two OpenMP threads stall each other.
    engine = LLMEngine.load(path, model_id="genmesh/tiny-llama", config=EngineConfig(max_batch_size=8, threads=1))
    yield engine
    engine.close()


def chat(text: str, **sampling: object) -> GenerationRequest:
    return GenerationRequest(messages=(Message(role="user", content=text),), sampling=SamplingParams(**sampling))


async def stream(engine: LLMEngine, request: GenerationRequest) -> list[Delta]:
    return [delta async for delta in engine.generate(request)]


async def test_streamed_deltas_join_to_the_non_streamed_text(engine: LLMEngine) -> None:
    request = chat("Tell me about the sea.", max_tokens=40, seed=7)
    deltas = await stream(engine, request)
    completion = await engine.complete(request)
    assert "".join(d.text for d in deltas) == completion.choices[0].text != ""
    assert [t for d in deltas for t in d.token_ids] == list(completion.choices[0].token_ids)


async def test_a_fixed_seed_reproduces_the_output(engine: LLMEngine) -> None:
    first = await engine.complete(chat("Hello!", max_tokens=30, seed=123, top_p=0.9))
    again = await engine.complete(chat("Hello!", max_tokens=30, seed=123, top_p=0.9))
    other = await engine.complete(chat("Hello!", max_tokens=30, seed=124, top_p=0.9))
    assert first.choices[0].token_ids == again.choices[0].token_ids
    assert first.choices[0].token_ids != other.choices[0].token_ids


async def test_batched_requests_match_the_same_requests_run_alone(engine: LLMEngine) -> None:
    requests = [
        chat("Hi", max_tokens=24, seed=1),
        chat("What is the capital of France? Answer in one short sentence please.", max_tokens=30, seed=2,
             temperature=0.7, top_k=40),
        chat("Write a poem", max_tokens=18, temperature=0),
        chat("Count to ten", max_tokens=26, seed=4, min_p=0.05, presence_penalty=0.5, frequency_penalty=0.3),
        chat("The quick brown fox jumps over the lazy dog near the river bank.", max_tokens=22, seed=5,
             repetition_penalty=1.3, top_p=0.8),
    ]
    alone = [await engine.complete(r) for r in requests]
    together = await asyncio.gather(*(engine.complete(r) for r in requests))
    for solo, batched in zip(alone, together):
        assert batched.choices[0].token_ids == solo.choices[0].token_ids
        assert batched.choices[0].text == solo.choices[0].text


@pytest.fixture
def decode_gate(engine: LLMEngine, monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Holds the engine before its next decode step until set (prefill still runs)."""
    gate = threading.Event()
    decode = engine._decode

    def gated() -> None:
        gate.wait()
        decode()

    monkeypatch.setattr(engine, "_decode", gated)
    try:
        yield gate
    finally:
        gate.set()


async def test_a_request_joins_while_another_is_decoding(engine: LLMEngine, decode_gate: threading.Event) -> None:
    long = engine.generate(chat("Go on and on", max_tokens=300, seed=1, ignore_eos=True))
    async with contextlib.aclosing(long):
        await anext(long)  # prefilled; the engine now waits before its first decode step
        short = asyncio.create_task(engine.complete(chat("Hi", max_tokens=4, seed=2, ignore_eos=True)))
        assert await asyncio.to_thread(engine.wait_until, lambda s: s.waiting == 1, 30)
        decode_gate.set()
        assert (await short).choices[0].finish_reason == "length"
        # The short request joined the running batch and finished within a few steps of the long one.
        assert engine.stats().active == 1
        rest = [d async for d in long]
    assert rest[-1].finish_reason == "length"
    assert rest[-1].usage is not None and rest[-1].usage.completion_tokens == 300


async def test_stop_string_spanning_tokens_truncates_the_output(engine: LLMEngine) -> None:
    base = await engine.complete(chat("Say something", max_tokens=60, seed=11, ignore_eos=True))
    text = base.choices[0].text
    stop = text[20:26]
    assert len(stop) == 6
    stopped = await engine.complete(chat("Say something", max_tokens=60, seed=11, ignore_eos=True, stop=[stop]))
    choice = stopped.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.text == text[:text.find(stop)]
    streamed = await stream(engine, chat("Say something", max_tokens=60, seed=11, ignore_eos=True, stop=[stop]))
    assert "".join(d.text for d in streamed) == choice.text


async def test_max_tokens_ends_with_finish_reason_length(engine: LLMEngine) -> None:
    completion = await engine.complete(chat("Hello", max_tokens=5, seed=3, ignore_eos=True))
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5 == len(completion.choices[0].token_ids)
    assert completion.usage.prompt_tokens == engine.count_tokens(chat("Hello"))


async def test_n_choices_each_finish_exactly_once(engine: LLMEngine) -> None:
    request = chat("Tell a story", max_tokens=20, seed=21, n=3)
    deltas = await stream(engine, request)
    finishes = [d.index for d in deltas if d.finish_reason is not None]
    assert sorted(finishes) == [0, 1, 2]
    assert [d.usage is not None for d in deltas].count(True) == 1 and deltas[-1].usage is not None
    builder = CompletionBuilder(request.request_id, engine.model_id, 3)
    for d in deltas:
        builder.add(d)
    completion = builder.result()
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert completion.usage.completion_tokens == sum(len(c.token_ids) for c in completion.choices)
    assert len({c.token_ids for c in completion.choices}) == 3
    single = await engine.complete(chat("Tell a story", max_tokens=20, seed=21))
    assert single.choices[0].token_ids == completion.choices[0].token_ids  # choice i uses seed + i


async def test_greedy_logprobs_report_the_chosen_token_on_top(engine: LLMEngine) -> None:
    completion = await engine.complete(chat("Hi", max_tokens=6, temperature=0, logprobs=True, top_logprobs=3,
                                            ignore_eos=True))
    logprobs = completion.choices[0].logprobs
    assert [lp.token_id for lp in logprobs] == list(completion.choices[0].token_ids)
    for lp in logprobs:
        assert len(lp.top_logprobs) == 3
        assert lp.top_logprobs[0].token_id == lp.token_id and lp.logprob <= 0
        assert bytes(lp.bytes).decode("utf-8", "replace") == lp.token


async def test_presence_penalty_stops_greedy_repetition(engine: LLMEngine) -> None:
    completion = await engine.complete(chat("Repeat", max_tokens=40, temperature=0, presence_penalty=2.0,
                                            ignore_eos=True))
    tokens = completion.choices[0].token_ids
    assert len(set(tokens)) == len(tokens) == 40


async def test_context_overflow_is_rejected_with_the_counts(engine: LLMEngine) -> None:
    prompt_tokens = engine.count_tokens(chat("Hello"))
    with pytest.raises(InvalidArgument) as info:
        await engine.complete(chat("Hello", max_tokens=TINY_CONTEXT))
    assert info.value.field == "max_tokens"
    assert str(prompt_tokens) in info.value.message and str(TINY_CONTEXT) in info.value.message
    assert str(TINY_CONTEXT - prompt_tokens) in info.value.message
    with pytest.raises(InvalidArgument) as info:
        await engine.complete(chat("hello " * TINY_CONTEXT))
    assert info.value.field == "messages" and str(TINY_CONTEXT) in info.value.message


async def test_without_max_tokens_the_budget_is_the_rest_of_the_context(engine: LLMEngine) -> None:
    request = GenerationRequest(prompt="Once upon a time", sampling=SamplingParams(seed=1, ignore_eos=True))
    completion = await engine.complete(request)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.total_tokens == TINY_CONTEXT


async def test_cancelling_a_stream_frees_its_slot(engine: LLMEngine, decode_gate: threading.Event) -> None:
    before = engine.stats().generated_tokens
    agen = engine.generate(chat("Go on", max_tokens=400, seed=1, ignore_eos=True))
    await anext(agen)
    assert engine.stats().active == 1
    await agen.aclose()  # the client went away
    decode_gate.set()
    assert await asyncio.to_thread(engine.wait_idle, 30)
    stats = engine.stats()
    assert stats.running == 0 and stats.waiting == 0 and stats.active == 0
    assert stats.generated_tokens - before <= 2  # it left at the next step, not after 400 tokens


async def test_cancel_by_request_id_ends_a_running_request(engine: LLMEngine, decode_gate: threading.Event) -> None:
    request = chat("Go on", max_tokens=400, seed=1, ignore_eos=True)
    agen = engine.generate(request)
    await anext(agen)
    assert engine.cancel(request.request_id)
    decode_gate.set()
    assert await asyncio.to_thread(engine.wait_idle, 30)
    await agen.aclose()
    assert not engine.cancel("chatcmpl-unknown")


async def test_chat_and_completion_need_exactly_one_input(engine: LLMEngine) -> None:
    with pytest.raises(InvalidArgument) as info:
        await engine.complete(GenerationRequest(sampling=SamplingParams(max_tokens=2)))
    assert info.value.field == "messages"
    with pytest.raises(InvalidArgument) as info:
        await engine.complete(GenerationRequest(prompt=[10**6], sampling=SamplingParams(max_tokens=2)))
    assert info.value.field == "prompt"
