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
        return await self._authenticate(
            auth, billing_pb2.AuthenticateRequest(secret=auth.split(" ", 1)[1]), auth,
            "files, uploads and batches identify the key")

    async def live(self, key_id: str) -> Identity:
        """The key with this id, while it is live (cached as briefly as secrets are, so a
        revocation ends the upload tokens and signed upload URLs issued to it within ~1 s)."""
        return await self._authenticate("id:" + key_id, billing_pb2.AuthenticateRequest(key_id=key_id),
                                        "", "uploads check their key")

    async def _authenticate(self, cache_key: str, ask: billing_pb2.AuthenticateRequest, auth: str,
                            what: str) -> Identity:
        """Billing's answer for `ask`, cached for CACHE_TTL_S under `cache_key`."""
        hit = self._cache.get(cache_key)
        now = time.monotonic()
        if hit and hit[1] > now:
            return hit[0]
        try:
            resp = await self.mesh.unary(self.mesh.billing.Authenticate, ask, auth, timeout=10)
        except Unavailable:
            raise Unavailable(f"billing is not running: {what} through the billing service (start "
                              "it, or check GENMESH_BILLING_ADDR)") from None
        identity = _identity(resp.key)
        self._cache[cache_key] = (identity, now + CACHE_TTL_S)
        return identity


def _identity(key: billing_pb2.ApiKey) -> Identity:
    return Identity(key.id, "admin" if key.scope == billing_pb2.API_KEY_SCOPE_ADMIN else "user")
