"""The live view of workers, from their NATS heartbeats; silent workers are declared dead."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from genmesh import bus
from genmesh.v1 import worker_pb2
from genmesh.services.router.placement import Resident, WorkerInfo

log = logging.getLogger("genmesh.router.registry")


@dataclass
class WorkerView:
    state: worker_pb2.WorkerState
    last_seen: float
    local_in_flight: int = 0  # calls this router has open on it

    @property
    def worker_id(self) -> str:
        return self.state.worker_id

    def info(self) -> WorkerInfo:
        s = self.state
        device = s.devices[0] if s.devices else None
        gpus = [d for d in s.devices if d.kind == worker_pb2.DEVICE_KIND_CUDA]
        return WorkerInfo(
            worker_id=s.worker_id, models=frozenset(s.models), capacity=max(1, s.capacity),
            in_flight=max(s.in_flight, self.local_in_flight),
            resident=tuple(Resident(r.model_id, r.memory_bytes, r.last_used.seconds, r.in_flight)
                           for r in s.resident_models),
            device_memory_bytes=device.memory_total_bytes if device else 0,
            gpu_class=gpus[0].gpu_class if gpus else "", num_gpus=len(gpus),
            zone=s.labels.get("zone", ""), draining=s.draining, unavailable=dict(s.unavailable))


class WorkerRegistry:
    def __init__(self, dead_after_s: float) -> None:
        self.dead_after_s = dead_after_s
        self.workers: dict[str, WorkerView] = {}
        # Waiters by the service they wait on (None: any service). A call ending on one service
        # wakes only that service's waiters: waking every queue pull loop that has no slot (one
        # per service without a free worker) cost the router ~50 us of CPU per sync call.
        self._changed: dict[str | None, asyncio.Condition] = {}
        self._waiting: dict[str | None, int] = {}  # notifying nobody is skipped (hot path)
        self.on_dead: list[Callable[[WorkerView], Awaitable[None]]] = []
        self._sub = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, nc) -> None:  # noqa: ANN001 - nats client
        self._sub = await nc.subscribe(bus.HEARTBEAT_SUBJECT, cb=self._on_heartbeat)
        self._sweeper = asyncio.create_task(self._sweep())

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _on_heartbeat(self, msg) -> None:  # noqa: ANN001
        state = worker_pb2.WorkerState.FromString(msg.data)
        if self.observe(state):
            await self.notify()

    def observe(self, state: worker_pb2.WorkerState) -> bool:
        """Takes a heartbeat; True when placement sees the worker differently (it joined, or
        its load, capacity, models or draining changed). Most heartbeats of an idle mesh say
        nothing new, and waking every waiter (queue pull loops, placements) for them was most
        of the router's idle CPU."""
        view = self.workers.get(state.worker_id)
        if view is None:
            self.workers[state.worker_id] = WorkerView(state, time.monotonic())
            log.info("worker joined", extra={"worker_id": state.worker_id, "worker_service": state.service,
                                             "address": state.address})
            return True
        before = view.info()
        view.state = state
        view.last_seen = time.monotonic()
        return view.info() != before

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(2.0, self.dead_after_s / 4))
            now = time.monotonic()
            for view in [v for v in self.workers.values() if now - v.last_seen > self.dead_after_s]:
                await self.declare_dead(view.worker_id)

    async def declare_dead(self, worker_id: str) -> None:
        view = self.workers.pop(worker_id, None)
        if view is None:
            return
        log.warning("worker dead", extra={"worker_id": worker_id, "address": view.state.address})
        for cb in self.on_dead:
            with contextlib.suppress(Exception):
                await cb(view)
        await self.notify()

    def for_service(self, service: str) -> list[WorkerView]:
        return [v for v in self.workers.values() if v.state.service == service]

    def free_slots(self, service: str) -> int:
        return sum(max(0, max(1, v.state.capacity) - max(v.state.in_flight, v.local_in_flight))
                   for v in self.for_service(service) if not v.state.draining)

    def capacity(self, service: str) -> int:
        return sum(max(1, v.state.capacity) for v in self.for_service(service) if not v.state.draining)

    async def notify(self, service: str | None = None) -> None:
        """Wakes the waiters on `service` and those on any service; with None, every waiter
        (a worker joined, died or changed)."""
        for key in (list(self._waiting) if service is None else (service, None)):
            if self._waiting.get(key):
                changed = self._changed[key]
                async with changed:
                    changed.notify_all()

    async def wait_changed(self, timeout: float, service: str | None = None) -> None:
        """Until a change `notify` announces for `service` (None: for any), or `timeout`."""
        changed = self._changed.setdefault(service, asyncio.Condition())
        self._waiting[service] = self._waiting.get(service, 0) + 1
        try:
            async with changed:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout)
        finally:
            self._waiting[service] -= 1
