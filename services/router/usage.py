"""Usage records: one per finished request, published durably on JetStream for billing, in
batches (UsageBatch) so that a busy router sends one message per ~50 ms, not one per request.

A re-publish of a batch (a lost ack) carries the same Nats-Msg-Id and is dropped by JetStream's
duplicate window; a record published twice in different batches (a router finishing a job whose
first router died after completing it) is caught by billing's ledger, unique on request id.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import time
import uuid
from collections import deque
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from genmesh import bus
from genmesh.retry import Backoff
from genmesh.v1 import billing_pb2, common_pb2

log = logging.getLogger("genmesh.router.usage")


def _ts(value: dt.datetime | float | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    if isinstance(value, dt.datetime):
        ts.FromDatetime(value)
    else:
        ts.FromNanoseconds(int(value * 1e9))
    return ts


def record(*, request_id: str, model_id: str, api_key_id: str, status: int,
           usage: common_pb2.Usage | None, error: str = "", error_type: str = "",
           created_at: dt.datetime | float | None = None, started_at: dt.datetime | float | None = None,
           finished_at: dt.datetime | float | None = None, queue_time_s: float = 0.0,
           run_time_s: float = 0.0, mode: str = "sync", machine_type: str = "") -> billing_pb2.UsageRecord:
    rec = billing_pb2.UsageRecord(
        request_id=request_id, model_id=model_id, api_key_id=api_key_id, status=status,
        error=error, error_type=error_type, queue_time_seconds=queue_time_s,
        run_time_seconds=run_time_s, mode=mode, machine_type=machine_type)
    if usage is not None:
        rec.usage.CopyFrom(usage)
    for name, value in (("created_at", created_at), ("started_at", started_at), ("finished_at", finished_at)):
        ts = _ts(value)
        if ts is not None:
            getattr(rec, name).CopyFrom(ts)
    return rec


def billed_usage(outcome: Any) -> common_pb2.Usage:
    """What a finished run is billed: its usage event, or, for a stream its caller left before
    that event, the tokens its chunks said were generated so far."""
    if outcome.usage.items or outcome.tokens_so_far is None:
        return outcome.usage
    so_far = outcome.tokens_so_far
    return common_pb2.Usage(items=[
        common_pb2.UsageItem(unit="input_tokens", quantity=so_far.prompt_tokens),
        common_pb2.UsageItem(unit="output_tokens", quantity=so_far.completion_tokens)])


class UsagePublisher:
    """Publishes usage records in batches from one background loop, without waiting on acks.

    Records gather for up to `linger_s` and go out as one UsageBatch message (at most
    `batch_max` records): a busy router sends one message per ~50 ms instead of one per request,
    and billing writes each batch in one transaction. A batch stays pending until JetStream
    acknowledges it; without an ack within `ack_timeout_s` (NATS restarting, a reply lost) or
    with an error, the same batch is published again under the same Nats-Msg-Id (a batch id
    unique to this publisher), so JetStream drops the duplicate, and billing's ledger, unique
    on the request id, catches anything later.
    """

    def __init__(self, js: JetStreamContext, *, ack_timeout_s: float = 5.0,
                 max_unacked: int = 1024, linger_s: float = 0.05, tracked_linger_s: float = 0.01,
                 batch_max: int = 256) -> None:
        self.js = js
        self.ack_timeout_s = ack_timeout_s
        self.max_unacked = max_unacked
        self.linger_s = linger_s
        self.tracked_linger_s = tracked_linger_s
        self.batch_max = batch_max
        # Never reused, not even by a restarted router: a reused batch id inside JetStream's
        # duplicate window would have a new batch dropped as a copy of an old one.
        self.publisher_id = uuid.uuid4().hex
        self._seq = 0
        self._backlog: deque[billing_pb2.UsageRecord] = deque()
        self._retry: deque[tuple[str, bytes, int]] = deque()  # (batch id, message, records)
        # batch id -> (message, records, sent at, ack future)
        self._unacked: dict[str, tuple[bytes, int, float, asyncio.Future[Any]]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._flushing = False
        self._loop: asyncio.Task[None] | None = None
        # Records whose caller waits for their ack (a queued job, acked on JetStream only once
        # its usage is stored: a router killed in between must leave the job for redelivery,
        # whose terminal path publishes the record again). request id -> future; batch -> ids.
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._batch_requests: dict[str, list[str]] = {}

    @property
    def pending(self) -> int:
        """Records not yet acknowledged by JetStream."""
        return (len(self._backlog) + sum(n for _, _, n in self._retry)
                + sum(n for _, n, _, _ in self._unacked.values()))

    def publish_soon(self, rec: billing_pb2.UsageRecord, *, track: bool = False) -> None:
        """Queues a record; it is published (and re-published until acked) in the background.
        With `track`, `acked(rec.request_id)` waits for its batch's ack."""
        if track:
            self._waiting.setdefault(rec.request_id, asyncio.get_running_loop().create_future())
        self._backlog.append(rec)
        self._idle.clear()
        self._wake.set()
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._run())

    async def acked(self, request_id: str, timeout: float) -> bool:
        """Whether the tracked record of `request_id` was acknowledged within `timeout` (True
        when none is tracked)."""
        future = self._waiting.get(request_id)
        if future is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def _run(self) -> None:
        backoff = Backoff(0.1, maximum=5.0)
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                # Records in hand are looked at twice per ack timeout; with none, sleep until woken.
                await asyncio.wait_for(self._wake.wait(),
                                       timeout=self.ack_timeout_s / 2 if self.pending else None)
            self._wake.clear()
            if self._backlog and len(self._backlog) < self.batch_max and not self._flushing:
                # Let the records of concurrent requests gather: every batch costs a JetStream
                # publish and ack here and a fetch and a transaction in billing, so fewer, larger
                # batches are most of what billing costs per request. A queued job waits for its
                # record's ack before its own (see JobQueue), so tracked records linger less.
                await asyncio.sleep(self.tracked_linger_s if self._waiting else self.linger_s)
            self._requeue_expired()
            try:
                await self._send_backlog()
                backoff.reset()
            except Exception as exc:  # noqa: BLE001 - NATS down: keep the records, keep trying
                log.warning("usage publish failed; retrying", extra={"error": repr(exc),
                                                                     "pending": self.pending})
                await backoff.sleep()
            if not self.pending:
                self._idle.set()

    async def _send_backlog(self) -> None:
        while self._retry and len(self._unacked) < self.max_unacked:
            batch_id, data, count = self._retry[0]
            await self._publish(batch_id, data, count)
            self._retry.popleft()
        while self._backlog and len(self._unacked) < self.max_unacked:
            records = [self._backlog[i] for i in range(min(self.batch_max, len(self._backlog)))]
            self._seq += 1
            batch_id = f"{self.publisher_id}-{self._seq}"
            data = billing_pb2.UsageBatch(records=records).SerializeToString()
            tracked = [r.request_id for r in records if r.request_id in self._waiting]
            if tracked:
                self._batch_requests[batch_id] = tracked
            # Taken from the backlog only once it is in flight (or, failing, kept for a retry).
            try:
                await self._publish(batch_id, data, len(records))
            except Exception:
                self._retry.append((batch_id, data, len(records)))
                for _ in records:
                    self._backlog.popleft()
                raise
            for _ in records:
                self._backlog.popleft()

    async def _publish(self, batch_id: str, data: bytes, count: int) -> None:
        future = await self.js.publish_async(
            bus.usage_batch_subject(self.publisher_id), data,
            headers={"Nats-Msg-Id": batch_id, bus.USAGE_BATCH_HEADER: "batch"},
            wait_stall=self.ack_timeout_s)
        stale = self._unacked.pop(batch_id, None)
        if stale is not None:
            stale[3].cancel()
        self._unacked[batch_id] = (data, count, time.monotonic(), future)
        future.add_done_callback(functools.partial(self._settled, batch_id))

    def _settled(self, batch_id: str, future: asyncio.Future[Any]) -> None:
        entry = self._unacked.get(batch_id)
        if entry is None or entry[3] is not future or future.cancelled():
            return
        del self._unacked[batch_id]
        if future.exception() is not None:
            log.warning("usage batch not stored; retrying", extra={
                "batch_id": batch_id, "records": entry[1], "error": repr(future.exception())})
            self._retry.append((batch_id, entry[0], entry[1]))
            self._wake.set()
        else:
            for request_id in self._batch_requests.pop(batch_id, ()):
                waiter = self._waiting.pop(request_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            if not self.pending:
                self._idle.set()

    def _requeue_expired(self) -> None:
        now = time.monotonic()
        expired = [bid for bid, (_, _, sent, _f) in self._unacked.items() if now - sent > self.ack_timeout_s]
        for batch_id in expired:
            data, count, _, future = self._unacked.pop(batch_id)
            future.cancel()
            self._retry.append((batch_id, data, count))
        if expired:
            log.warning("usage batches unacked; re-publishing", extra={"batches": len(expired)})

    async def flush(self, timeout: float = 10.0) -> None:
        """Waits (bounded) until every queued record is acknowledged."""
        self._flushing = True
        if self.pending:
            self._wake.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(BaseException):
                await self._loop
            self._loop = None
