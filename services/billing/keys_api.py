"""API keys over gRPC: who is calling, what they may read, and creating, listing and revoking keys.

Isolation: an admin key reads every key's data and may filter by `api_key_id`; a user key reads
only its own, and naming any other key is PERMISSION_DENIED (not silently narrowed, so a client
never mistakes its own numbers for someone else's).
"""
from __future__ import annotations

import logging
import math

import asyncpg
import grpc
from nats.aio.client import Client

from genmesh import bus, keys
from genmesh.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from genmesh.keys import Identity
from genmesh.rpc import AUTH_KEY, metadata_value
from genmesh.v1 import billing_pb2
from genmesh.services.billing.convert import to_timestamp

log = logging.getLogger("genmesh.billing.keys")

SCOPES = {"user": billing_pb2.API_KEY_SCOPE_USER, "deploy": billing_pb2.API_KEY_SCOPE_DEPLOY,
          "admin": billing_pb2.API_KEY_SCOPE_ADMIN}
SCOPE_NAMES = {v: k for k, v in SCOPES.items()}
MAX_NAME = 200


def to_proto(row: asyncpg.Record) -> billing_pb2.ApiKey:
    key = billing_pb2.ApiKey(id=row["id"], name=row["name"], scope=SCOPES.get(row["scope"], 0),
                             prefix=row["prefix"], spent=float(row["spent"]),
                             created_at=to_timestamp(row["created_at"]),
                             revoked_at=to_timestamp(row["revoked_at"]))
    if row["spend_limit"] is not None:
        key.spend_limit = row["spend_limit"]
    if row["rate_limit_per_minute"] is not None:
        key.rate_limit_per_minute = row["rate_limit_per_minute"]
    return key


def require_admin(identity: Identity, what: str) -> None:
    if not identity.is_admin:
        raise PermissionDenied(f"{what} needs an admin key")


def visible_key(identity: Identity, requested: str) -> str | None:
    """The key whose data a query may read: None means every key (admins only)."""
    if identity.is_admin:
        return requested or None
    if requested and requested != identity.key_id:
        raise PermissionDenied("api_key_id: a user key can only read its own usage, logs and "
                               "spend; leave api_key_id empty or use an admin key")
    return identity.key_id


class KeysApi:
    def __init__(self, pool: asyncpg.Pool, nc: Client | None) -> None:
        self.pool = pool
        self.nc = nc

    async def caller(self, context: grpc.aio.ServicerContext) -> Identity:
        """The key in `authorization: Bearer <key>`. Not cached: a revoked key stops at once."""
        secret = keys.parse_authorization(metadata_value(context, AUTH_KEY))
        if secret is None:
            raise Unauthenticated("missing API key: send 'authorization: Bearer <key>'")
        identity = await keys.lookup(self.pool, secret)
        if identity is None:
            raise Unauthenticated("invalid or revoked API key")
        return identity

    async def create(self, identity: Identity, request: billing_pb2.CreateApiKeyRequest
                     ) -> billing_pb2.CreateApiKeyResponse:
        require_admin(identity, "CreateApiKey")
        if len(request.name) > MAX_NAME:
            raise InvalidArgument(f"must be at most {MAX_NAME} characters", field="name")
        scope = SCOPE_NAMES.get(request.scope or billing_pb2.API_KEY_SCOPE_USER)
        if scope is None:
            raise InvalidArgument("must be API_KEY_SCOPE_USER, API_KEY_SCOPE_DEPLOY (may deploy apps) "
                                  "or API_KEY_SCOPE_ADMIN", field="scope")
        spend_limit = _limit(request, "spend_limit", allow_zero=True)
        rate_limit = _limit(request, "rate_limit_per_minute", allow_zero=False)
        secret = keys.new_secret()
        row = await self.pool.fetchrow(
            "INSERT INTO api_keys AS k (id, name, scope, prefix, secret_hash, spend_limit, "
            "rate_limit_per_minute) VALUES ($1,$2,$3,$4,$5,$6,$7) "
            f"RETURNING {keys.KEY_COLUMNS}, 0 AS spent",
            keys.new_key_id(), request.name.replace("\x00", ""), scope, secret[:8],
            keys.hash_secret(secret), spend_limit, rate_limit)
        log.info("api key created", extra={"api_key_id": row["id"], "scope": scope,
                                           "created_by": identity.key_id})
        return billing_pb2.CreateApiKeyResponse(key=to_proto(row), secret=secret)

    async def list(self, identity: Identity) -> billing_pb2.ListApiKeysResponse:
        require_admin(identity, "ListApiKeys")
        rows = await self.pool.fetch(
            f"SELECT {keys.KEY_COLUMNS}, {keys.SPENT} FROM api_keys k ORDER BY k.created_at, k.id")
        return billing_pb2.ListApiKeysResponse(keys=[to_proto(r) for r in rows])

    async def revoke(self, identity: Identity, key_id: str) -> billing_pb2.RevokeApiKeyResponse:
        """Idempotent; routers hear of it on NATS and drop their cached copy at once."""
        require_admin(identity, "RevokeApiKey")
        if not key_id:
            raise InvalidArgument("is required", field="id")
        row = await self.pool.fetchrow(
            "UPDATE api_keys AS k SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 "
            f"RETURNING {keys.KEY_COLUMNS}, {keys.SPENT}", key_id)
        if row is None:
            raise NotFound(f"api key '{key_id}' not found")
        if self.nc is not None:
            # After the commit: a router that drops its cache now re-reads a revoked key.
            await self.nc.publish(bus.KEY_REVOKED_SUBJECT, key_id.encode())
            await self.nc.flush(timeout=5)
        log.info("api key revoked", extra={"api_key_id": key_id, "revoked_by": identity.key_id})
        return billing_pb2.RevokeApiKeyResponse(key=to_proto(row))

    async def authenticate(self, secret: str) -> billing_pb2.AuthenticateResponse:
        """The live key a secret belongs to, with its spend so far."""
        if not secret:
            raise Unauthenticated("missing API key")
        row = await keys.live_key(self.pool, secret=secret)
        if row is None:
            raise Unauthenticated("invalid or revoked API key")
        return billing_pb2.AuthenticateResponse(key=to_proto(row))

    async def authenticate_id(self, key_id: str) -> billing_pb2.AuthenticateResponse:
        """The live key with this id: how the edge re-checks the key behind an upload token or
        signed upload URL it issued. Only mesh services reach billing (meshtls.CALLERS)."""
        row = await keys.live_key(self.pool, key_id=key_id)
        if row is None:
            raise Unauthenticated("invalid or revoked API key")
        return billing_pb2.AuthenticateResponse(key=to_proto(row))


def _limit(request: billing_pb2.CreateApiKeyRequest, name: str, *, allow_zero: bool) -> float | None:
    if not request.HasField(name):
        return None
    value = getattr(request, name)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidArgument(f"must be a finite number {bound} (leave unset for unlimited)",
                              field=name)
    return value
