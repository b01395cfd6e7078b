"""The platform API: FAL's pricing, usage and pricing estimate, and genmesh's REST for request logs,
cost estimates, metrics, prices and API keys, each mapping 1:1 onto a billing.proto RPC.

Pricing falls back to the router's catalog when billing is not running; everything else answers
503 naming the missing service.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Query, Request
from google.protobuf.timestamp_pb2 import Timestamp

from genmesh import jsonpb
from genmesh.errors import InvalidArgument, Unavailable
from genmesh.v1 import billing_pb2, common_pb2, router_pb2
from genmesh.services.edge.auth import authorization
from genmesh.services.edge.platform_protocol import (CostEstimateRequest, FalEstimateRequest,
                                                     KeyCreateRequest, PriceSetRequest)
from genmesh.services.edge.responses import JSON

router = APIRouter(tags=["platform"])
BILLING_TIMEOUT_S = 15.0
BILLING_DOWN = ("billing is not running: usage, request logs, metrics, cost estimates and API keys "
                "are answered by the billing service (start it, or check GENMESH_BILLING_ADDR)")
SCOPES = {"user": billing_pb2.API_KEY_SCOPE_USER, "deploy": billing_pb2.API_KEY_SCOPE_DEPLOY,
          "admin": billing_pb2.API_KEY_SCOPE_ADMIN}
SCOPE_NAMES = {v: k for k, v in SCOPES.items()}
STATUSES = {"IN_QUEUE": common_pb2.JOB_STATUS_IN_QUEUE, "IN_PROGRESS": common_pb2.JOB_STATUS_IN_PROGRESS,
            "COMPLETED": common_pb2.JOB_STATUS_COMPLETED, "FAILED": common_pb2.JOB_STATUS_FAILED,
            "CANCELLED": common_pb2.JOB_STATUS_CANCELLED}


async def billing(request: Request, method_name: str, message: Any) -> Any:
    client = request.app.state.mesh
    try:
        return await client.unary(getattr(client.billing, method_name), message, authorization(request),
                                  timeout=BILLING_TIMEOUT_S)
    except Unavailable:
        raise Unavailable(BILLING_DOWN) from None


# What a Timestamp (and a datetime) can hold: years 1 through 9999.
MIN_UNIX_S = -62135596800.0
MAX_UNIX_S = 253402300799.0


def timestamp(value: str | None, field: str) -> Timestamp | None:
    """An ISO 8601 instant (naive = UTC) or unix seconds, as a Timestamp."""
    if not value:
        return None
    expected = f"must be an ISO 8601 time or unix seconds (years 1 to 9999), got {value[:64]!r}"
    try:
        seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is not None:
        # float() also reads 'inf', 'nan' and 1e20: none is an instant.
        if not MIN_UNIX_S <= seconds <= MAX_UNIX_S:
            raise InvalidArgument(expected, field=field)
        when = dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    else:
        try:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidArgument(expected, field=field) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    ts = Timestamp()
    try:
        ts.FromDatetime(when)  # an offset can carry year 1 or 9999 out of range
    except (OverflowError, ValueError):
        raise InvalidArgument(expected, field=field) from None
    return ts


def iso(ts: Timestamp) -> str | None:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime(tzinfo=dt.timezone.utc).isoformat()


def _window(msg: Any, start: str | None, end: str | None) -> None:
    for name, value in (("start", start), ("end", end)):
        ts = timestamp(value, name)
        if ts is not None:
            getattr(msg, name).CopyFrom(ts)


def price_json(model_id: str, price: router_pb2.Price) -> dict[str, Any]:
    return {"endpoint_id": model_id, "unit_price": price.unit_price, "unit": price.unit,
            "per": price.per or 1.0, "currency": price.currency or "USD"}


# --- FAL platform API -----------------------------------------------------------------------------

@router.get("/v1/models/pricing", summary="Current unit prices per endpoint (FAL's shape)")
async def pricing(request: Request, endpoint_id: list[str] = Query(default=[])) -> JSON:
    try:
        resp = await billing(request, "ListPrices", billing_pb2.ListPricesRequest(model_ids=endpoint_id))
        prices = [price_json(p.model_id, p.price) for p in resp.prices if p.model_id]
    except Unavailable:
        client = request.app.state.mesh
        listed = await client.unary(client.router.ListModels, router_pb2.ListModelsRequest(),
                                    authorization(request))
        prices = [price_json(m.id, p) for m in listed.models if not endpoint_id or m.id in endpoint_id
                  for p in m.prices]
    return JSON({"prices": prices, "next_cursor": None, "has_more": False})


@router.get("/v1/models/usage", summary="Billed usage per time bucket (FAL's shape)")
async def usage(request: Request, endpoint_id: list[str] = Query(default=[]), start: str | None = None,
                end: str | None = None, timeframe: str = Query("day", pattern="^(hour|day)$"),
                api_key_id: str = "") -> JSON:
    msg = billing_pb2.GetUsageRequest(
        model_ids=endpoint_id, api_key_id=api_key_id,
        bucket_size=billing_pb2.BUCKET_SIZE_HOUR if timeframe == "hour" else billing_pb2.BUCKET_SIZE_DAY)
    _window(msg, start, end)
    resp = await billing(request, "GetUsage", msg)
    series = [{"bucket": iso(b.bucket), "results": [
        {"endpoint_id": line.model_id, "unit": line.unit, "quantity": line.quantity,
         "unit_price": line.unit_price, "cost": line.cost, "currency": line.currency,
         "auth_method": line.api_key_id, "requests": line.requests} for line in b.lines]}
        for b in resp.buckets]
    return JSON({"time_series": series, "next_cursor": None, "has_more": False,
                 "total_cost": resp.total_cost, "currency": resp.currency or "USD"})


@router.post("/v1/models/pricing/estimate", summary="Estimate a cost from quantities (FAL's shape)")
async def fal_estimate(body: FalEstimateRequest, request: Request) -> JSON:
    msg = billing_pb2.EstimateCostRequest()
    units: dict[str, str] = {}
    if body.estimate_type == "unit_price":
        listed = await billing(request, "ListPrices", billing_pb2.ListPricesRequest(model_ids=list(body.endpoints)))
        for p in listed.prices:
            units.setdefault(p.model_id, p.price.unit)
    for endpoint, qty in body.endpoints.items():
        planned = msg.planned.add(model_id=endpoint, calls=qty.call_quantity or 0)
        if body.estimate_type == "unit_price":
            if qty.unit_quantity is None:
                raise InvalidArgument("is required with estimate_type unit_price",
                                      field=f"endpoints.{endpoint}.unit_quantity")
            if endpoint not in units:
                raise InvalidArgument(f"no prices for '{endpoint}'", field=f"endpoints.{endpoint}")
            planned.items.add(unit=units[endpoint], quantity=qty.unit_quantity)
    resp = await billing(request, "EstimateCost", msg)
    return JSON({"estimate_type": body.estimate_type, "total_cost": resp.total_cost,
                 "currency": resp.currency or "USD"})


# --- genmesh REST onto billing.proto --------------------------------------------------------------

@router.post("/v1/cost/estimate", summary="Estimate a cost (Billing.EstimateCost)")
async def cost_estimate(body: CostEstimateRequest, request: Request) -> JSON:
    msg = billing_pb2.EstimateCostRequest()
    for p in body.planned:
        planned = msg.planned.add(model_id=p.model_id, calls=p.calls, machine_type=p.machine_type)
        for item in p.items:
            planned.items.add(unit=item.unit, quantity=item.quantity)
    resp = await billing(request, "EstimateCost", msg)
    return JSON(jsonpb.to_dict(resp, defaults=True))


def request_log_json(log: billing_pb2.RequestLog) -> dict[str, Any]:
    return {"request_id": log.request_id, "model_id": log.model_id, "api_key_id": log.api_key_id,
            "status": common_pb2.JobStatus.Name(log.status).removeprefix("JOB_STATUS_"),
            "mode": log.mode, "queue_time_seconds": log.queue_time_seconds,
            "run_time_seconds": log.run_time_seconds, "error": log.error or None,
            "error_type": log.error_type or None, "cost": log.cost, "currency": log.currency or "USD",
            "created_at": iso(log.created_at), "finished_at": iso(log.finished_at),
            "usage": [{"unit": i.unit, "quantity": i.quantity} for i in log.usage.items],
            "machine_type": log.machine_type or None}


@router.get("/v1/requests", summary="Request logs, newest first (Billing.ListRequestLogs)")
async def request_logs(request: Request, model_id: list[str] = Query(default=[]), status: str | None = None,
                       start: str | None = None, end: str | None = None,
                       limit: int = Query(50, ge=1, le=1000), cursor: str = "", api_key_id: str = "") -> JSON:
    msg = billing_pb2.ListRequestLogsRequest(model_ids=model_id, page_size=limit, cursor=cursor,
                                             api_key_id=api_key_id)
    if status:
        if status.upper() not in STATUSES:
            raise InvalidArgument(f"must be one of {', '.join(STATUSES)}", field="status")
        msg.status = STATUSES[status.upper()]
    _window(msg, start, end)
    resp = await billing(request, "ListRequestLogs", msg)
    return JSON({"object": "list", "data": [request_log_json(log) for log in resp.logs],
                 "next_cursor": resp.next_cursor or None, "has_more": resp.has_more})


@router.get("/v1/metrics", summary="Per-model request metrics (Billing.GetModelMetrics)")
async def metrics(request: Request, model_id: list[str] = Query(default=[]), start: str | None = None,
                  end: str | None = None, api_key_id: str = "") -> JSON:
    msg = billing_pb2.GetModelMetricsRequest(model_ids=model_id, api_key_id=api_key_id)
    _window(msg, start, end)
    resp = await billing(request, "GetModelMetrics", msg)
    return JSON({"object": "list", "data": [jsonpb.to_dict(m, defaults=True) for m in resp.metrics]})


def model_price_json(p: billing_pb2.ModelPrice) -> dict[str, Any]:
    return {**price_json(p.model_id, p.price), "model_id": p.model_id or None,
            "machine_type": p.machine_type or None, "effective_from": iso(p.effective_from)}


@router.get("/v1/prices", summary="Prices in force, or their history (Billing.ListPrices)")
async def list_prices(request: Request, model_id: list[str] = Query(default=[]),
                      include_history: bool = False) -> JSON:
    resp = await billing(request, "ListPrices", billing_pb2.ListPricesRequest(
        model_ids=model_id, include_history=include_history))
    return JSON({"object": "list", "data": [model_price_json(p) for p in resp.prices]})


@router.post("/v1/prices", summary="Set a price, effective now (Billing.SetPrice, admin)")
async def set_price(body: PriceSetRequest, request: Request) -> JSON:
    p = body.price
    resp = await billing(request, "SetPrice", billing_pb2.SetPriceRequest(
        model_id=body.model_id, machine_type=body.machine_type,
        price=router_pb2.Price(unit=p.unit, unit_price=p.unit_price, per=p.per, currency=p.currency)))
    return JSON(model_price_json(resp.price))


def key_json(key: billing_pb2.ApiKey) -> dict[str, Any]:
    return {"id": key.id, "object": "api_key", "name": key.name, "scope": SCOPE_NAMES.get(key.scope, "user"),
            "prefix": key.prefix, "created_at": iso(key.created_at), "revoked_at": iso(key.revoked_at),
            "spend_limit": key.spend_limit if key.HasField("spend_limit") else None,
            "rate_limit_per_minute": key.rate_limit_per_minute if key.HasField("rate_limit_per_minute") else None,
            "spent": key.spent}


@router.post("/v1/keys", summary="Create an API key; its secret is shown once (admin)")
async def create_key(body: KeyCreateRequest, request: Request) -> JSON:
    msg = billing_pb2.CreateApiKeyRequest(name=body.name, scope=SCOPES[body.scope])
    if body.spend_limit is not None:
        msg.spend_limit = body.spend_limit
    if body.rate_limit_per_minute is not None:
        msg.rate_limit_per_minute = body.rate_limit_per_minute
    resp = await billing(request, "CreateApiKey", msg)
    return JSON({**key_json(resp.key), "secret": resp.secret})


@router.get("/v1/keys", summary="List API keys (admin)")
async def list_keys(request: Request) -> JSON:
    resp = await billing(request, "ListApiKeys", billing_pb2.ListApiKeysRequest())
    return JSON({"object": "list", "data": [key_json(k) for k in resp.keys]})


@router.delete("/v1/keys/{key_id}", summary="Revoke an API key (admin)")
async def revoke_key(key_id: str, request: Request) -> JSON:
    resp = await billing(request, "RevokeApiKey", billing_pb2.RevokeApiKeyRequest(id=key_id))
    return JSON(key_json(resp.key))
