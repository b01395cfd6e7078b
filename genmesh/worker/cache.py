"""The per-worker model cache: loads each model once, keeps it within a memory budget, evicts
idle models least-recently-used first, and records load times and hit rates."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from genmesh.errors import ResourceExhausted

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
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def used_bytes(self) -> int:
        return sum(e.size_bytes for e in self.entries.values())

    async def acquire(self, model_id: str, loader: Callable[[], Awaitable[Any]], size_bytes: int,
                      device: str = "cpu") -> Entry:
        """The loaded model, loading it on a miss; callers must `release` it when done."""
        lock = self._locks.setdefault(model_id, asyncio.Lock())
        async with lock:
            entry = self.entries.get(model_id)
            if entry is not None:
                self.hits += 1
            else:
                self.misses += 1
                await self._make_room(size_bytes, keep=model_id)
                started = time.perf_counter()
                value = await loader()
                entry = Entry(model_id, value, size_bytes, device, time.perf_counter() - started)
                self.entries[model_id] = entry
                log.info("model loaded", extra={"model_id": model_id,
                                                "load_seconds": round(entry.load_seconds, 3)})
            entry.in_flight += 1
            entry.last_used = time.time()
            return entry

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

    def evict(self, model_id: str) -> bool:
        entry = self.entries.get(model_id)
        if entry is None or entry.in_flight:
            return False
        del self.entries[model_id]
        close = getattr(entry.value, "close", None)
        if callable(close):
            close()
        log.info("model evicted", extra={"model_id": model_id})
        return True
