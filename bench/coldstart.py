"""Cold start vs warm cache hit: the tiny Stable Diffusion loaded through the imagegen worker's own
`load_model` (the worker runtime's ModelCache), from its safetensors on disk, then found again.

Run as `python -m bench.coldstart <models_dir> <runs>`: a process of its own, so torch's import
and threads never touch the benchmark driver. Every cold load after the first reads files the OS
already has in its page cache; the first one is reported too."""
from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

MODEL_ID = "genmesh/tiny-sd"


async def measure(models_dir: Path, runs: int) -> dict[str, Any]:
    from genmesh.models.build import build_one, is_built
    from genmesh.services.imagegen.server import ImageGenComponent
    from genmesh.settings import Settings

    if not is_built(models_dir, MODEL_ID):
        started = time.perf_counter()
        build_one(MODEL_ID, models_dir)
        built_s = time.perf_counter() - started
    else:
        built_s = 0.0
    component = ImageGenComponent(Settings(models_dir=models_dir, device="cpu", torch_threads=1))
    spec = component.catalog.get(MODEL_ID)
    cache = component.runtime.cache
    cold, warm = [], []
    for _ in range(runs):
        for key in list(cache.entries):  # whatever the worker keys it by
            cache.evict(key)
        started = time.perf_counter()
        entry = await component.load_model(spec)
        cold.append(time.perf_counter() - started)
        cache.release(entry)
        for _ in range(20):
            started = time.perf_counter()
            entry = await component.load_model(spec)
            warm.append(time.perf_counter() - started)
            cache.release(entry)
    return {"model": MODEL_ID, "runs": runs, "build_s": built_s, "first_cold_s": cold[0],
            "cold_p50_s": statistics.median(cold), "warm_p50_us": statistics.median(warm) * 1e6,
            "hits": cache.hits, "misses": cache.misses}


def main() -> None:
    result = asyncio.run(measure(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 5))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
