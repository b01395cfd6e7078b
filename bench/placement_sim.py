"""Placement simulation: how often each policy needs a cold model load.

8 workers with mixed 24/48/80 GB GPUs, 20 models of 2-30 GB, a Zipf(1.1) request mix, each
request holding its worker for a random service time. A cold load is a request placed on a
worker where the model is not resident. The resident-first policy should need clearly fewer
cold loads than round-robin and random.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import replace
from typing import Any

from genmesh.services.router.placement import (GB, Decision, ModelNeeds, PlacementPolicy, RandomChoice,
                                               Resident, ResidentFirst, RoundRobin, WorkerInfo)

GPU_MEMORY_GB = [24, 24, 48, 48, 48, 80, 80, 80]


def make_models(rng: random.Random, n: int = 20) -> list[ModelNeeds]:
    return [ModelNeeds(f"model-{i:02d}", int(rng.uniform(2, 30) * GB)) for i in range(n)]


def zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return [1 / (k ** s) for k in range(1, n + 1)]


def simulate(policy: PlacementPolicy, *, requests: int = 20_000, seed: int = 7,
             capacity: int = 2) -> dict[str, Any]:
    rng = random.Random(seed)
    models = make_models(rng)
    weights = zipf_weights(len(models))
    workers = {f"w{i}": WorkerInfo(f"w{i}", frozenset(m.model_id for m in models), capacity, 0, (),
                                   int(mem * GB), "A100", 1) for i, mem in enumerate(GPU_MEMORY_GB)}
    busy: dict[str, dict[str, int]] = {w: {} for w in workers}  # worker -> model -> in flight
    ends: list[tuple[float, str, str]] = []
    clock = 0.0
    cold = queued = placed = 0
    for _ in range(requests):
        clock += rng.expovariate(4.0)  # ~4 requests per time unit
        while ends and ends[0][0] <= clock:
            _, wid, mid = heapq.heappop(ends)
            busy[wid][mid] -= 1
            w = workers[wid]
            workers[wid] = replace(w, in_flight=w.in_flight - 1, resident=tuple(
                replace(r, in_flight=busy[wid].get(r.model_id, 0)) for r in w.resident))
        needs = rng.choices(models, weights)[0]
        decision: Decision = policy.place(needs, list(workers.values()))
        if decision.worker_id is None:
            queued += 1
            continue
        placed += 1
        w = workers[decision.worker_id]
        resident = [r for r in w.resident if r.model_id not in decision.evict]
        if not any(r.model_id == needs.model_id for r in resident):
            cold += 1
            # A policy without eviction planning still has to make room: evict LRU idle ones.
            while sum(r.memory_bytes for r in resident) + needs.memory_bytes > w.device_memory_bytes:
                idle = [r for r in resident if busy[w.worker_id].get(r.model_id, 0) == 0]
                if not idle:
                    break
                resident.remove(min(idle, key=lambda r: r.last_used))
            resident.append(Resident(needs.model_id, needs.memory_bytes, clock))
        resident = [replace(r, last_used=clock) if r.model_id == needs.model_id else r for r in resident]
        busy[w.worker_id][needs.model_id] = busy[w.worker_id].get(needs.model_id, 0) + 1
        resident = [replace(r, in_flight=busy[w.worker_id].get(r.model_id, 0)) for r in resident]
        workers[w.worker_id] = replace(w, in_flight=w.in_flight + 1, resident=tuple(resident))
        heapq.heappush(ends, (clock + rng.uniform(0.5, 3.0), w.worker_id, needs.model_id))
    return {"requests": requests, "placed": placed, "queued": queued, "cold_loads": cold,
            "cold_fraction": cold / max(1, placed)}


def run(requests: int = 20_000) -> dict[str, dict[str, Any]]:
    return {"resident-first": simulate(ResidentFirst(random.Random(1)), requests=requests),
            "round-robin": simulate(RoundRobin(), requests=requests),
            "random": simulate(RandomChoice(random.Random(1)), requests=requests)}


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'policy':16} {'placed':>8} {'queued':>8} {'cold loads':>11} {'cold %':>8}"]
    for name, r in results.items():
        lines.append(f"{name:16} {r['placed']:8d} {r['queued']:8d} {r['cold_loads']:11d} {100 * r['cold_fraction']:7.2f}%")
    return "\n".join(lines)


if __name__ == "__main__":
    print("placement simulation: 8 GPUs (24/48/80 GB), 20 models, Zipf(1.1) mix")
    print(table(run()))
