"""Request batching for one image model: compatible concurrent requests share a pipeline call.

Requests with equal `batch_key` (mode, size, steps, guidance, sampler, strength) that arrive
within `window_s` of the oldest waiting one, up to `max_batch_images` images, run as one
diffusers call with prompt and generator lists. While a batch runs, new requests queue and form
the next batch, so under load batches fill without waiting for the window.

Each request keeps its own step events, previews, images and cancellation. Cancellation policy:
a cancelled request leaves its batch at the next step boundary and `submit` raises `Cancelled`
right away; the others run to the end (its rows are still computed, then discarded: per-sample
noise generators make shrinking a running batch unsafe for reproducibility). When every request
of a batch is cancelled the call stops.

Results match running alone with the same seed: the same noise per image. On CPU they agree to
within 1/255 per pixel rather than bit for bit, because BLAS picks different kernels (GEMV vs
GEMM blocking) for different batch sizes.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from genmesh.errors import GenmeshError, Internal, Unavailable

from .params import ImageParams
from .pipeline import (BatchKey, GenerationRequest, ImagePipeline, ImageResult, StepCallback,
                       StepEvent, batch_key)

log = logging.getLogger(__name__)


@dataclass
class BatchStats:
    batches: int = 0
    requests: int = 0
    images: int = 0
    largest_batch: int = 0  # requests in the largest batch so far


@dataclass(eq=False)
class _Pending:
    params: ImageParams
    key: BatchKey
    on_step: StepCallback | None
    cancel: threading.Event
    future: asyncio.Future[ImageResult]
    arrived: float


@dataclass
class ImageBatcher:
    """Collects `submit` calls for one `ImagePipeline` and runs them in batches off the loop.

    `on_step` callbacks run on the event loop thread, so they may touch asyncio objects
    directly (e.g. `queue.put_nowait`); keep them quick. The compute thread waits (up to
    `step_handoff_s`) for each to return before the next step, so a request cancelled while
    handling step k's event stops at step k, exactly as when running alone.
    Blocking compute runs in `executor` (the loop's default executor when None).
    """

    pipeline: ImagePipeline
    window_s: float = 0.005
    max_batch_images: int = 8
    executor: Executor | None = None
    step_handoff_s: float = 1.0
    stats: BatchStats = field(default_factory=BatchStats)

    def __post_init__(self) -> None:
        self._pending: list[_Pending] = []
        self._running: list[_Pending] = []
        self._arrived: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, params: ImageParams, on_step: StepCallback | None = None,
                     cancel: threading.Event | None = None) -> ImageResult:
        """Generate `params` (seed resolved here if unset), sharing compute when possible."""
        if self._closed:
            raise Unavailable("image batcher is shut down")
        loop = asyncio.get_running_loop()
        params = params.with_seed()
        pending = _Pending(params=params, key=batch_key(params), on_step=on_step,
                           cancel=cancel if cancel is not None else threading.Event(),
                           future=loop.create_future(), arrived=loop.time())
        self._pending.append(pending)
        self._ensure_runner().set()
        try:
            return await pending.future
        except asyncio.CancelledError:
            # The caller went away (e.g. its RPC was cancelled): free its place in the batch.
            pending.cancel.set()
            raise

    async def aclose(self) -> None:
        runner = self._runner
        self.close()
        if runner is not None:
            try:
                await runner
            except asyncio.CancelledError:
                pass

    def close(self) -> None:
        """Shut down without waiting (for owners that cannot await, such as the model cache
        evicting this model): waiting and running requests fail with Unavailable, a running
        batch stops at its next step."""
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
        for pending in self._pending + self._running:
            pending.cancel.set()  # a running batch stops at its next step
            _fail(pending, Unavailable("image batcher is shut down"))
        self._pending.clear()

    def _ensure_runner(self) -> asyncio.Event:
        if self._arrived is None:
            self._arrived = asyncio.Event()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run(),
                                                                  name="image-batcher")
        return self._arrived

    async def _run(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            self._pending = [p for p in self._pending if not p.future.done()]
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            first = self._pending[0]
            while (self._images_waiting(first.key) < self.max_batch_images
                   and (remaining := first.arrived + self.window_s - loop.time()) > 0):
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take(first.key)
            if batch:
                await self._execute(batch)

    def _images_waiting(self, key: BatchKey) -> int:
        return sum(p.params.num_images for p in self._pending
                   if p.key == key and not p.future.done())

    def _take(self, key: BatchKey) -> list[_Pending]:
        """Oldest-first requests of `key` up to the image budget (an oversized one runs alone)."""
        batch: list[_Pending] = []
        images = 0
        for pending in self._pending:
            if pending.key != key or pending.future.done():
                continue
            n = pending.params.num_images
            if batch and images + n > self.max_batch_images:
                continue
            batch.append(pending)
            images += n
            if images >= self.max_batch_images:
                break
        taken = set(map(id, batch))
        self._pending = [p for p in self._pending if id(p) not in taken]
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        requests = [GenerationRequest(
            params=p.params, cancel=p.cancel,
            on_step=_handoff(loop, lambda ev, p=p: self._deliver_step(p, ev),
                             self.step_handoff_s),
            on_drop=_relay(loop, lambda exc, p=p: _fail(p, exc)),
        ) for p in batch]
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.images += sum(p.params.num_images for p in batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        log.debug("image batch", extra={"requests": len(batch), "key": batch[0].key})
        self._running = batch
        try:
            outcomes = await loop.run_in_executor(self.executor, self.pipeline.run_batch,
                                                  requests)
        except Exception as exc:  # noqa: BLE001 - a failed call fails its whole batch only
            log.exception("image batch failed")
            for pending in batch:
                _fail(pending, exc)
            return
        finally:
            self._running = []
        for pending, outcome in zip(batch, outcomes):
            if isinstance(outcome, BaseException):
                _fail(pending, outcome)
            elif not pending.future.done():
                pending.future.set_result(outcome)

    def _deliver_step(self, pending: _Pending, event: StepEvent) -> None:
        if pending.future.done() or pending.on_step is None:
            return
        try:
            pending.on_step(event)
        except Exception as exc:  # noqa: BLE001 - the consumer's failure ends only its request
            pending.cancel.set()
            _fail(pending, exc if isinstance(exc, GenmeshError) else Internal(
                f"progress consumer failed: {exc}"))


def _relay(loop: asyncio.AbstractEventLoop, fn: Callable[[object], None]
           ) -> Callable[[object], None]:
    """Call `fn` on the loop thread, preserving order, from the compute thread."""
    def call(arg: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            loop.call_soon_threadsafe(fn, arg)
    return call


def _handoff(loop: asyncio.AbstractEventLoop, fn: Callable[[object], None], timeout: float
             ) -> Callable[[object], None]:
    """Like `_relay`, but the compute thread waits until `fn` has run (bounded by `timeout`,
    so a stalled loop slows a batch but never hangs it)."""
    def call(arg: object) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn(arg)
            finally:
                done.set()

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return
        done.wait(timeout)
    return call


def _fail(pending: _Pending, exc: BaseException) -> None:
    if not pending.future.done():
        pending.future.set_exception(exc)
