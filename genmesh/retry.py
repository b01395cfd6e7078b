"""The one backoff every retrying loop in the mesh uses: exponential delays after consecutive
failures, capped, starting again after a success.

The loops that retry here are long-lived (a consumer that must outlive a NATS or Postgres
restart, a publisher holding records until they are acknowledged, a runner pool re-warming) and
keep their own state between attempts, so they hold a `Backoff` and ask it how long to wait,
rather than handing their body to a decorator.
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Backoff:
    """`first` after one failure, times `factor` after each further one, never over `maximum`."""

    first: float
    maximum: float = math.inf
    factor: float = 2.0
    failures: int = 0

    def next_delay(self) -> float:
        """Counts one more failure; the delay to wait before the next attempt."""
        self.failures += 1
        return min(self.maximum, self.first * self.factor ** (self.failures - 1))

    async def sleep(self) -> float:
        """Counts one more failure and waits its delay (returned, for logs)."""
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay

    def reset(self) -> None:
        """After a success: the next failure waits `first` again."""
        self.failures = 0


async def retry(attempt: Callable[[], Awaitable[T]], *, attempts: int, backoff: Backoff,
                retry_on: tuple[type[BaseException], ...],
                on_retry: Callable[[BaseException, float], None] | None = None) -> T:
    """`attempt()`'s result, calling it again after a `retry_on` error (waiting `backoff`) up to
    `attempts` times in all; the last error propagates."""
    for _ in range(attempts - 1):
        try:
            return await attempt()
        except retry_on as exc:
            delay = backoff.next_delay()
            if on_retry is not None:
                on_retry(exc, delay)
            await asyncio.sleep(delay)
    return await attempt()
