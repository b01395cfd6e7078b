"""The per-worker model cache: loads each model once, keeps it within a memory budget, evicts
idle models least-recently-used first, and records load times and hit rates."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from genmesh.errors import ModelUnavailable, ResourceExhausted

log = logging.getLogger("genmesh.cache")


@dataclass
class Entry:
    model_id: str
    value: Any
    size_bytes: int
    device: str
    load_seconds: float
    last_used: float = field(default_factory=time.time)
    in_flight: int = 0


class ModelCache:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.entries: dict[str, Entry] = {}
        self.hits = 0
        self.misses = 0
        # One load per model at a time (single flight): every caller of a model that is loading
        # awaits the same task. The task belongs to the cache, not to the first caller, so a
        # caller that goes away (a router that gave up on the call and re-sent it) leaves the
        # load running and the re-sent call joins it, instead of starting a second engine.
        self._loading: dict[str, asyncio.Task[Entry]] = {}
        self.loading_since: dict[str, float] = {}  # model id -> wall time its load began
        # Called when a load begins or ends (the worker tells the routers at once).
        self.on_change: Callable[[], None] | None = None
        self._closed = False

    @property
    def used_bytes(self) -> int:
        return sum(e.size_bytes for e in self.entries.values())

    @property
    def loading(self) -> list[str]:
        """The ids of the models loading now."""
        return sorted(self._loading)

    async def acquire(self, model_id: str, loader: Callable[[], Awaitable[Any]], size_bytes: int,
                      device: str = "cpu") -> Entry:
        """The loaded model, loading it on a miss; callers must `release` it when done."""
        while True:
            entry = self.entries.get(model_id)
            if entry is not None:
                self.hits += 1
                break
            task = self._loading.get(model_id)
            if task is not None:
                self.hits += 1  # joined the load under way (as a lock's waiter found it loaded)
            else:
                self.misses += 1
                task = asyncio.create_task(self._load(model_id, loader, size_bytes, device),
                                           name=f"load {model_id}")
                self._loading[model_id] = task
                self.loading_since[model_id] = time.time()
                task.add_done_callback(lambda t, m=model_id: self._loaded(m, t))
                self._changed()
            # Shielded: cancelling this caller does not cancel the load the others wait for.
            loaded = await asyncio.shield(task)
            if self.entries.get(model_id) is loaded:
                entry = loaded
                break
            # Evicted between the load finishing and this caller resuming: look again.
        entry.in_flight += 1
        entry.last_used = time.time()
        return entry

    async def _load(self, model_id: str, loader: Callable[[], Awaitable[Any]], size_bytes: int,
                    device: str) -> Entry:
        await self._make_room(size_bytes, keep=model_id)
        started = time.perf_counter()
        value = await loader()
        if self._closed:
            # The worker stopped while this loaded (a load in a thread cannot be interrupted):
            # close what it started (a vLLM engine's processes) rather than leave it behind.
            _close(value)
            raise ModelUnavailable(f"this worker stopped while '{model_id}' loaded")
        entry = Entry(model_id, value, size_bytes, device, time.perf_counter() - started)
        self.entries[model_id] = entry
        log.info("model loaded", extra={"model_id": model_id,
                                        "load_seconds": round(entry.load_seconds, 3)})
        return entry

    def _loaded(self, model_id: str, task: asyncio.Task[Entry]) -> None:
        if self._loading.get(model_id) is task:
            del self._loading[model_id]
            self.loading_since.pop(model_id, None)
        if not task.cancelled() and task.exception() is not None:
            # Every waiter got the error; the next call loads afresh. Retrieved here so a load
            # whose callers all went away is still logged rather than warned about at exit.
            log.warning("model load failed", extra={"model_id": model_id,
                                                    "error": repr(task.exception())})
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def release(self, entry: Entry) -> None:
        entry.in_flight = max(0, entry.in_flight - 1)
        entry.last_used = time.time()

    async def _make_room(self, size_bytes: int, keep: str) -> None:
        while self.used_bytes + size_bytes > self.budget_bytes:
            idle = [e for e in self.entries.values() if e.in_flight == 0 and e.model_id != keep]
            if not idle:
                if not self.entries:
                    return  # one model larger than the budget still gets to load alone
                raise ResourceExhausted(
                    f"model cache full: {self.used_bytes} of {self.budget_bytes} bytes in use by busy models")
            victim = min(idle, key=lambda e: e.last_used)
            self.evict(victim.model_id)

    def close(self) -> None:
        """The worker is stopping: evicts every idle model now, and closes any model still
        loading when its load finishes."""
        self._closed = True
        for model_id in list(self.entries):
            self.evict(model_id)

    def evict(self, model_id: str) -> bool:
        entry = self.entries.get(model_id)
        if entry is None or entry.in_flight:
            return False
        del self.entries[model_id]
        _close(entry.value)
        log.info("model evicted", extra={"model_id": model_id})
        return True


def _close(value: Any) -> None:
    close = getattr(value, "close", None)
    if callable(close):
        close()
