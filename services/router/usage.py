"""Usage records: one per finished request, published durably on JetStream for billing.

The record's Nats-Msg-Id is the request id, so a re-publish (a retry, or a router finishing a job
whose first router died after completing it) is dropped by JetStream's duplicate window, and
billing's unique request id catches anything later.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging

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


class UsagePublisher:
    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self._pending: set[asyncio.Task[None]] = set()

    async def publish(self, rec: billing_pb2.UsageRecord) -> None:
        """Publishes until JetStream acknowledges (it may be restarting)."""
        delay = 0.1
        while True:
            try:
                await self.js.publish(bus.usage_subject(rec.model_id), rec.SerializeToString(),
                                      headers={"Nats-Msg-Id": rec.request_id}, timeout=5)
                return
            except Exception as exc:  # noqa: BLE001 - NATS down: keep the record, keep trying
                log.warning("usage publish failed; retrying", extra={"request_id": rec.request_id,
                                                                     "error": repr(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def publish_soon(self, rec: billing_pb2.UsageRecord) -> None:
        """Publishes in the background (the sync path must not wait for the ack)."""
        task = asyncio.create_task(self.publish(rec))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def flush(self, timeout: float = 10.0) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout)
