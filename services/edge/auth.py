"""The caller's key at the edge: required on every API route and forwarded to the mesh, which
decides what it may do. Edge-only routes (files) resolve it through billing, cached briefly; so
do upload tokens and signed upload URLs, which carry a key id and are honoured while it is live."""
from __future__ import annotations

import time

from fastapi import Request

from genmesh import keys
from genmesh.errors import Unauthenticated, Unavailable
from genmesh.keys import Identity
from genmesh.v1 import billing_pb2

CACHE_TTL_S = 1.0


def authorization(request: Request) -> str:
    """The Authorization header, normalized to `Bearer <key>`; 401 when absent or malformed."""
    return bearer(request.headers.get("authorization"))


def bearer(header: str | None) -> str:
    """`Bearer <key>` from an Authorization header value; 401 naming the header when absent or
    malformed. Keys are printable ASCII: anything else could not travel as gRPC metadata."""
    secret = keys.parse_authorization(header)
    if secret is None:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>' or 'Authorization: Key <key>'")
    if not (secret.isascii() and secret.isprintable()):
        raise Unauthenticated("malformed API key: keys are printable ASCII", field="Authorization")
    return f"Bearer {secret}"


class IdentityCache:
    def __init__(self, mesh) -> None:  # noqa: ANN001 - MeshClient
        self.mesh = mesh
        self._cache: dict[str, tuple[Identity, float]] = {}

    async def identify(self, request: Request) -> Identity:
        auth = authorization(request)
        hit = self._cache.get(auth)
        now = time.monotonic()
        if hit and hit[1] > now:
            return hit[0]
        try:
            resp = await self.mesh.unary(self.mesh.billing.Authenticate,
                                         billing_pb2.AuthenticateRequest(secret=auth.split(" ", 1)[1]), auth,
                                         timeout=10)
        except Unavailable:
            raise Unavailable("billing is not running: files, uploads and batches identify the key "
                              "through the billing service (start it, or check GENMESH_BILLING_ADDR)") from None
        identity = _identity(resp.key)
        self._cache[auth] = (identity, now + CACHE_TTL_S)
        return identity

    async def live(self, key_id: str) -> Identity:
        """The key with this id, while it is live (cached as briefly as secrets are, so a
        revocation ends the upload tokens and signed upload URLs issued to it within ~1 s)."""
        cache_key = "id:" + key_id
        hit = self._cache.get(cache_key)
        now = time.monotonic()
        if hit and hit[1] > now:
            return hit[0]
        try:
            resp = await self.mesh.unary(self.mesh.billing.Authenticate,
                                         billing_pb2.AuthenticateRequest(key_id=key_id), "", timeout=10)
        except Unavailable:
            raise Unavailable("billing is not running: uploads check their key through the billing "
                              "service (start it, or check GENMESH_BILLING_ADDR)") from None
        identity = _identity(resp.key)
        self._cache[cache_key] = (identity, now + CACHE_TTL_S)
        return identity


def _identity(key: billing_pb2.ApiKey) -> Identity:
    return Identity(key.id, "admin" if key.scope == billing_pb2.API_KEY_SCOPE_ADMIN else "user")
