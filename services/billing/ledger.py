"""The usage ledger: a durable JetStream pull consumer writing each UsageRecord to Postgres once.

Records are fetched in batches, priced as of their finished_at, inserted in one transaction
(`ON CONFLICT (request_id) DO NOTHING`, so redeliveries and re-publishes are no-ops) and acked
only after the commit. While billing is down, records wait in the stream; on restart the durable
consumer resumes where it stopped, and anything delivered but never acked comes back.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import nats.errors
from google.protobuf.message import DecodeError
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge, Histogram

from genmesh import bus, pricing
from genmesh.retry import Backoff
from genmesh.v1 import billing_pb2
from genmesh.services.billing.convert import status_name
from genmesh.services.billing.prices import PriceStore

log = logging.getLogger("genmesh.billing.ledger")

DURABLE = "billing"
FILTER_SUBJECT = "genmesh.usage.>"
MAX_TEXT = 4000
# After a batch, how long records may gather before the next fetch: busy, a write per ~25 ms
# instead of one per record; the ledger lags the request by at most this much more.
LINGER_S = 0.025

RECORDS_WRITTEN = Counter("genmesh_billing_records_written",
                          "Usage records written to the ledger")
DUPLICATES_SKIPPED = Counter("genmesh_billing_duplicates_skipped",
                             "Usage records already in the ledger (redelivered or re-published)")
INVALID_RECORDS = Counter("genmesh_billing_invalid_records",
                          "Messages on the usage stream that are not a usable UsageRecord")
UNPRICED_ITEMS = Counter("genmesh_billing_unpriced_items",
                         "Usage items with no price in force (written at zero cost)", ["unit"])
LAG_MESSAGES = Gauge("genmesh_billing_lag_messages",
                     "Usage records in the stream not yet delivered to billing")
LAG_SECONDS = Gauge("genmesh_billing_lag_seconds",
                    "Seconds the last handled usage record spent in the stream before billing")
BATCH_SECONDS = Histogram("genmesh_billing_batch_seconds", "Time to price and write one batch")

_TRANSIENT = (OSError, asyncio.TimeoutError, asyncpg.InterfaceError,
              asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
              asyncpg.OperatorInterventionError, asyncpg.TooManyConnectionsError,
              asyncpg.SerializationError, asyncpg.DeadlockDetectedError)  # expected while PG restarts

_INSERT = """
INSERT INTO ledger (request_id, model_id, api_key_id, status, mode, machine_type, usage, cost,
                    currency, prices, error, error_type, created_at, started_at, finished_at,
                    queue_time_s, run_time_s)
SELECT r, m, k, st, mo, mt, u::jsonb, c, cur, p::jsonb, e, et, ca, sa, fa, q, rt
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::float8[], $9::text[], $10::text[], $11::text[], $12::text[],
            $13::timestamptz[], $14::timestamptz[], $15::timestamptz[], $16::float8[],
            $17::float8[])
     AS t(r, m, k, st, mo, mt, u, c, cur, p, e, et, ca, sa, fa, q, rt)
ON CONFLICT (request_id) DO NOTHING
RETURNING request_id
"""


def _text(value: str, limit: int = MAX_TEXT) -> str:
    # Postgres text cannot hold NUL; an over-long error message is not worth a failed batch.
    return value.replace("\x00", "")[:limit]


def _time(rec: billing_pb2.UsageRecord, name: str) -> dt.datetime | None:
    if not rec.HasField(name):
        return None
    try:
        return getattr(rec, name).ToDatetime(tzinfo=dt.timezone.utc)
    except (ValueError, OverflowError):
        log.warning("out-of-range timestamp ignored", extra={"request_id": rec.request_id,
                                                            "field": name})
        return None


def _seconds(value: float) -> float:
    return value if math.isfinite(value) and value >= 0 else 0.0


def decode(data: bytes, headers: dict[str, str] | None = None) -> list[billing_pb2.UsageRecord] | None:
    """The records in a stream message (a UsageBatch or one UsageRecord), or None when it holds
    none usable. Records without request_id or model_id are dropped (counted)."""
    try:
        records = bus.usage_records(data, headers)
    except DecodeError:
        return None
    usable = [rec for rec in records if rec.request_id and rec.model_id]
    if len(usable) < len(records):
        INVALID_RECORDS.inc(len(records) - len(usable))
    return usable or None


@dataclass(frozen=True)
class Row:
    """One ledger row, priced."""

    request_id: str
    model_id: str
    api_key_id: str
    status: str
    mode: str
    machine_type: str
    usage: list[dict[str, Any]]
    priced: pricing.Priced
    error: str
    error_type: str
    created_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime
    queue_time_s: float
    run_time_s: float


def to_row(rec: billing_pb2.UsageRecord, book: pricing.PriceBook, received_at: dt.datetime) -> Row:
    """Prices a record as of its finished_at (when it was never set: when billing received it)."""
    items = []
    for item in rec.usage.items:
        if not math.isfinite(item.quantity) or item.quantity < 0:
            # A negative or infinite quantity is a worker bug; dropping the item keeps the rest.
            log.warning("invalid usage item dropped", extra={
                "request_id": rec.request_id, "unit": item.unit, "quantity": repr(item.quantity)})
            continue
        items.append((_text(item.unit, 64), item.quantity))
    finished = _time(rec, "finished_at") or received_at
    status = status_name(rec.status)
    priced = pricing.price_record(book, model_id=rec.model_id, items=items, at=finished,
                                  status=status, machine_type=rec.machine_type,
                                  run_time_s=_seconds(rec.run_time_seconds))
    return Row(request_id=_text(rec.request_id, 256), model_id=_text(rec.model_id, 256),
               api_key_id=_text(rec.api_key_id, 256), status=status, mode=_text(rec.mode, 32),
               machine_type=_text(rec.machine_type, 64),
               usage=[{"unit": u, "quantity": q} for u, q in items], priced=priced,
               error=_text(rec.error), error_type=_text(rec.error_type, 128),
               created_at=_time(rec, "created_at"), started_at=_time(rec, "started_at"),
               finished_at=finished, queue_time_s=_seconds(rec.queue_time_seconds),
               run_time_s=_seconds(rec.run_time_seconds))


class RefusedRecord(Exception):
    """A record that cannot be priced or stored as it is."""

    def __init__(self, request_id: str, cause: Exception) -> None:
        super().__init__(f"{request_id}: {cause!r}")
        self.request_id = request_id


class LedgerWriter:
    """Prices and inserts records in one transaction; returns how many were new."""

    def __init__(self, pool: asyncpg.Pool, prices: PriceStore) -> None:
        self.pool = pool
        self.prices = prices

    async def write(self, records: list[billing_pb2.UsageRecord]) -> int:
        unique = list({rec.request_id: rec for rec in reversed(records)}.values())[::-1]
        received = dt.datetime.now(dt.timezone.utc)
        async with self.pool.acquire() as conn, conn.transaction():
            # Under the lock, no price can be added between pricing these rows and committing them.
            book = await self.prices.book(conn, lock=True)
            rows = []
            for rec in unique:
                try:
                    rows.append(to_row(rec, book, received))
                except Exception as exc:  # noqa: BLE001 - one odd record must not stall the rest
                    raise RefusedRecord(rec.request_id, exc) from exc
            inserted = await conn.fetch(_INSERT, *_columns(rows))
        new = {r["request_id"] for r in inserted}
        for row in rows:
            if row.request_id in new:
                for unit in row.priced.unpriced_units:
                    UNPRICED_ITEMS.labels(unit=unit).inc()
        return len(new)


def _columns(rows: list[Row]) -> list[list[Any]]:
    return [[r.request_id for r in rows], [r.model_id for r in rows], [r.api_key_id for r in rows],
            [r.status for r in rows], [r.mode for r in rows], [r.machine_type for r in rows],
            # JSON as text: asyncpg would read a list of lists as a two-dimensional array.
            [json.dumps(r.usage) for r in rows], [r.priced.cost for r in rows],
            [r.priced.currency for r in rows],
            [json.dumps([line.to_json() for line in r.priced.lines]) for r in rows],
            [r.error for r in rows], [r.error_type for r in rows], [r.created_at for r in rows],
            [r.started_at for r in rows], [r.finished_at for r in rows],
            [r.queue_time_s for r in rows], [r.run_time_s for r in rows]]


def _is_batch(msg: Any) -> bool:
    return bool(msg.headers) and msg.headers.get(bus.USAGE_BATCH_HEADER) == "batch"


def _once(msgs: list[Any]) -> list[Any]:
    """Each message once, in order (a batch message carries several records)."""
    seen: set[int] = set()
    return [m for m in msgs if not (id(m) in seen or seen.add(id(m)))]


class Ledger:
    """The consumer loop: fetch up to `batch_size`, write them in one transaction, then ack."""

    def __init__(self, js: JetStreamContext, writer: LedgerWriter, *, batch_size: int = 256,
                 ack_wait_s: float = 30.0, fetch_timeout_s: float = 1.0,
                 linger_s: float = LINGER_S) -> None:
        self.js = js
        self.writer = writer
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.ack_wait_s = ack_wait_s
        self.fetch_timeout_s = fetch_timeout_s
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self._sub: Any = None

    async def start(self) -> None:
        await bus.ensure_consumer(self.js, bus.USAGE_STREAM, DURABLE, FILTER_SUBJECT,
                                  ack_wait=self.ack_wait_s)
        self._sub = await self.js.pull_subscribe_bind(durable=DURABLE, stream=bus.USAGE_STREAM)
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="billing-ledger")

    async def stop(self) -> None:
        """Finishes the batch in hand (written and acked), then stops fetching."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            if not self._busy:
                task.cancel()  # waiting in fetch: nothing in hand
            try:
                await asyncio.wait_for(task, self.fetch_timeout_s + 10)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                pass
        if self._sub is not None:
            with contextlib.suppress(Exception):  # the connection may already be gone
                await self._sub.unsubscribe()
            self._sub = None

    async def _run(self) -> None:
        backoff = Backoff(0.1, maximum=2.0)
        while not self._stopping.is_set():
            try:
                msgs = await self._sub.fetch(self.batch_size, timeout=self.fetch_timeout_s)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                LAG_MESSAGES.set(0)  # nothing waiting
                continue
            except Exception as exc:  # noqa: BLE001 - NATS restarting: keep trying
                log.warning("usage fetch failed", extra={"error": repr(exc)})
                await backoff.sleep()
                continue
            backoff.reset()
            if not msgs:
                # nats-py's fetch can return an empty batch (a status reply, no messages).
                LAG_MESSAGES.set(0)
                continue
            self._busy = True  # set before any await: stop() now waits instead of cancelling
            try:
                await self.handle(msgs)
            except Exception:  # noqa: BLE001 - an unacked batch is redelivered; the loop must live
                log.exception("usage batch failed; it will be redelivered", extra={"records": len(msgs)})
                await asyncio.sleep(backoff.first)
            finally:
                self._busy = False
            if len(msgs) < self.batch_size and self.linger_s:
                # Records are arriving: let the next few gather in the stream, so one fetch, one
                # transaction and one price-book read serve many of them (a lone record after
                # idle is still written at once: the fetch above was waiting for it).
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.linger_s)

    async def handle(self, msgs: list[Any]) -> None:
        """Writes one fetched batch and acks it; undecodable messages are terminated."""
        batch: list[tuple[billing_pb2.UsageRecord, Any]] = []
        for msg in msgs:
            records = decode(msg.data, msg.headers)
            if records is None:
                await self._refuse(msg, "not a UsageRecord (or UsageBatch) with request_id and model_id")
            else:
                batch += [(rec, msg) for rec in records]
        if batch:
            started = time.perf_counter()
            result = await self._write(batch)
            if result is None:
                return  # stopping before the rows were committed: they will be redelivered
            written, kept = result
            BATCH_SECONDS.observe(time.perf_counter() - started)
            RECORDS_WRITTEN.inc(written)
            DUPLICATES_SKIPPED.inc(len(kept) - written)
            for msg in _once(kept):
                await msg.ack()
        last = msgs[-1].metadata
        LAG_MESSAGES.set(last.num_pending)
        LAG_SECONDS.set(max(0.0, (dt.datetime.now(dt.timezone.utc) - last.timestamp).total_seconds()))

    async def _refuse(self, msg: Any, reason: str, request_id: str = "") -> None:
        INVALID_RECORDS.inc()
        log.error("usage message refused and terminated",
                  extra={"subject": msg.subject, "request_id": request_id, "reason": reason})
        await msg.term()

    async def _write(self, batch: list[tuple[billing_pb2.UsageRecord, Any]]
                     ) -> tuple[int, list[Any]] | None:
        """(rows written, messages to ack), retrying while Postgres is unavailable; None when
        billing stopped before the rows were committed."""
        backoff = Backoff(0.1, maximum=2.0)
        while True:
            try:
                written = await self.writer.write([rec for rec, _ in batch])
                return written, [msg for _, msg in batch]
            except (RefusedRecord, asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
                # A record that cannot be stored would block the stream forever: isolate it.
                if len(batch) == 1:
                    rec, msg = batch[0]
                    if _is_batch(msg):
                        # Its message carries other records: drop this one alone, ack the message.
                        INVALID_RECORDS.inc()
                        log.error("usage record refused", extra={"request_id": rec.request_id,
                                                                 "reason": repr(exc)})
                        return 0, [msg]
                    await self._refuse(msg, repr(exc), rec.request_id)
                    return 0, []
                return await self._write_one_by_one(batch)
            except _TRANSIENT as exc:
                log.warning("ledger write failed; retrying", extra={"error": repr(exc),
                                                                    "records": len(batch)})
            except Exception:  # noqa: BLE001 - keep the records (unacked) rather than lose them
                log.exception("ledger write failed; retrying", extra={"records": len(batch)})
            if self._stopping.is_set():
                return None
            for msg in _once([m for _, m in batch]):  # still working on them: do not redeliver yet
                with contextlib.suppress(Exception):
                    await msg.in_progress()
            await backoff.sleep()

    async def _write_one_by_one(self, batch: list[tuple[billing_pb2.UsageRecord, Any]]
                                ) -> tuple[int, list[Any]] | None:
        written, kept = 0, []
        for i, item in enumerate(batch):
            result = await self._write([item])
            if result is None:
                # Ack the messages all of whose records are committed (a batch message whose
                # records are not all written yet waits); the rest is redelivered.
                RECORDS_WRITTEN.inc(written)
                DUPLICATES_SKIPPED.inc(len(kept) - written)
                unfinished = {id(m) for _, m in batch[i:]}
                for msg in _once(kept):
                    if id(msg) not in unfinished:
                        await msg.ack()
                return None
            written += result[0]
            kept += result[1]
        return written, kept
