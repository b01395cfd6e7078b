"""Postgres access: an asyncpg pool and the ordered migrations in genmesh/migrations/.

Migrations are `NNNN_name.sql` files applied once each, in order, under an advisory lock so that
several services starting together apply them exactly once.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import asyncpg

from genmesh.retry import Backoff, retry

log = logging.getLogger("genmesh.db")
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_ID = 0x67656E6D  # "genm"


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's default reset query (advisory unlock, CLOSE ALL, UNLISTEN,
    RESET ALL): that is one more round trip and statement per pooled query, and no genmesh code
    leaves session state behind (open transactions are still rolled back by asyncpg)."""


async def connect(url: str, *, min_size: int = 1, max_size: int = 10, attempts: int = 50) -> asyncpg.Pool:
    """A pool to `url`, retrying while Postgres is still starting (or restarting)."""
    return await retry(
        lambda: asyncpg.create_pool(url, min_size=min_size, max_size=max_size,
                                    init=_init_connection, command_timeout=30, reset=_keep_session),
        attempts=attempts, backoff=Backoff(0.05, maximum=1.0),
        retry_on=(OSError, asyncpg.PostgresError, asyncpg.InterfaceError),
        on_retry=lambda exc, _delay: log.info("postgres not ready", extra={"error": str(exc)}))


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Applies pending migrations; returns the names applied now."""
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                               "name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
            done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
            for path in migration_files():
                if path.name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute("INSERT INTO schema_migrations(name) VALUES ($1)", path.name)
                applied_now.append(path.name)
                log.info("migration applied", extra={"migration": path.name})
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now
