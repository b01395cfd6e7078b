"""API keys: generation, hashing (only hashes are stored), lookup and the bootstrap admin key.

Scopes: `user` calls models and reads its own data; `deploy` is a user key that an admin allowed
to deploy, scale and delete apps under its own owner namespace; `admin` may do everything."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import asyncpg

SCOPES = ("user", "deploy", "admin")


@dataclass(frozen=True)
class Identity:
    key_id: str
    scope: str
    spend_limit: float | None = None
    rate_limit_per_minute: float | None = None
    name: str = ""  # the key's name, as an admin gave it (an app owner namespace may follow it)
    spent: float = 0.0  # what the key had spent when it was looked up (budgets check it)

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"

    @property
    def can_deploy(self) -> bool:
        """Whether the key may deploy, scale and delete apps (the `deploy` scope, or admin)."""
        return self.scope in ("deploy", "admin")


def hash_secret(secret: str) -> str:
    # Keys are 256-bit random strings, so a plain SHA-256 is enough (no dictionary to attack).
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return "gm_" + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def parse_authorization(header: str | None) -> str | None:
    """The secret from `Bearer <key>` or FAL's `Key <key>` (also `Key id:secret`)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() in ("bearer", "key") and value.strip():
        return value.strip()
    return None


async def ensure_bootstrap_key(pool: asyncpg.Pool, secret: str) -> str:
    """Makes the configured admin key valid (idempotent); returns its id."""
    digest = hash_secret(secret)
    row = await pool.fetchrow("SELECT id FROM api_keys WHERE secret_hash=$1", digest)
    if row:
        return row["id"]
    key_id = "key_admin_" + digest[:8]
    await pool.execute(
        "INSERT INTO api_keys(id, name, scope, prefix, secret_hash) VALUES ($1,'bootstrap','admin',$2,$3) "
        "ON CONFLICT DO NOTHING", key_id, secret[:8], digest)
    return key_id


# One definition of "a live key", read by billing's Authenticate (which the edge calls) and by
# the router's cached authenticator alike; its spend so far comes with it.
# Billing's key admin (create, list, revoke) returns the same columns.
KEY_COLUMNS = ("k.id, k.name, k.scope, k.prefix, k.created_at, k.revoked_at, k.spend_limit, "
               "k.rate_limit_per_minute")
SPENT = "COALESCE((SELECT SUM(cost) FROM ledger WHERE api_key_id = k.id), 0) AS spent"
LIVE_KEY_COLUMNS = f"{KEY_COLUMNS}, {SPENT}"


async def live_key(pool: asyncpg.Pool, *, secret: str = "",
                   key_id: str = "") -> asyncpg.Record | None:
    """The row of the live (unrevoked) key with this secret, or with this id, or None."""
    if secret:
        return await pool.fetchrow(f"SELECT {LIVE_KEY_COLUMNS} FROM api_keys k "
                                   "WHERE k.secret_hash=$1 AND k.revoked_at IS NULL",
                                   hash_secret(secret))
    return await pool.fetchrow(f"SELECT {LIVE_KEY_COLUMNS} FROM api_keys k "
                               "WHERE k.id=$1 AND k.revoked_at IS NULL", key_id)


def identity_of(row: asyncpg.Record) -> Identity:
    return Identity(row["id"], row["scope"], row["spend_limit"], row["rate_limit_per_minute"],
                    row["name"], float(row["spent"]))


async def lookup(pool: asyncpg.Pool, secret: str) -> Identity | None:
    row = await live_key(pool, secret=secret)
    return None if row is None else identity_of(row)


async def lookup_id(pool: asyncpg.Pool, key_id: str) -> Identity | None:
    """The live key with this id (for tokens, which carry a key's id and never its secret)."""
    row = await live_key(pool, key_id=key_id)
    return None if row is None else identity_of(row)
