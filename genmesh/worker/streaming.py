"""Blocking compute in a thread, its events streamed to an async generator as they happen.

Model code is synchronous (torch); it runs in a worker thread and calls `emit(event)`. The
async side yields events in order and, when the caller goes away (client cancelled, deadline),
sets `cancel` so the compute stops at its next check.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, AsyncIterator, Callable

_DONE = object()


async def stream_from_thread(fn: Callable[[Callable[[Any], None], threading.Event], Any],
                             cancel: threading.Event | None = None) -> AsyncIterator[Any]:
    """Runs `fn(emit, cancel)` in a thread; yields what it emits, then its return value
    (unless None). Exceptions from `fn` propagate to the consumer."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    cancel = cancel or threading.Event()

    def emit(event: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    def body() -> Any:
        try:
            return fn(emit, cancel)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    future = loop.run_in_executor(None, body)
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            yield item
        result = await future
        if result is not None:
            yield result
    finally:
        if not future.done():
            cancel.set()
            # Wait for the thread to notice, so the model is idle again when we return.
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(future), timeout=60)
