"""Usage records: one per finished request, published durably on JetStream for billing.

The record's Nats-Msg-Id is the request id, so a re-publish (a retry, or a router finishing a job
whose first router died after completing it) is dropped by JetStream's duplicate window, and
billing's unique request id catches anything later.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import time
from collections import deque
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from genmesh import bus
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
    """Publishes usage records from one background loop without waiting on each ack.

    A record stays pending until JetStream acknowledges it; without an ack within
    `ack_timeout_s` (NATS restarting, a reply lost) or with an error it is published again.
    Re-publishing is safe: the Nats-Msg-Id is the request id (JetStream drops the duplicate) and
    billing's ledger is unique on the request id. This replaced a task and an awaited
    request/reply per record, which cost the sync path's CPU on every call.
    """

    def __init__(self, js: JetStreamContext, *, ack_timeout_s: float = 5.0,
                 max_unacked: int = 1024) -> None:
        self.js = js
        self.ack_timeout_s = ack_timeout_s
        self.max_unacked = max_unacked
        self._backlog: deque[billing_pb2.UsageRecord] = deque()
        # request id -> (record, sent at, ack future)
        self._unacked: dict[str, tuple[billing_pb2.UsageRecord, float, asyncio.Future[Any]]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._backlog) + len(self._unacked)

    def publish_soon(self, rec: billing_pb2.UsageRecord) -> None:
        """Queues a record; it is published (and re-published until acked) in the background."""
        self._backlog.append(rec)
        self._idle.clear()
        self._wake.set()
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._run())

    async def _run(self) -> None:
        delay = 0.1
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.ack_timeout_s / 2)
            self._wake.clear()
            self._requeue_expired()
            try:
                await self._send_backlog()
                delay = 0.1
            except Exception as exc:  # noqa: BLE001 - NATS down: keep the records, keep trying
                log.warning("usage publish failed; retrying", extra={"error": repr(exc),
                                                                     "pending": self.pending})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            if not self.pending:
                self._idle.set()

    async def _send_backlog(self) -> None:
        while self._backlog and len(self._unacked) < self.max_unacked:
            rec = self._backlog[0]
            future = await self.js.publish_async(
                bus.usage_subject(rec.model_id), rec.SerializeToString(),
                headers={"Nats-Msg-Id": rec.request_id}, wait_stall=self.ack_timeout_s)
            self._backlog.popleft()
            stale = self._unacked.pop(rec.request_id, None)
            if stale is not None:
                stale[2].cancel()
            self._unacked[rec.request_id] = (rec, time.monotonic(), future)
            future.add_done_callback(functools.partial(self._settled, rec.request_id))

    def _settled(self, request_id: str, future: asyncio.Future[Any]) -> None:
        entry = self._unacked.get(request_id)
        if entry is None or entry[2] is not future or future.cancelled():
            return
        del self._unacked[request_id]
        if future.exception() is not None:
            log.warning("usage record not stored; retrying", extra={
                "request_id": request_id, "error": repr(future.exception())})
            self._backlog.append(entry[0])
            self._wake.set()
        elif not self.pending:
            self._idle.set()

    def _requeue_expired(self) -> None:
        now = time.monotonic()
        expired = [rid for rid, (_, sent, _f) in self._unacked.items() if now - sent > self.ack_timeout_s]
        for rid in expired:
            rec, _, future = self._unacked.pop(rid)
            future.cancel()
            self._backlog.append(rec)
        if expired:
            log.warning("usage records unacked; re-publishing", extra={"count": len(expired)})

    async def flush(self, timeout: float = 10.0) -> None:
        """Waits (bounded) until every queued record is acknowledged."""
        if self.pending:
            self._wake.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(BaseException):
                await self._loop
            self._loop = None
