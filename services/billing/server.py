"""Billing's gRPC surface and lifecycle: the Billing service, the ledger consumer, price seeding.

Servicers only authenticate the caller and delegate: to queries.py (usage, estimates, logs,
metrics, prices) and keys_api.py (API keys). The ledger consumer runs beside them.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import grpc

from genmesh import bus, db, keys
from genmesh.catalog import Catalog
from genmesh.rpc import servicer_errors
from genmesh.settings import Settings
from genmesh.v1 import billing_pb2, billing_pb2_grpc
from genmesh.services.billing.keys_api import KeysApi
from genmesh.services.billing.ledger import Ledger, LedgerWriter
from genmesh.services.billing.prices import PriceStore
from genmesh.services.billing.queries import Queries

log = logging.getLogger("genmesh.billing")
ACK_WAIT_S = 30.0
BATCH_SIZE = 256


class BillingServicer(billing_pb2_grpc.BillingServicer):
    def __init__(self, component: "BillingComponent") -> None:
        self.c = component

    @servicer_errors
    async def GetUsage(self, request: billing_pb2.GetUsageRequest,
                       context: grpc.aio.ServicerContext) -> billing_pb2.GetUsageResponse:
        return await self.c.queries.usage(await self.c.keys.caller(context), request)

    @servicer_errors
    async def EstimateCost(self, request: billing_pb2.EstimateCostRequest,
                           context: grpc.aio.ServicerContext) -> billing_pb2.EstimateCostResponse:
        await self.c.keys.caller(context)
        return await self.c.queries.estimate(request)

    @servicer_errors
    async def ListRequestLogs(self, request: billing_pb2.ListRequestLogsRequest,
                              context: grpc.aio.ServicerContext) -> billing_pb2.ListRequestLogsResponse:
        return await self.c.queries.logs(await self.c.keys.caller(context), request)

    @servicer_errors
    async def GetModelMetrics(self, request: billing_pb2.GetModelMetricsRequest,
                              context: grpc.aio.ServicerContext) -> billing_pb2.GetModelMetricsResponse:
        return await self.c.queries.model_metrics(await self.c.keys.caller(context), request)

    @servicer_errors
    async def ListPrices(self, request: billing_pb2.ListPricesRequest,
                         context: grpc.aio.ServicerContext) -> billing_pb2.ListPricesResponse:
        await self.c.keys.caller(context)
        return await self.c.queries.list_prices(request)

    @servicer_errors
    async def SetPrice(self, request: billing_pb2.SetPriceRequest,
                       context: grpc.aio.ServicerContext) -> billing_pb2.SetPriceResponse:
        return await self.c.queries.set_price(await self.c.keys.caller(context), request)

    @servicer_errors
    async def CreateApiKey(self, request: billing_pb2.CreateApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> billing_pb2.CreateApiKeyResponse:
        return await self.c.keys.create(await self.c.keys.caller(context), request)

    @servicer_errors
    async def ListApiKeys(self, request: billing_pb2.ListApiKeysRequest,
                          context: grpc.aio.ServicerContext) -> billing_pb2.ListApiKeysResponse:
        return await self.c.keys.list(await self.c.keys.caller(context))

    @servicer_errors
    async def RevokeApiKey(self, request: billing_pb2.RevokeApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> billing_pb2.RevokeApiKeyResponse:
        return await self.c.keys.revoke(await self.c.keys.caller(context), request.id)

    @servicer_errors
    async def Authenticate(self, request: billing_pb2.AuthenticateRequest,
                           context: grpc.aio.ServicerContext) -> billing_pb2.AuthenticateResponse:
        # The presented secret is the credential: the edge calls this before it knows anything.
        if request.key_id and not request.secret:
            return await self.c.keys.authenticate_id(request.key_id)
        return await self.c.keys.authenticate(request.secret)


class BillingComponent:
    service_names = ["genmesh.v1.Billing"]

    def __init__(self, settings: Settings, *, ack_wait_s: float = ACK_WAIT_S,
                 batch_size: int = BATCH_SIZE) -> None:
        self.settings = settings
        self.ack_wait_s = ack_wait_s
        self.batch_size = batch_size
        self.catalog = Catalog.load(settings.catalog_path)
        self.pool: Any = None
        self.nc: Any = None
        self.prices: PriceStore
        self.keys: KeysApi
        self.queries: Queries
        self.ledger: Ledger | None = None

    def register(self, server: grpc.aio.Server) -> None:
        billing_pb2_grpc.add_BillingServicer_to_server(BillingServicer(self), server)

    async def start(self, port: int = 0) -> None:
        s = self.settings
        if not s.nats_url or not s.database_url:
            raise RuntimeError("billing needs GENMESH_NATS_URL and GENMESH_DATABASE_URL "
                               "(`genmesh up` sets both)")
        self.pool = await db.connect(s.database_url)
        await db.migrate(self.pool)
        if s.api_key:
            await keys.ensure_bootstrap_key(self.pool, s.api_key)
        self.prices = PriceStore(self.pool, self.catalog)
        await self.prices.seed()
        self.nc = await bus.connect(s.nats_url, f"billing-{uuid.uuid4().hex[:8]}")
        js = self.nc.jetstream()
        await bus.ensure_streams(js)
        self.keys = KeysApi(self.pool, self.nc)
        self.queries = Queries(self.pool, self.prices)
        self.ledger = Ledger(js, LedgerWriter(self.pool, self.prices), batch_size=self.batch_size,
                             ack_wait_s=self.ack_wait_s)
        await self.ledger.start()
        log.info("billing started", extra={"port": port})

    async def drain(self) -> None:
        # The batch in hand is written and acked; whatever follows waits in the stream.
        if self.ledger is not None:
            await self.ledger.stop()

    async def stop(self) -> None:
        await self.drain()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.drain()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), 5)
