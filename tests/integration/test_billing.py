"""Billing against real NATS JetStream and Postgres: the exactly-once ledger, pricing history,
usage/estimate/log/metrics queries, API keys and per-key isolation.

Billing runs in-process (its gRPC server on a free port) so a test can stop and restart it and
read its Prometheus counters; records are published the way the router publishes them.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
import nats
import pytest
import pytest_asyncio
import yaml
from prometheus_client import REGISTRY

from genmesh import bus, db
from genmesh.catalog import Catalog
from genmesh.errors import FIELD_KEY
from genmesh.pricing import BEGINNING, DEFAULT_MACHINE_PRICES
from genmesh.rpc import SERVER_OPTIONS
from genmesh.settings import Settings
from genmesh.v1 import billing_pb2, billing_pb2_grpc, common_pb2, router_pb2
from genmesh.services.billing.ledger import DURABLE, LedgerWriter, decode
from genmesh.services.billing.prices import PriceStore
from genmesh.services.billing.server import BillingComponent
from genmesh.services.router.usage import record

pytestmark = pytest.mark.asyncio(loop_scope="session")

UTC = dt.timezone.utc
ADMIN_SECRET = "gm_billing_admin_" + secrets.token_hex(8)
COMPLETED, FAILED = common_pb2.JOB_STATUS_COMPLETED, common_pb2.JOB_STATUS_FAILED
T = TypeVar("T")

CATALOG = {"models": [
    {"id": "test/ledger-image", "task": "text-to-image", "service": "imagegen",
     "prices": [{"unit": "megapixels", "unit_price": 0.001}]},
    {"id": "test/image", "task": "text-to-image", "service": "imagegen",
     "prices": [{"unit": "megapixels", "unit_price": 0.002}]},
    {"id": "test/chat", "task": "chat", "service": "llm", "default_for": ["test-alias"],
     "prices": [{"unit": "input_tokens", "unit_price": 0.05, "per": 1000000},
                {"unit": "output_tokens", "unit_price": 0.1, "per": 1000000}]},
    {"id": "test/speech", "task": "text-to-speech", "service": "audio",
     "prices": [{"unit": "characters", "unit_price": 0.000015}]},
    {"id": "test/stt", "task": "speech-to-text", "service": "audio",
     "prices": [{"unit": "audio_seconds", "unit_price": 0.0001}]},
    {"id": "test/video", "task": "text-to-video", "service": "videogen",
     "prices": [{"unit": "video_seconds", "unit_price": 0.01}]},
    {"id": "test/pricey", "task": "echo", "service": "echo",
     "prices": [{"unit": "requests", "unit_price": 10.0}]},
]}


# --- harness ------------------------------------------------------------------------------------

class Billing:
    """One billing component serving on a fixed port; stop() and start() restart it in place."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0
        self.component: BillingComponent | None = None
        self.server: grpc.aio.Server | None = None

    async def start(self) -> None:
        self.component = BillingComponent(self.settings, ack_wait_s=1.0, batch_size=128)
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        self.component.register(self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.component.start(self.port)
        await self.server.start()

    async def stop(self) -> None:
        assert self.component is not None and self.server is not None
        await self.server.stop(0)
        await self.component.stop()
        self.component = self.server = None


class Env:
    def __init__(self, billing: Billing, pool: asyncpg.Pool, js: Any, nc: Any,
                 stub: billing_pb2_grpc.BillingStub, catalog: Catalog) -> None:
        self.billing, self.pool, self.js, self.nc, self.stub = billing, pool, js, nc, stub
        self.catalog = catalog

    async def publish(self, recs: list[billing_pb2.UsageRecord], *, msg_id_suffix: str = "") -> list[Any]:
        """As the router does: one message per record, Nats-Msg-Id = request id."""
        acks = []
        for lo in range(0, len(recs), 100):
            acks += await asyncio.gather(*(self.js.publish(
                bus.usage_subject(rec.model_id), rec.SerializeToString(),
                headers={"Nats-Msg-Id": rec.request_id + msg_id_suffix}) for rec in recs[lo:lo + 100]))
        return acks

    async def count(self, model_id: str) -> int:
        return await self.pool.fetchval("SELECT count(*) FROM ledger WHERE model_id=$1", model_id)

    async def new_key(self, scope: int = billing_pb2.API_KEY_SCOPE_USER, **limits: float
                      ) -> tuple[str, str]:
        """(key id, secret) of a fresh key."""
        resp = await self.stub.CreateApiKey(billing_pb2.CreateApiKeyRequest(
            name="test", scope=scope, **limits), metadata=auth(ADMIN_SECRET))
        return resp.key.id, resp.secret


def auth(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


ADMIN = auth(ADMIN_SECRET)


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 15.0) -> T:
    """Polls `check` until it returns something truthy; fails at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        await asyncio.sleep(0.02)


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def usage_record(request_id: str, model_id: str, key_id: str, items: dict[str, float], *,
                 finished: dt.datetime | None = None, status: int = COMPLETED, queue_s: float = 0.1,
                 run_s: float = 0.5, error: str = "", machine_type: str = "") -> billing_pb2.UsageRecord:
    finished = finished or dt.datetime.now(UTC)
    started = finished - dt.timedelta(seconds=run_s)
    return record(request_id=request_id, model_id=model_id, api_key_id=key_id, status=status,
                  usage=common_pb2.Usage(items=[common_pb2.UsageItem(unit=u, quantity=q)
                                                for u, q in items.items()]),
                  error=error, error_type="internal_error" if error else "",
                  created_at=started - dt.timedelta(seconds=queue_s), started_at=started,
                  finished_at=finished, queue_time_s=queue_s, run_time_s=run_s, mode="queue",
                  machine_type=machine_type)


def ts(value: dt.datetime) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    out = Timestamp()
    out.FromDatetime(value)
    return out


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def error_field(err: grpc.aio.AioRpcError) -> str | None:
    return dict(err.trailing_metadata() or ()).get(FIELD_KEY)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(infra: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("billing")
    catalog_path = tmp / "catalog.yaml"
    catalog_path.write_text(yaml.safe_dump(CATALOG))
    database_url = await infra.new_database()
    settings = Settings(nats_url=infra.nats_url, database_url=database_url, api_key=ADMIN_SECRET,
                        catalog_path=catalog_path, data_dir=tmp, port=0)
    billing = Billing(settings)
    await billing.start()
    pool = await db.connect(database_url, max_size=4)
    nc = await nats.connect(infra.nats_url)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{billing.port}")
    try:
        yield Env(billing, pool, nc.jetstream(), nc, billing_pb2_grpc.BillingStub(channel),
                  Catalog.load(catalog_path))
    finally:
        await channel.close()
        if billing.component is not None:
            await billing.stop()
        await nc.close()
        await pool.close()


# --- the ledger ---------------------------------------------------------------------------------

def megapixels_of(i: int) -> float:
    return 0.25 + (i % 7) * 0.5


async def test_thousand_records_with_restart_redelivery_and_a_price_change_are_written_exactly_once(
        env: Env) -> None:
    model, key, run = "test/ledger-image", "key_ledger_" + uuid.uuid4().hex[:6], uuid.uuid4().hex[:8]
    rid = [f"ledger-{run}-{i:04d}" for i in range(1000)]

    def recs(lo: int, hi: int) -> list[billing_pb2.UsageRecord]:
        return [usage_record(rid[i], model, key, {"megapixels": megapixels_of(i)}) for i in range(lo, hi)]

    written_before = metric("genmesh_billing_records_written_total")
    duplicates_before = metric("genmesh_billing_duplicates_skipped_total")

    # 500 records at the catalog price; 50 re-published later under new message ids (past
    # JetStream's duplicate window: billing must catch them) and 20 under the same ids.
    first = recs(0, 500)
    await env.publish(first)
    await env.publish(first[:50], msg_id_suffix="-republished")
    assert all(ack.duplicate for ack in await env.publish(first[50:70]))
    await eventually(lambda: _equals(env.count(model), 500))

    changed = await env.stub.SetPrice(billing_pb2.SetPriceRequest(
        model_id=model, price=router_pb2.Price(unit="megapixels", unit_price=0.002, per=1)),
        metadata=ADMIN)
    assert changed.price.price.unit_price == 0.002

    # Billing goes down; records keep arriving and wait in the stream.
    await env.billing.stop()
    await env.publish(recs(500, 800))
    # A billing instance takes 100 of them, commits them, and dies before acking.
    crashed = await env.js.pull_subscribe_bind(durable=DURABLE, stream=bus.USAGE_STREAM)
    taken = await crashed.fetch(100, timeout=5)
    assert len(taken) == 100
    writer = LedgerWriter(env.pool, PriceStore(env.pool, env.catalog))
    assert await writer.write([rec for m in taken for rec in decode(m.data, m.headers) or []]) == 100
    await crashed.unsubscribe()
    assert await env.count(model) == 600

    # Billing restarts: it catches up, NATS redelivers the 100 never acked, more arrive.
    await env.billing.start()
    await env.publish(recs(800, 1000))
    await env.publish(recs(600, 630), msg_id_suffix="-republished")

    async def settled() -> bool:
        info = await env.js.consumer_info(bus.USAGE_STREAM, DURABLE)
        return info.num_pending == 0 and info.num_ack_pending == 0 and await env.count(model) == 1000
    await eventually(settled)

    rows = await env.pool.fetch(
        "SELECT request_id, cost, usage, prices, status, api_key_id FROM ledger WHERE model_id=$1", model)
    assert len(rows) == 1000 and {r["request_id"] for r in rows} == set(rid)
    for row in rows:
        i = int(row["request_id"].rsplit("-", 1)[1])
        unit_price = 0.001 if i < 500 else 0.002  # the first 500 keep the price they were written at
        assert row["cost"] == pytest.approx(megapixels_of(i) * unit_price), row["request_id"]
        assert row["prices"][0]["unit_price"] == unit_price
        assert row["usage"] == [{"unit": "megapixels", "quantity": megapixels_of(i)}]
        assert (row["status"], row["api_key_id"]) == ("COMPLETED", key)
    # The router's budget check reads exactly this sum.
    spent = await env.pool.fetchval("SELECT SUM(cost) FROM ledger WHERE api_key_id=$1", key)
    assert spent == pytest.approx(sum(megapixels_of(i) * (0.001 if i < 500 else 0.002)
                                      for i in range(1000)))
    # 900 written by billing itself (100 by the crashed instance); the 50 + 30 re-published and
    # the 100 redelivered were skipped.
    assert metric("genmesh_billing_records_written_total") - written_before == 900
    assert metric("genmesh_billing_duplicates_skipped_total") - duplicates_before >= 180


async def _equals(value: Awaitable[T], expected: T) -> bool:
    return await value == expected


async def test_bad_messages_are_set_aside_without_blocking_the_records_behind_them(env: Env) -> None:
    key = "key_bad_" + uuid.uuid4().hex[:6]
    invalid_before = metric("genmesh_billing_invalid_records_total")
    unpriced_before = REGISTRY.get_sample_value("genmesh_billing_unpriced_items_total",
                                                {"unit": "frames"}) or 0.0
    await env.js.publish("genmesh.usage.test", b"\xff\x00 not a usage record")
    good = [
        usage_record(f"bad-{key}-ok", "test/image", key, {"megapixels": 1.0}),
        usage_record(f"bad-{key}-failed", "test/image", key, {"megapixels": 1.0}, status=FAILED,
                     error="worker crashed"),
        usage_record(f"bad-{key}-unpriced", "test/image", key, {"megapixels": 1.0, "frames": 8}),
        usage_record(f"bad-{key}-alias", "test-alias", key, {"output_tokens": 1_000_000}),
        usage_record(f"bad-{key}-app", "someone/app/generate", key, {}, run_s=10.0,
                     machine_type="GPU-A100"),
    ]
    far_future = usage_record(f"bad-{key}-future", "test/image", key, {"megapixels": 1.0})
    far_future.finished_at.seconds = 10**12  # beyond year 9999: billing uses its receipt time
    overflowing = usage_record(f"bad-{key}-overflow", "test/pricey", key, {"requests": 1e308})
    await env.publish([*good, far_future, overflowing])
    rows = await eventually(lambda: _rows_when(env.pool, key, 6))
    costs = {r["request_id"].rsplit("-", 1)[1]: r["cost"] for r in rows}
    assert costs["ok"] == pytest.approx(0.002)
    assert costs["failed"] == 0.0  # failed requests are not charged
    assert costs["unpriced"] == pytest.approx(0.002)  # the priced part still is
    assert costs["alias"] == pytest.approx(0.1)  # priced as the model the alias names
    assert costs["app"] == pytest.approx(10.0 * DEFAULT_MACHINE_PRICES["GPU-A100"])
    assert costs["future"] == pytest.approx(0.002)
    # A cost that overflows cannot be stored: that record alone is set aside.
    await eventually(lambda: _equals(_metric_now("genmesh_billing_invalid_records_total"),
                                     invalid_before + 2))
    assert "overflow" not in costs
    assert (REGISTRY.get_sample_value("genmesh_billing_unpriced_items_total", {"unit": "frames"})
            - unpriced_before) == 1


async def test_batched_records_are_written_once_and_a_bad_one_is_set_aside_alone(env: Env) -> None:
    """As a busy router publishes: several records in one UsageBatch message; the same batch
    again under another message id (a router finishing another's jobs) changes nothing."""
    key = "key_batch_" + uuid.uuid4().hex[:6]
    invalid_before = metric("genmesh_billing_invalid_records_total")
    good = [usage_record(f"batch-{key}-{i}", "test/image", key, {"megapixels": 1.0}) for i in range(5)]
    overflowing = usage_record(f"batch-{key}-overflow", "test/pricey", key, {"requests": 1e308})
    nameless = billing_pb2.UsageRecord(model_id="test/image")  # no request id: unusable
    data = billing_pb2.UsageBatch(records=[*good[:3], overflowing, nameless, *good[3:]]).SerializeToString()
    for msg_id in ("b1", "b1", "b2"):
        await env.js.publish(bus.usage_batch_subject("test"), data,
                             headers={"Nats-Msg-Id": f"{key}-{msg_id}", bus.USAGE_BATCH_HEADER: "batch"})

    async def settled() -> bool:
        info = await env.js.consumer_info(bus.USAGE_STREAM, DURABLE)
        return info.num_pending == 0 and info.num_ack_pending == 0 and \
            await env.pool.fetchval("SELECT count(*) FROM ledger WHERE api_key_id=$1", key) == 5
    await eventually(settled)
    rows = await env.pool.fetch("SELECT request_id, cost FROM ledger WHERE api_key_id=$1", key)
    assert sorted(r["request_id"] for r in rows) == sorted(r.request_id for r in good)
    assert all(r["cost"] == pytest.approx(0.002) for r in rows)
    # The nameless record in each of the two delivered copies, and the overflowing one (once
    # per copy: the second copy's is refused again), are counted; nothing else is lost.
    assert metric("genmesh_billing_invalid_records_total") - invalid_before >= 3


async def _metric_now(name: str) -> float:
    return metric(name)


async def _rows_when(pool: asyncpg.Pool, key: str, n: int) -> list[asyncpg.Record] | None:
    rows = await pool.fetch("SELECT * FROM ledger WHERE api_key_id=$1", key)
    return rows if len(rows) == n else None


# --- prices -------------------------------------------------------------------------------------

async def test_catalog_prices_are_seeded_and_an_admin_price_survives_a_restart(env: Env) -> None:
    listed = await env.stub.ListPrices(billing_pb2.ListPricesRequest(model_ids=["test/chat"]),
                                       metadata=ADMIN)
    assert [(p.price.unit, p.price.unit_price, p.price.per) for p in listed.prices] == [
        ("input_tokens", 0.05, 1e6), ("output_tokens", 0.1, 1e6)]
    assert all(p.effective_from.ToDatetime(tzinfo=UTC) == BEGINNING for p in listed.prices)
    machines = await env.stub.ListPrices(billing_pb2.ListPricesRequest(), metadata=ADMIN)
    assert {(p.machine_type, p.price.unit_price) for p in machines.prices if not p.model_id} == set(
        DEFAULT_MACHINE_PRICES.items())

    await env.stub.SetPrice(billing_pb2.SetPriceRequest(
        model_id="test/speech", price=router_pb2.Price(unit="characters", unit_price=0.00003)),
        metadata=ADMIN)
    await env.billing.stop()
    await env.billing.start()  # re-seeds from the catalog

    current = await env.stub.ListPrices(billing_pb2.ListPricesRequest(model_ids=["test/speech"]),
                                        metadata=ADMIN)
    assert [p.price.unit_price for p in current.prices] == [0.00003]
    history = await env.stub.ListPrices(billing_pb2.ListPricesRequest(
        model_ids=["test/speech"], include_history=True), metadata=ADMIN)
    assert [p.price.unit_price for p in history.prices] == [0.000015, 0.00003]


async def test_set_price_is_for_admins_and_names_the_bad_field(env: Env) -> None:
    _, user = await env.new_key()
    request = billing_pb2.SetPriceRequest(model_id="test/video",
                                          price=router_pb2.Price(unit="video_seconds", unit_price=1))
    denied = await rpc_error(env.stub.SetPrice(request, metadata=auth(user)))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    for bad, field in [
        (billing_pb2.SetPriceRequest(model_id="test/video", price=router_pb2.Price(
            unit="frames", unit_price=1)),
         "price.unit"),
        (billing_pb2.SetPriceRequest(model_id="test/video", price=router_pb2.Price(
            unit="video_seconds", unit_price=-1)), "price.unit_price"),
        (billing_pb2.SetPriceRequest(price=router_pb2.Price(unit="video_seconds", unit_price=1)),
         "model_id"),
    ]:
        err = await rpc_error(env.stub.SetPrice(bad, metadata=ADMIN))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        if field:
            assert error_field(err) == field
    # A model's units share one currency: pricing one of its two units in EUR is refused.
    chat = billing_pb2.SetPriceRequest(model_id="test/chat", price=router_pb2.Price(
        unit="input_tokens", unit_price=0.05, per=1e6, currency="EUR"))
    err = await rpc_error(env.stub.SetPrice(chat, metadata=ADMIN))
    assert error_field(err) == "price.currency"


# --- queries ------------------------------------------------------------------------------------

async def test_usage_series_buckets_by_hour_and_day_by_model_and_key(env: Env) -> None:
    key, secret = await env.new_key()
    day = dt.datetime(2024, 3, 1, tzinfo=UTC)

    def at(hours: int, minutes: int) -> dt.datetime:
        return day + dt.timedelta(hours=hours, minutes=minutes)
    await env.publish([
        usage_record(f"u-{key}-1", "test/chat", key, {"input_tokens": 1000, "output_tokens": 200},
                     finished=at(10, 5)),
        usage_record(f"u-{key}-2", "test/chat", key, {"input_tokens": 3000, "output_tokens": 800},
                     finished=at(10, 40)),
        usage_record(f"u-{key}-3", "test/image", key, {"megapixels": 0.5}, finished=at(10, 59)),
        usage_record(f"u-{key}-4", "test/image", key, {"megapixels": 2.0}, finished=at(11, 15)),
        usage_record(f"u-{key}-5", "test/image", key, {"megapixels": 1.0}, finished=at(33, 0)),
        usage_record(f"u-{key}-6", "test/image", key, {"megapixels": 9.0}, finished=at(10, 30),
                     status=FAILED, error="boom"),
    ])
    await eventually(lambda: _rows_when(env.pool, key, 6))
    window = dict(start=ts(day), end=ts(day + dt.timedelta(days=2)))

    hourly = await env.stub.GetUsage(billing_pb2.GetUsageRequest(
        bucket_size=billing_pb2.BUCKET_SIZE_HOUR, **window), metadata=auth(secret))
    got = {(b.bucket.ToDatetime(tzinfo=UTC), line.model_id, line.unit):
           (line.quantity, line.cost, line.requests) for b in hourly.buckets for line in b.lines}
    assert got == {
        (at(10, 0), "test/chat", "input_tokens"): (4000, pytest.approx(4000 * 0.05 / 1e6), 2),
        (at(10, 0), "test/chat", "output_tokens"): (1000, pytest.approx(1000 * 0.1 / 1e6), 2),
        (at(10, 0), "test/image", "megapixels"): (0.5, pytest.approx(0.001), 1),  # failed one: not billed
        (at(11, 0), "test/image", "megapixels"): (2.0, pytest.approx(0.004), 1),
        (at(33, 0), "test/image", "megapixels"): (1.0, pytest.approx(0.002), 1),
    }
    assert all(line.api_key_id == key and line.currency == "USD" for b in hourly.buckets for line in b.lines)
    assert hourly.total_cost == pytest.approx(4000 * 0.05 / 1e6 + 1000 * 0.1 / 1e6 + 0.007)

    daily = await env.stub.GetUsage(billing_pb2.GetUsageRequest(
        bucket_size=billing_pb2.BUCKET_SIZE_DAY, model_ids=["test/image"], **window), metadata=auth(secret))
    assert [(b.bucket.ToDatetime(tzinfo=UTC), [(line.quantity, line.requests) for line in b.lines])
            for b in daily.buckets] == [(day, [(2.5, 2)]), (day + dt.timedelta(days=1), [(1.0, 1)])]

    as_admin = await env.stub.GetUsage(billing_pb2.GetUsageRequest(
        bucket_size=billing_pb2.BUCKET_SIZE_HOUR, api_key_id=key, **window), metadata=ADMIN)
    assert as_admin == hourly

    bad = await rpc_error(env.stub.GetUsage(billing_pb2.GetUsageRequest(
        start=ts(day), end=ts(day)), metadata=auth(secret)))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and error_field(bad) == "start"


async def test_estimate_multiplies_planned_quantities_by_current_prices(env: Env) -> None:
    _, secret = await env.new_key()
    resp = await env.stub.EstimateCost(billing_pb2.EstimateCostRequest(planned=[
        billing_pb2.PlannedUsage(model_id="test/chat", calls=10, items=[
            common_pb2.UsageItem(unit="input_tokens", quantity=1000),
            common_pb2.UsageItem(unit="output_tokens", quantity=500)]),
        billing_pb2.PlannedUsage(model_id="test/image", items=[
            common_pb2.UsageItem(unit="megapixels", quantity=1.0)]),
        billing_pb2.PlannedUsage(model_id="someone/app", machine_type="GPU-H100", items=[
            common_pb2.UsageItem(unit="runner_seconds", quantity=60)]),
    ]), metadata=auth(secret))
    chat = 10 * (1000 * 0.05 + 500 * 0.1) / 1e6
    app = 60 * DEFAULT_MACHINE_PRICES["GPU-H100"]
    assert resp.total_cost == pytest.approx(chat + 0.002 + app)
    assert [(line.model_id, line.unit, line.quantity, line.requests) for line in resp.lines] == [
        ("test/chat", "input_tokens", 10000, 10), ("test/chat", "output_tokens", 5000, 10),
        ("test/image", "megapixels", 1.0, 1), ("someone/app", "runner_seconds", 60, 1)]
    assert resp.currency == "USD"

    unpriced = await rpc_error(env.stub.EstimateCost(billing_pb2.EstimateCostRequest(planned=[
        billing_pb2.PlannedUsage(model_id="test/chat", items=[
            common_pb2.UsageItem(unit="megapixels", quantity=1)])]), metadata=auth(secret)))
    assert unpriced.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_field(unpriced) == "planned[0].items[0].unit"
    unknown = await rpc_error(env.stub.EstimateCost(billing_pb2.EstimateCostRequest(planned=[
        billing_pb2.PlannedUsage(model_id="nobody/nothing")]), metadata=auth(secret)))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


async def test_request_logs_page_newest_first_with_an_opaque_cursor(env: Env) -> None:
    key, secret = await env.new_key()
    base = dt.datetime.now(UTC) - dt.timedelta(hours=1)
    recs = [usage_record(f"log-{key}-{i:02d}", "test/speech", key, {"characters": 100 + i},
                         finished=base + dt.timedelta(seconds=i // 2),  # pairs share finished_at
                         status=FAILED if i % 5 == 0 else COMPLETED,
                         error="boom" if i % 5 == 0 else "", queue_s=0.25, run_s=1.5)
            for i in range(23)]
    await env.publish(recs)
    await eventually(lambda: _rows_when(env.pool, key, 23))
    expected = [r.request_id for r in sorted(
        recs, key=lambda r: (r.finished_at.ToNanoseconds(), r.request_id), reverse=True)]

    pages, cursor = [], ""
    while True:
        page = await env.stub.ListRequestLogs(billing_pb2.ListRequestLogsRequest(
            page_size=5, cursor=cursor), metadata=auth(secret))
        pages.append(page)
        if not page.has_more:
            assert page.next_cursor == ""
            break
        cursor = page.next_cursor
    assert [len(p.logs) for p in pages] == [5, 5, 5, 5, 3]
    assert [log.request_id for p in pages for log in p.logs] == expected

    newest = pages[0].logs[0]
    assert (newest.request_id, newest.model_id, newest.api_key_id) == (f"log-{key}-22", "test/speech", key)
    assert (newest.status, newest.queue_time_seconds, newest.run_time_seconds) == (COMPLETED, 0.25, 1.5)
    assert newest.cost == pytest.approx(122 * 0.000015)
    assert [(i.unit, i.quantity) for i in newest.usage.items] == [("characters", 122)]
    assert newest.mode == "queue" and newest.finished_at.ToDatetime(tzinfo=UTC) > base

    failed = await env.stub.ListRequestLogs(billing_pb2.ListRequestLogsRequest(
        status=FAILED, model_ids=["test/speech"]), metadata=auth(secret))
    assert sorted(log.request_id for log in failed.logs) == [
        f"log-{key}-{i:02d}" for i in (0, 5, 10, 15, 20)]
    assert all((log.error, log.error_type, log.cost) == ("boom", "internal_error", 0)
               for log in failed.logs)

    windowed = await env.stub.ListRequestLogs(billing_pb2.ListRequestLogsRequest(
        start=ts(base + dt.timedelta(seconds=10)), end=ts(base + dt.timedelta(seconds=11))),
        metadata=auth(secret))
    assert [log.request_id for log in windowed.logs] == [f"log-{key}-21", f"log-{key}-20"]

    for bad, field in [(billing_pb2.ListRequestLogsRequest(page_size=1001), "page_size"),
                       (billing_pb2.ListRequestLogsRequest(cursor="not a cursor!"), "cursor")]:
        err = await rpc_error(env.stub.ListRequestLogs(bad, metadata=auth(secret)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and error_field(err) == field


async def test_model_metrics_report_latency_percentiles_error_rate_and_throughput(env: Env) -> None:
    key, secret = await env.new_key()
    start = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(minutes=30)
    # Completed latencies 1..100 s (queue 0.5 + run), and 25 failures, over a 125 s window.
    recs = [usage_record(f"m-{key}-{i}", "test/video", key, {"video_seconds": 1},
                         finished=start + dt.timedelta(seconds=i), queue_s=0.5, run_s=i + 0.5)
            for i in range(100)]
    recs += [usage_record(f"m-{key}-f{i}", "test/video", key, {}, status=FAILED, error="x",
                          finished=start + dt.timedelta(seconds=100 + i), run_s=0.01)
             for i in range(25)]
    await env.publish(recs)
    await eventually(lambda: _rows_when(env.pool, key, 125))

    resp = await env.stub.GetModelMetrics(billing_pb2.GetModelMetricsRequest(
        start=ts(start), end=ts(start + dt.timedelta(seconds=125))), metadata=auth(secret))
    [m] = resp.metrics
    assert (m.model_id, m.requests, m.errors) == ("test/video", 125, 25)
    assert m.error_rate == pytest.approx(0.2)
    assert m.p50_latency_seconds == pytest.approx(50.5)
    assert m.p95_latency_seconds == pytest.approx(95.05)
    assert m.p99_latency_seconds == pytest.approx(99.01)
    assert m.throughput_per_second == pytest.approx(1.0)


# --- keys and isolation -------------------------------------------------------------------------

async def test_a_user_key_reads_only_its_own_usage_logs_metrics_and_spend(env: Env) -> None:
    a, a_secret = await env.new_key()
    b, _ = await env.new_key()
    now = dt.datetime.now(UTC)
    await env.publish([
        usage_record(f"iso-{a}-1", "test/stt", a, {"audio_seconds": 10}, finished=now),
        usage_record(f"iso-{b}-1", "test/stt", b, {"audio_seconds": 20}, finished=now),
        usage_record(f"iso-{b}-2", "test/stt", b, {"audio_seconds": 30}, finished=now),
    ])
    await eventually(lambda: _rows_when(env.pool, b, 2))
    await eventually(lambda: _rows_when(env.pool, a, 1))
    window = dict(start=ts(now - dt.timedelta(minutes=1)), end=ts(now + dt.timedelta(minutes=1)))
    as_a = auth(a_secret)

    usage = await env.stub.GetUsage(billing_pb2.GetUsageRequest(
        bucket_size=billing_pb2.BUCKET_SIZE_HOUR, **window), metadata=as_a)
    assert {line.api_key_id for bk in usage.buckets for line in bk.lines} == {a}
    assert usage.total_cost == pytest.approx(10 * 0.0001)
    logs = await env.stub.ListRequestLogs(billing_pb2.ListRequestLogsRequest(**window), metadata=as_a)
    assert [log.request_id for log in logs.logs] == [f"iso-{a}-1"]
    metrics = await env.stub.GetModelMetrics(billing_pb2.GetModelMetricsRequest(
        model_ids=["test/stt"], **window), metadata=as_a)
    assert [m.requests for m in metrics.metrics] == [1]
    me = await env.stub.Authenticate(billing_pb2.AuthenticateRequest(secret=a_secret))
    assert (me.key.id, me.key.spent) == (a, pytest.approx(10 * 0.0001))

    # Naming another key is refused, not silently narrowed.
    for call in (env.stub.GetUsage(billing_pb2.GetUsageRequest(api_key_id=b, **window), metadata=as_a),
                 env.stub.ListRequestLogs(billing_pb2.ListRequestLogsRequest(api_key_id=b), metadata=as_a),
                 env.stub.GetModelMetrics(billing_pb2.GetModelMetricsRequest(api_key_id=b, **window),
                                          metadata=as_a),
                 env.stub.ListApiKeys(billing_pb2.ListApiKeysRequest(), metadata=as_a),
                 env.stub.CreateApiKey(billing_pb2.CreateApiKeyRequest(name="x"), metadata=as_a),
                 env.stub.RevokeApiKey(billing_pb2.RevokeApiKeyRequest(id=b), metadata=as_a)):
        assert (await rpc_error(call)).code() == grpc.StatusCode.PERMISSION_DENIED

    # An admin sees both, or one when it asks.
    both = await env.stub.ListRequestLogs(billing_pb2.ListRequestLogsRequest(
        model_ids=["test/stt"], **window), metadata=ADMIN)
    assert {log.api_key_id for log in both.logs} >= {a, b}
    only_b = await env.stub.ListRequestLogs(billing_pb2.ListRequestLogsRequest(api_key_id=b, **window),
                                            metadata=ADMIN)
    assert sorted(log.request_id for log in only_b.logs) == [f"iso-{b}-1", f"iso-{b}-2"]
    listed = {k.id: k.spent for k in (await env.stub.ListApiKeys(
        billing_pb2.ListApiKeysRequest(), metadata=ADMIN)).keys}
    assert listed[a] == pytest.approx(0.001) and listed[b] == pytest.approx(0.005)


async def test_keys_are_created_listed_and_revoked_and_a_revoked_key_fails_at_once(env: Env) -> None:
    created = await env.stub.CreateApiKey(billing_pb2.CreateApiKeyRequest(
        name="ci", scope=billing_pb2.API_KEY_SCOPE_USER, spend_limit=5.0, rate_limit_per_minute=60),
        metadata=ADMIN)
    key, secret = created.key, created.secret
    assert secret.startswith("gm_") and key.prefix == secret[:8]
    assert (key.name, key.scope, key.spend_limit, key.rate_limit_per_minute) == (
        "ci", billing_pb2.API_KEY_SCOPE_USER, 5.0, 60)
    stored = await env.pool.fetchval("SELECT secret_hash FROM api_keys WHERE id=$1", key.id)
    assert stored != secret and secret not in str(await env.pool.fetch("SELECT * FROM api_keys"))

    listed = await env.stub.ListApiKeys(billing_pb2.ListApiKeysRequest(), metadata=ADMIN)
    assert key.id in {k.id for k in listed.keys}
    assert any(k.scope == billing_pb2.API_KEY_SCOPE_ADMIN for k in listed.keys)  # the bootstrap key
    who = await env.stub.Authenticate(billing_pb2.AuthenticateRequest(secret=secret))
    assert (who.key.id, who.key.spend_limit, who.key.HasField("revoked_at")) == (key.id, 5.0, False)

    revocations = await env.nc.subscribe(bus.KEY_REVOKED_SUBJECT)
    await env.nc.flush()
    revoked = await env.stub.RevokeApiKey(billing_pb2.RevokeApiKeyRequest(id=key.id), metadata=ADMIN)
    revoked_at = time.monotonic()
    assert revoked.key.HasField("revoked_at")
    assert (await revocations.next_msg(timeout=5)).data.decode() == key.id
    await revocations.unsubscribe()

    async def refused() -> bool:
        try:
            await env.stub.Authenticate(billing_pb2.AuthenticateRequest(secret=secret))
        except grpc.aio.AioRpcError as exc:
            return exc.code() == grpc.StatusCode.UNAUTHENTICATED
        return False
    await eventually(refused, timeout=1.0)
    assert time.monotonic() - revoked_at < 1.0
    err = await rpc_error(env.stub.ListRequestLogs(billing_pb2.ListRequestLogsRequest(),
                                                   metadata=auth(secret)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED

    again = await env.stub.RevokeApiKey(billing_pb2.RevokeApiKeyRequest(id=key.id), metadata=ADMIN)
    assert again.key.revoked_at == revoked.key.revoked_at  # idempotent
    missing = await rpc_error(env.stub.RevokeApiKey(billing_pb2.RevokeApiKeyRequest(id="key_nope"),
                                                    metadata=ADMIN))
    assert missing.code() == grpc.StatusCode.NOT_FOUND

    admin_key = await env.stub.CreateApiKey(billing_pb2.CreateApiKeyRequest(
        name="ops", scope=billing_pb2.API_KEY_SCOPE_ADMIN), metadata=ADMIN)
    assert (await env.stub.ListApiKeys(billing_pb2.ListApiKeysRequest(),
                                       metadata=auth(admin_key.secret))).keys
    bad = await rpc_error(env.stub.CreateApiKey(billing_pb2.CreateApiKeyRequest(spend_limit=-1),
                                                metadata=ADMIN))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and error_field(bad) == "spend_limit"


async def test_calls_without_a_valid_key_are_unauthenticated(env: Env) -> None:
    request = billing_pb2.ListPricesRequest()
    for metadata in ((), auth("gm_not_a_key"), (("authorization", "Basic abc"),)):
        err = await rpc_error(env.stub.ListPrices(request, metadata=metadata))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    err = await rpc_error(env.stub.Authenticate(billing_pb2.AuthenticateRequest(secret="")))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
