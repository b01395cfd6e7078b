"""Who is calling: API keys from gRPC metadata, cached briefly, with per-key rate limits and
budgets. Keys are read through `genmesh.keys.live_key`, the one definition of a live key that
billing's Authenticate (the edge's path) answers from too; its spend comes with it, so the
router reads no table of billing's itself.

A revoked key stops working within a second: the cache lives one second and revocations are
also broadcast on NATS, which clears it at once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import asyncpg
import grpc

from genmesh import keys, tokens
from genmesh.errors import BudgetExceeded, RateLimited, Unauthenticated
from genmesh.keys import Identity
from genmesh.rpc import AUTH_KEY, DEPENDENCY_ERRORS, metadata_value
from genmesh.tokens import TokenSealer

CACHE_TTL_S = 1.0
# While Postgres is unreachable a key seen valid this recently keeps working (the sync path needs
# nothing else from Postgres); a revocation still clears it at once through NATS.
STALE_IF_ERROR_S = 300.0


@dataclass
class TokenBucket:
    rate_per_s: float
    capacity: float
    tokens: float
    stamp: float = field(default_factory=time.monotonic)

    def take(self) -> float:
        """0 when a token was taken, else seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate_per_s)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate_per_s


class Authenticator:
    def __init__(self, pool: asyncpg.Pool, sealer: TokenSealer | None = None) -> None:
        self.pool = pool
        # Opens the realtime tokens the edge issues (sealed with the mesh's signing secret).
        self.sealer = sealer
        # secret -> (identity, expires, looked up at)
        self._cache: dict[str, tuple[Identity | None, float, float]] = {}
        self._buckets: dict[str, TokenBucket] = {}

    def forget_all(self) -> None:
        self._cache.clear()

    async def identify(self, context: grpc.aio.ServicerContext, *, realtime_model: str | None = None) -> Identity:
        """The caller's live key. A realtime token (the edge's, carrying a key id) stands for its
        key only on a realtime stream (`realtime_model`) of an app the token allows."""
        secret = keys.parse_authorization(metadata_value(context, AUTH_KEY))
        if secret is None:
            raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>' or 'Key <key>'")
        key_id = None
        if tokens.is_token(secret):
            if realtime_model is None or self.sealer is None:
                raise Unauthenticated("a realtime token opens realtime streams only; send an API key")
            payload = self.sealer.open(tokens.REALTIME, secret)
            key_id = payload.get("kid")
            if not isinstance(key_id, str) or not tokens.allows_app(payload, realtime_model):
                raise Unauthenticated(f"this token is not valid for '{realtime_model}'")
        now = time.monotonic()
        hit = self._cache.get(secret)
        if hit is not None and hit[1] > now:
            identity = hit[0]
        else:
            try:
                identity = await (keys.lookup_id(self.pool, key_id) if key_id else keys.lookup(self.pool, secret))
                self._cache[secret] = (identity, now + CACHE_TTL_S, now)
            except DEPENDENCY_ERRORS:
                if hit is None or hit[0] is None or now - hit[2] > STALE_IF_ERROR_S:
                    raise
                identity = hit[0]
                # Look again in a second, not on every call while Postgres is down.
                self._cache[secret] = (identity, now + CACHE_TTL_S, hit[2])
        if identity is None:
            raise Unauthenticated("invalid or revoked API key")
        return identity

    def check_rate(self, identity: Identity) -> None:
        if not identity.rate_limit_per_minute:
            return
        bucket = self._buckets.get(identity.key_id)
        rate = identity.rate_limit_per_minute / 60.0
        if bucket is None or bucket.rate_per_s != rate:
            cap = max(1.0, identity.rate_limit_per_minute / 60.0 * 1.0)
            bucket = self._buckets[identity.key_id] = TokenBucket(rate, cap, cap)
        wait = bucket.take()
        if wait:
            raise RateLimited(f"rate limit of {identity.rate_limit_per_minute:g} requests per minute "
                              f"exceeded for this key; retry in {wait:.1f}s", retry_after=wait)

    def check_budget(self, identity: Identity) -> None:
        """Refuses a key whose spend (read with the key, see `keys.live_key`; at most a cache
        lifetime old) has reached its limit."""
        if identity.spend_limit is not None and identity.spent >= identity.spend_limit:
            raise BudgetExceeded(f"spend limit of {identity.spend_limit:g} reached for this key "
                                 f"(spent {identity.spent:.6f})")

    async def admit(self, context: grpc.aio.ServicerContext, *, realtime_model: str | None = None) -> Identity:
        """Identity of a caller allowed to start work now (rate limit and budget checked)."""
        identity = await self.identify(context, realtime_model=realtime_model)
        self.check_rate(identity)
        self.check_budget(identity)
        return identity
