"""The model cache loads each model once (single flight): callers of a model that is loading
wait for that load, a caller that goes away leaves it running for the rest, and a failed load
reaches every waiter and is retried by the next call."""
from __future__ import annotations

import asyncio

import pytest

from genmesh.worker.cache import ModelCache

pytestmark = pytest.mark.asyncio


class GatedLoader:
    """A load that finishes when the test opens its gate; counts how often it started."""

    def __init__(self, fail: bool = False) -> None:
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.calls = 0
        self.fail = fail

    async def __call__(self) -> object:
        self.calls += 1
        self.started.set()
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("weights unreadable")
        return object()


async def test_concurrent_callers_share_one_load() -> None:
    cache, load = ModelCache(10), GatedLoader()
    callers = [asyncio.create_task(cache.acquire("m", load, 1)) for _ in range(3)]
    await load.started.wait()
    assert cache.loading == ["m"] and "m" in cache.loading_since
    load.gate.set()
    entries = await asyncio.gather(*callers)
    assert load.calls == 1
    assert entries[0] is entries[1] is entries[2] and entries[0].in_flight == 3
    assert cache.loading == [] and cache.loading_since == {}
    assert (cache.misses, cache.hits) == (1, 2)


async def test_a_caller_that_goes_away_leaves_the_load_to_the_next() -> None:
    cache, load = ModelCache(10), GatedLoader()
    first = asyncio.create_task(cache.acquire("m", load, 1))
    await load.started.wait()
    first.cancel()  # the router gave up on the call and re-sends it
    with pytest.raises(asyncio.CancelledError):
        await first
    assert cache.loading == ["m"]  # still loading, for whoever asks next
    resent = asyncio.create_task(cache.acquire("m", load, 1))
    load.gate.set()
    entry = await resent
    assert load.calls == 1 and cache.entries["m"] is entry and entry.in_flight == 1


async def test_a_failed_load_reaches_every_waiter_and_the_next_call_retries() -> None:
    cache, load = ModelCache(10), GatedLoader(fail=True)
    callers = [asyncio.create_task(cache.acquire("m", load, 1)) for _ in range(2)]
    await load.started.wait()
    load.gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    assert cache.loading == [] and "m" not in cache.entries
    load.fail = False
    entry = await cache.acquire("m", load, 1)
    assert load.calls == 2 and cache.entries["m"] is entry


async def test_a_model_that_finishes_loading_after_close_is_closed_not_kept() -> None:
    closed: list[bool] = []

    class Engine:
        def close(self) -> None:
            closed.append(True)

    cache, gate = ModelCache(10), asyncio.Event()

    async def load() -> Engine:
        await gate.wait()
        return Engine()

    caller = asyncio.create_task(cache.acquire("m", load, 1))
    while not cache.loading:
        await asyncio.sleep(0)
    cache.close()  # the worker stops mid-load
    gate.set()
    with pytest.raises(Exception, match="stopped while 'm' loaded"):
        await caller
    assert closed == [True] and cache.entries == {}
