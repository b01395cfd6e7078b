"""Image generation compute benchmark: per-step time, time to first preview, batching speedup.

Runs on the tiny seeded-random Stable Diffusion by default (built into a temp directory), or on
any diffusers text-to-image directory given with --model-dir. Batching speedup compares N
concurrent same-shape requests through `ImageBatcher` (one pipeline call) against the same N
requests run one after another.

    python bench/bench_imagegen.py [--model-dir DIR] [--size 64] [--steps 8] [--concurrency 4]
                                   [--threads N]

On a shared machine pass --threads 1: OpenMP threads that lose their core to another process
stall each other at every barrier, which turns millisecond steps into second-long outliers.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from genmesh.models.diffusion import BUILDERS
from genmesh.services.imagegen.batching import ImageBatcher
from genmesh.services.imagegen.params import ImageParams
from genmesh.services.imagegen.pipeline import ImagePipeline, StepEvent

# What the tiny model should reach on a 2-core CPU; real models are measured, not gated.
TARGETS = {"batching_speedup": 1.3}


def _params(i: int, size: int, steps: int, preview_every: int = 0) -> ImageParams:
    return ImageParams(prompt=f"a cat number {i}", width=size, height=size,
                       num_inference_steps=steps, seed=1000 + i, preview_every=preview_every)


def _timed_generate(pipeline: ImagePipeline, params: ImageParams) -> tuple[float, list[float],
                                                                            float | None]:
    """(total seconds, step completion times, first preview time), times from the call."""
    stamps: list[float] = []
    first_preview: list[float] = []
    start = time.perf_counter()

    def on_step(event: StepEvent) -> None:
        now = time.perf_counter() - start
        stamps.append(now)
        if event.previews and not first_preview:
            first_preview.append(now)

    pipeline.generate(params, on_step=on_step)
    return time.perf_counter() - start, stamps, (first_preview or [None])[0]


async def _batched(pipeline: ImagePipeline, batch: list[ImageParams]) -> float:
    batcher = ImageBatcher(pipeline, window_s=0.05, max_batch_images=len(batch))
    start = time.perf_counter()
    await asyncio.gather(*(batcher.submit(p) for p in batch))
    elapsed = time.perf_counter() - start
    await batcher.aclose()
    assert batcher.stats.batches == 1, batcher.stats
    return elapsed


def run(model_dir: Path | None = None, *, size: int = 64, steps: int = 8,
        concurrency: int = 4, repeats: int = 3, threads: int | None = None) -> dict[str, Any]:
    """Measure and return the numbers (medians over `repeats`)."""
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_name = str(model_dir) if model_dir else "genmesh/tiny-sd"
        if model_dir is None:
            model_dir = Path(tmp) / "tiny-sd"
            BUILDERS["genmesh/tiny-sd"](model_dir)
        pipeline = ImagePipeline.from_pretrained(model_dir, device="cpu")
        pipeline.generate(_params(0, size, 2))  # warm-up: kernels, allocator, lazy imports

        step_times, first_previews, totals = [], [], []
        for r in range(repeats):
            total, stamps, first = _timed_generate(pipeline, _params(r, size, steps, 1))
            step_times.append(statistics.median(b - a for a, b in zip(stamps, stamps[1:])))
            first_previews.append(first)
            totals.append(total)

        batch = [_params(i, size, steps) for i in range(concurrency)]
        sequential, batched = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            for p in batch:
                pipeline.generate(p)
            sequential.append(time.perf_counter() - start)
            batched.append(asyncio.run(_batched(pipeline, batch)))

    seq, bat = statistics.median(sequential), statistics.median(batched)
    return {
        "model": model_name,
        "size": size, "steps": steps, "concurrency": concurrency,
        "threads": torch.get_num_threads(),
        "step_ms": statistics.median(step_times) * 1000,
        "first_preview_ms": statistics.median(first_previews) * 1000,
        "request_s": statistics.median(totals),
        "sequential_images_per_s": concurrency / seq,
        "batched_images_per_s": concurrency / bat,
        "batching_speedup": seq / bat,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    result = run(args.model_dir, size=args.size, steps=args.steps,
                 concurrency=args.concurrency, repeats=args.repeats, threads=args.threads)
    rows = [
        ("per-step time", f"{result['step_ms']:.1f} ms", ""),
        ("time to first preview", f"{result['first_preview_ms']:.1f} ms", ""),
        ("one request", f"{result['request_s'] * 1000:.0f} ms", ""),
        (f"{result['concurrency']} requests one after another",
         f"{result['sequential_images_per_s']:.2f} images/s", ""),
        (f"{result['concurrency']} requests batched",
         f"{result['batched_images_per_s']:.2f} images/s", ""),
        ("batching speedup", f"{result['batching_speedup']:.2f}x",
         f"target >= {TARGETS['batching_speedup']}x"),
    ]
    print(f"imagegen {result['size']}x{result['size']}, {result['steps']} steps, "
          f"{result['threads']} torch threads ({result['model']})")
    for name, value, note in rows:
        print(f"  {name:<36} {value:>16}  {note}")


if __name__ == "__main__":
    main()
