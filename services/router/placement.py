"""Placement policies: a pure function of (model needs, worker states) -> decision.

The default, ResidentFirst, prefers a worker where the model is already loaded and not saturated
(power-of-two choices among those), else the worker whose device has room, else one where
evicting idle models least-recently-used makes room; None means "queue until something frees".
RoundRobin and Random exist for the placement simulation's comparison. `cannot_run` tells the
other kind of None apart: no worker could ever serve the model (its weights are missing on every
worker, or no worker has the hardware it needs), so waiting would not help.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from genmesh.availability import device_text, needs_text

GB = 1024 ** 3


@dataclass(frozen=True)
class ModelNeeds:
    model_id: str
    memory_bytes: int = 0
    min_device_memory_bytes: int = 0
    gpu_required: bool = False
    gpu_classes: tuple[str, ...] = ()
    num_gpus: int = 0
    zone: str = ""


@dataclass(frozen=True)
class Resident:
    model_id: str
    memory_bytes: int
    last_used: float
    in_flight: int = 0


@dataclass(frozen=True)
class WorkerInfo:
    worker_id: str
    models: frozenset[str]           # what it can serve
    capacity: int
    in_flight: int = 0
    resident: tuple[Resident, ...] = ()
    device_memory_bytes: int = 0     # of the device models load on
    gpu_class: str = ""              # "" = CPU
    num_gpus: int = 0
    zone: str = ""
    draining: bool = False
    # model id -> why this worker cannot run it (weights missing...), as the worker reports it
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def saturated(self) -> bool:
        return self.in_flight >= self.capacity

    def is_resident(self, model_id: str) -> bool:
        return any(r.model_id == model_id for r in self.resident)

    @property
    def used_bytes(self) -> int:
        return sum(r.memory_bytes for r in self.resident)


@dataclass(frozen=True)
class Decision:
    worker_id: str | None
    cold: bool = False
    evict: tuple[str, ...] = ()
    reason: str = ""


class PlacementPolicy(Protocol):
    def place(self, needs: ModelNeeds, workers: Sequence[WorkerInfo]) -> Decision: ...


def fits_hardware(needs: ModelNeeds, w: WorkerInfo) -> bool:
    if needs.gpu_required and not w.gpu_class:
        return False
    if needs.gpu_classes and w.gpu_class not in needs.gpu_classes:
        return False
    if needs.num_gpus and w.num_gpus < needs.num_gpus:
        return False
    return not (needs.min_device_memory_bytes
                and w.device_memory_bytes < needs.min_device_memory_bytes)


def eligible(needs: ModelNeeds, workers: Sequence[WorkerInfo]) -> list[WorkerInfo]:
    """Workers that serve the model, have its weights and meet its hardware constraints,
    zone-preferred."""
    out = []
    for w in workers:
        if w.draining or needs.model_id not in w.models or needs.model_id in w.unavailable:
            continue
        if not fits_hardware(needs, w):
            continue
        out.append(w)
    if needs.zone:
        in_zone = [w for w in out if w.zone == needs.zone]
        if in_zone:
            return in_zone
    return out


def cannot_run(needs: ModelNeeds, workers: Sequence[WorkerInfo]) -> str | None:
    """Why no worker of ``workers`` could ever run the model, or None when one could (now or
    once it is less busy) or when no worker serving it is known yet."""
    serving = [w for w in workers if needs.model_id in w.models and not w.draining]
    if not serving:
        return None
    fitting = [w for w in serving if fits_hardware(needs, w)]
    if not fitting:
        wanted = needs_text(gpu_required=needs.gpu_required, gpu_classes=needs.gpu_classes,
                            num_gpus=needs.num_gpus,
                            min_device_memory_bytes=needs.min_device_memory_bytes)
        have = sorted({device_text(w.gpu_class, w.device_memory_bytes) for w in serving})
        reason = f"needs {wanted}; the workers serving it here have: {'; '.join(have)}"
        weights = [w.unavailable[needs.model_id] for w in serving if needs.model_id in w.unavailable]
        return f"{reason} (and {weights[0]})" if len(weights) == len(serving) else reason
    if all(needs.model_id in w.unavailable for w in fitting):
        return fitting[0].unavailable[needs.model_id]
    return None


def availability(needs: ModelNeeds, service: str,
                 workers: Sequence[WorkerInfo]) -> tuple[bool, str]:
    """(can run now, why not) for a model listing: a live worker serves it with its weights on
    hardware that fits."""
    if not any(needs.model_id in w.models and not w.draining for w in workers):
        return False, f"no {service} worker serving it is running"
    reason = cannot_run(needs, workers)
    return (reason is None), reason or ""


def evictions_for(worker: WorkerInfo, needed_bytes: int) -> tuple[str, ...] | None:
    """Idle models to evict, least recently used first, so `needed_bytes` fit; None if impossible."""
    free = worker.device_memory_bytes - worker.used_bytes
    if free >= needed_bytes:
        return ()
    chosen: list[str] = []
    for r in sorted((r for r in worker.resident if r.in_flight == 0), key=lambda r: r.last_used):
        chosen.append(r.model_id)
        free += r.memory_bytes
        if free >= needed_bytes:
            return tuple(chosen)
    return None


@dataclass
class ResidentFirst:
    rng: random.Random = field(default_factory=random.Random)

    def place(self, needs: ModelNeeds, workers: Sequence[WorkerInfo]) -> Decision:
        candidates = eligible(needs, workers)
        if not candidates:
            return Decision(None, reason="no worker serves this model with the required hardware")
        warm = [w for w in candidates if w.is_resident(needs.model_id) and not w.saturated]
        if warm:
            pick = warm[0] if len(warm) == 1 else min(self.rng.sample(warm, 2), key=lambda w: w.in_flight / w.capacity)
            return Decision(pick.worker_id, reason="resident")
        open_ = [w for w in candidates if not w.saturated]
        roomy = [w for w in open_ if w.device_memory_bytes - w.used_bytes >= needs.memory_bytes]
        if roomy:
            pick = max(roomy, key=lambda w: (w.device_memory_bytes - w.used_bytes, -w.in_flight))
            return Decision(pick.worker_id, cold=True, reason="room")
        best: tuple[int, WorkerInfo, tuple[str, ...]] | None = None
        for w in open_:
            ev = evictions_for(w, needs.memory_bytes)
            if ev is not None and (best is None or len(ev) < best[0]):
                best = (len(ev), w, ev)
        if best is not None:
            return Decision(best[1].worker_id, cold=True, evict=best[2], reason="evict")
        return Decision(None, reason="all eligible workers are busy")


@dataclass
class RoundRobin:
    _counter: itertools.count = field(default_factory=itertools.count)

    def place(self, needs: ModelNeeds, workers: Sequence[WorkerInfo]) -> Decision:
        candidates = [w for w in eligible(needs, workers) if not w.saturated]
        if not candidates:
            return Decision(None, reason="busy")
        pick = candidates[next(self._counter) % len(candidates)]
        return _with_evictions(pick, needs)


@dataclass
class RandomChoice:
    rng: random.Random = field(default_factory=random.Random)

    def place(self, needs: ModelNeeds, workers: Sequence[WorkerInfo]) -> Decision:
        candidates = [w for w in eligible(needs, workers) if not w.saturated]
        if not candidates:
            return Decision(None, reason="busy")
        return _with_evictions(self.rng.choice(candidates), needs)


def _with_evictions(w: WorkerInfo, needs: ModelNeeds) -> Decision:
    if w.is_resident(needs.model_id):
        return Decision(w.worker_id, reason="resident")
    ev = evictions_for(w, needs.memory_bytes)
    return Decision(w.worker_id, cold=True, evict=ev or (), reason="cold")
