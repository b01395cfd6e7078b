"""Billing's read side over the ledger and prices: usage series, estimates, request logs, model
metrics and the price list (plus SetPrice, its one write).

Every query is scoped by the caller (see keys_api.visible_key): a user key reads its own rows.
Time windows are half-open, [start, end), on finished_at.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import asyncpg

from genmesh import pricing
from genmesh.errors import InvalidArgument, NotFound
from genmesh.keys import Identity
from genmesh.v1 import billing_pb2, common_pb2
from genmesh.services.billing.convert import (from_timestamp, model_price, status_enum,
                                              status_name, to_timestamp)
from genmesh.services.billing.keys_api import require_admin, visible_key
from genmesh.services.billing.prices import PriceStore, validate_price

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
DEFAULT_METRICS_WINDOW = dt.timedelta(hours=1)
DEFAULT_USAGE_WINDOW = {"hour": dt.timedelta(hours=24), "day": dt.timedelta(days=30)}
BUCKETS = {billing_pb2.BUCKET_SIZE_UNSPECIFIED: "day", billing_pb2.BUCKET_SIZE_DAY: "day",
           billing_pb2.BUCKET_SIZE_HOUR: "hour"}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class Where:
    """SQL conditions with numbered parameters, built up one filter at a time."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.args: list[Any] = []

    def add(self, condition: str, *values: Any) -> None:
        """`condition` uses {0}, {1}, ... for its values."""
        placeholders = []
        for value in values:
            self.args.append(value)
            placeholders.append(f"${len(self.args)}")
        self.conditions.append(condition.format(*placeholders))

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def sql(self) -> str:
        return "WHERE " + " AND ".join(self.conditions) if self.conditions else ""


def window(request: Any, default: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
    end = from_timestamp(request, "end") or dt.datetime.now(dt.timezone.utc)
    start = from_timestamp(request, "start") or end - default
    if start >= end:
        raise InvalidArgument("must be before end", field="start")
    return start, end


def scoped(identity: Identity, requested_key: str, model_ids: Sequence[str]) -> Where:
    where = Where()
    key = visible_key(identity, requested_key)
    if key is not None:
        where.add("l.api_key_id = {0}", key)
    if model_ids:
        where.add("l.model_id = ANY({0}::text[])", list(model_ids))
    return where


# --- cursor -------------------------------------------------------------------------------------

def encode_cursor(finished_at: dt.datetime, request_id: str) -> str:
    """Opaque position after a row: its (finished_at, request_id), exact to the microsecond."""
    micros = (finished_at - _EPOCH) // dt.timedelta(microseconds=1)
    raw = f"{micros}:{request_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        micros, request_id = raw.split(":", 1)
        return _EPOCH + dt.timedelta(microseconds=int(micros)), request_id
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise InvalidArgument("is not a cursor returned by ListRequestLogs", field="cursor") from exc


# --- queries ------------------------------------------------------------------------------------

class Queries:
    def __init__(self, pool: asyncpg.Pool, prices: PriceStore) -> None:
        self.pool = pool
        self.prices = prices

    async def usage(self, identity: Identity, request: billing_pb2.GetUsageRequest
                    ) -> billing_pb2.GetUsageResponse:
        """Billed quantities and costs per bucket, model, key, unit and price. Only buckets with
        usage appear; failed (uncharged) requests do not."""
        bucket = BUCKETS.get(request.bucket_size)
        if bucket is None:
            raise InvalidArgument("must be BUCKET_SIZE_HOUR or BUCKET_SIZE_DAY", field="bucket_size")
        start, end = window(request, DEFAULT_USAGE_WINDOW[bucket])
        where = scoped(identity, request.api_key_id, request.model_ids)
        where.add("l.finished_at >= {0} AND l.finished_at < {1}", start, end)
        where.add("NOT (l.status = ANY({0}::text[]))", sorted(pricing.UNCHARGED_STATUSES))
        size = where.param(bucket)
        rows = await self.pool.fetch(f"""
            SELECT date_trunc({size}, l.finished_at, 'UTC') AS bucket, l.model_id, l.api_key_id,
                   line->>'unit' AS unit, (line->>'unit_price')::float8 AS unit_price,
                   (line->>'per')::float8 AS per, line->>'currency' AS currency,
                   SUM((line->>'quantity')::float8) AS quantity,
                   SUM((line->>'cost')::float8) AS cost, COUNT(*) AS requests
            FROM ledger l CROSS JOIN LATERAL jsonb_array_elements(l.prices) AS line
            {where.sql()}
            GROUP BY 1, 2, 3, 4, 5, 6, 7
            ORDER BY 1, 2, 3, 4, 5""", *where.args)
        response = billing_pb2.GetUsageResponse(currency=pricing.DEFAULT_CURRENCY)
        current: billing_pb2.UsageBucket | None = None
        costs = []
        for row in rows:
            if current is None or current.bucket.ToDatetime(tzinfo=dt.timezone.utc) != row["bucket"]:
                current = response.buckets.add(bucket=to_timestamp(row["bucket"]))
            current.lines.add(model_id=row["model_id"], api_key_id=row["api_key_id"],
                              unit=row["unit"], quantity=row["quantity"],
                              unit_price=row["unit_price"], per=row["per"], cost=row["cost"],
                              currency=row["currency"], requests=row["requests"])
            costs.append(row["cost"])
        response.total_cost = math.fsum(costs)
        if rows:
            response.currency = rows[0]["currency"]
        return response

    async def estimate(self, request: billing_pb2.EstimateCostRequest
                       ) -> billing_pb2.EstimateCostResponse:
        """Planned quantities times the prices in force now."""
        if not request.planned:
            raise InvalidArgument("must list at least one model", field="planned")
        book = await self.prices.book()
        now = dt.datetime.now(dt.timezone.utc)
        response = billing_pb2.EstimateCostResponse(currency=pricing.DEFAULT_CURRENCY)
        costs = []
        for i, planned in enumerate(request.planned):
            where = f"planned[{i}]"
            if planned.calls < 0:
                raise InvalidArgument("must be >= 0 (0 means 1)", field=f"{where}.calls")
            prices = book.in_force(planned.model_id, now, planned.machine_type)
            if not prices:
                raise NotFound(f"{where}.model_id: no prices for model '{planned.model_id}'"
                               + (f" on {planned.machine_type}" if planned.machine_type else ""))
            items: dict[str, float] = {}
            for j, item in enumerate(planned.items):
                if item.unit not in prices:
                    raise InvalidArgument(f"is not priced for {planned.model_id}; priced units are "
                                          f"{', '.join(sorted(prices))}", field=f"{where}.items[{j}].unit")
                if not math.isfinite(item.quantity) or item.quantity < 0:
                    raise InvalidArgument("must be a finite number >= 0",
                                          field=f"{where}.items[{j}].quantity")
                items[item.unit] = items.get(item.unit, 0.0) + item.quantity
            priced = pricing.estimate(items, prices, planned.calls)
            for line in priced.lines:
                response.lines.add(model_id=planned.model_id, unit=line.unit, quantity=line.quantity,
                                   unit_price=line.unit_price, per=line.per, cost=line.cost,
                                   currency=line.currency, requests=planned.calls or 1)
            costs.append(priced.cost)
            if i == 0:
                response.currency = priced.currency
        response.total_cost = math.fsum(costs)
        return response

    async def logs(self, identity: Identity, request: billing_pb2.ListRequestLogsRequest
                   ) -> billing_pb2.ListRequestLogsResponse:
        """Newest first; the cursor continues strictly after the previous page's last row, so
        rows written meanwhile never shift or repeat a page."""
        size = request.page_size or DEFAULT_PAGE_SIZE
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"must be between 1 and {MAX_PAGE_SIZE} (0 means "
                                  f"{DEFAULT_PAGE_SIZE})", field="page_size")
        where = scoped(identity, request.api_key_id, request.model_ids)
        if request.status:
            where.add("l.status = {0}", status_name(request.status))
        start, end = from_timestamp(request, "start"), from_timestamp(request, "end")
        if start is not None:
            where.add("l.finished_at >= {0}", start)
        if end is not None:
            where.add("l.finished_at < {0}", end)
        if request.cursor:
            after = decode_cursor(request.cursor)
            where.add("(l.finished_at, l.request_id) < ({0}::timestamptz, {1}::text)", *after)
        limit = where.param(size + 1)
        rows = await self.pool.fetch(f"""
            SELECT l.request_id, l.model_id, l.api_key_id, l.status, l.queue_time_s, l.run_time_s,
                   l.error, l.error_type, l.cost, l.currency, l.created_at, l.finished_at,
                   l.usage, l.mode, l.machine_type
            FROM ledger l {where.sql()}
            ORDER BY l.finished_at DESC, l.request_id DESC
            LIMIT {limit}""", *where.args)
        page = rows[:size]
        response = billing_pb2.ListRequestLogsResponse(has_more=len(rows) > size)
        for row in page:
            response.logs.append(_log(row))
        if response.has_more:
            response.next_cursor = encode_cursor(page[-1]["finished_at"], page[-1]["request_id"])
        return response

    async def model_metrics(self, identity: Identity, request: billing_pb2.GetModelMetricsRequest
                            ) -> billing_pb2.GetModelMetricsResponse:
        """Per model over the window: requests, errors (FAILED), latency percentiles of completed
        requests (queue + run time: what a caller waited), and requests per second."""
        start, end = window(request, DEFAULT_METRICS_WINDOW)
        where = scoped(identity, request.api_key_id, request.model_ids)
        where.add("l.finished_at >= {0} AND l.finished_at < {1}", start, end)
        rows = await self.pool.fetch(f"""
            SELECT l.model_id, COUNT(*) AS requests,
                   COUNT(*) FILTER (WHERE l.status = 'FAILED') AS errors,
                   percentile_cont(ARRAY[0.5, 0.95, 0.99]::float8[])
                       WITHIN GROUP (ORDER BY l.queue_time_s + l.run_time_s)
                       FILTER (WHERE l.status = 'COMPLETED') AS latency
            FROM ledger l {where.sql()}
            GROUP BY l.model_id ORDER BY l.model_id""", *where.args)
        seconds = (end - start).total_seconds()
        response = billing_pb2.GetModelMetricsResponse()
        for row in rows:
            p50, p95, p99 = row["latency"] or (0.0, 0.0, 0.0)
            response.metrics.add(model_id=row["model_id"], requests=row["requests"],
                                 errors=row["errors"], error_rate=row["errors"] / row["requests"],
                                 p50_latency_seconds=p50, p95_latency_seconds=p95,
                                 p99_latency_seconds=p99,
                                 throughput_per_second=row["requests"] / seconds)
        return response

    async def list_prices(self, request: billing_pb2.ListPricesRequest) -> billing_pb2.ListPricesResponse:
        book = await self.prices.book()
        prices = book.history() if request.include_history else book.current()
        wanted = set(request.model_ids)
        if wanted:
            prices = [p for p in prices if p.model_id in wanted]
        prices.sort(key=lambda p: (p.model_id, p.machine_type, p.unit, p.effective_from))
        return billing_pb2.ListPricesResponse(prices=[model_price(p) for p in prices])

    async def set_price(self, identity: Identity, request: billing_pb2.SetPriceRequest
                        ) -> billing_pb2.SetPriceResponse:
        require_admin(identity, "SetPrice")
        if not request.HasField("price"):
            raise InvalidArgument("is required", field="price")
        p = request.price
        price = validate_price(request.model_id, request.machine_type, p.unit, p.unit_price, p.per,
                               p.currency)
        stored = await self.prices.set(price, set_by=identity.key_id)
        return billing_pb2.SetPriceResponse(price=model_price(stored))


def _log(row: asyncpg.Record) -> billing_pb2.RequestLog:
    return billing_pb2.RequestLog(
        request_id=row["request_id"], model_id=row["model_id"], api_key_id=row["api_key_id"],
        status=status_enum(row["status"]), queue_time_seconds=row["queue_time_s"],
        run_time_seconds=row["run_time_s"], error=row["error"], error_type=row["error_type"],
        cost=row["cost"], currency=row["currency"], created_at=to_timestamp(row["created_at"]),
        finished_at=to_timestamp(row["finished_at"]), mode=row["mode"],
        machine_type=row["machine_type"],
        usage=common_pb2.Usage(items=[common_pb2.UsageItem(unit=i["unit"], quantity=i["quantity"])
                                      for i in row["usage"]]))
