"""Stored Responses API objects on the router: the `responses` table (Postgres, so every router
replica answers for every response, also after restarts) and the Router RPCs that read and write
it, one key's rows only, kept for `response_retention_days`.

The edge renders the response object and its context; the router stores them as given (JSON) and
never interprets them: it owns durability, ownership and expiry.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any

import asyncpg
import grpc
import orjson
from google.protobuf import struct_pb2

from genmesh import jsonpb
from genmesh.errors import InvalidArgument, NotFound
from genmesh.rpc import servicer_errors
from genmesh.v1 import router_pb2

_ID = re.compile(r"resp_[A-Za-z0-9]{8,64}")
MAX_STORED_BYTES = 8 * 1024 * 1024


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(data)
    return out


def _stored(row: asyncpg.Record) -> router_pb2.StoredResponse:
    out = router_pb2.StoredResponse(id=row["id"], job_id=row["job_id"],
                                    response=_struct(orjson.loads(row["response"])),
                                    context=_struct(orjson.loads(row["context"])))
    out.created_at.FromDatetime(row["created_at"])
    out.expires_at.FromDatetime(row["expires_at"])
    return out


class ResponseStore:
    """The `responses` table. Expired rows are invisible at once and purged as writes go by."""

    def __init__(self, pool: asyncpg.Pool, retention_days: float) -> None:
        self.pool = pool
        self.retention = dt.timedelta(days=retention_days)

    async def put(self, key_id: str, stored: router_pb2.StoredResponse) -> router_pb2.StoredResponse:
        if not _ID.fullmatch(stored.id):
            raise InvalidArgument("must look like resp_<letters and digits>", field="response.id")
        response = orjson.dumps(jsonpb.struct_to_dict(stored.response))
        context = orjson.dumps(jsonpb.struct_to_dict(stored.context))
        if len(response) + len(context) > MAX_STORED_BYTES:
            raise InvalidArgument(f"a stored response holds at most {MAX_STORED_BYTES} bytes", field="response")
        expires = dt.datetime.now(dt.timezone.utc) + self.retention
        async with self.pool.acquire() as conn:
            # Another key's id is never overwritten: the WHERE turns that insert into no row.
            row = await conn.fetchrow(
                "INSERT INTO responses (id, api_key_id, response, context, job_id, expires_at) "
                "VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6) "
                "ON CONFLICT (id) DO UPDATE SET response=EXCLUDED.response, context=EXCLUDED.context, "
                "job_id=EXCLUDED.job_id, updated_at=now() WHERE responses.api_key_id=EXCLUDED.api_key_id "
                "RETURNING id, response, context, job_id, created_at, expires_at",
                stored.id, key_id, response.decode(), context.decode(), stored.job_id, expires)
            await conn.execute("DELETE FROM responses WHERE expires_at < now()")
        if row is None:
            raise NotFound(f"response '{stored.id}' not found")
        return _stored(row)

    async def get(self, key_id: str, response_id: str) -> router_pb2.StoredResponse:
        row = None
        if _ID.fullmatch(response_id):
            row = await self.pool.fetchrow(
                "SELECT id, response, context, job_id, created_at, expires_at FROM responses "
                "WHERE id=$1 AND api_key_id=$2 AND expires_at >= now()", response_id, key_id)
        # Another key's response is missing, not forbidden: ids must not leak.
        if row is None:
            raise NotFound(f"response '{response_id}' not found")
        return _stored(row)

    async def delete(self, key_id: str, response_id: str) -> bool:
        if not _ID.fullmatch(response_id):
            return False
        done = await self.pool.execute("DELETE FROM responses WHERE id=$1 AND api_key_id=$2 AND expires_at >= now()",
                                       response_id, key_id)
        return done.endswith(" 1")


class StoredResponsesRPCs:
    """The Router's stored-response RPCs (mixed into its servicer; needs `self.mesh`)."""

    mesh: Any

    @servicer_errors
    async def PutResponse(self, request: router_pb2.PutResponseRequest,
                          context: grpc.aio.ServicerContext) -> router_pb2.PutResponseResponse:
        identity = await self.mesh.auth.identify(context)
        return router_pb2.PutResponseResponse(response=await self.mesh.responses.put(identity.key_id,
                                                                                   request.response))

    @servicer_errors
    async def GetResponse(self, request: router_pb2.GetResponseRequest,
                          context: grpc.aio.ServicerContext) -> router_pb2.GetResponseResponse:
        identity = await self.mesh.auth.identify(context)
        return router_pb2.GetResponseResponse(response=await self.mesh.responses.get(identity.key_id, request.id))

    @servicer_errors
    async def DeleteResponse(self, request: router_pb2.DeleteResponseRequest,
                             context: grpc.aio.ServicerContext) -> router_pb2.DeleteResponseResponse:
        identity = await self.mesh.auth.identify(context)
        deleted = await self.mesh.responses.delete(identity.key_id, request.id)
        if not deleted:
            raise NotFound(f"response '{request.id}' not found")
        return router_pb2.DeleteResponseResponse(deleted=True)
