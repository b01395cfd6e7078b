"""The durable queue under load: submit N jobs to Router.Submit as fast as 64 clients can, then
wait for every one to end. Reports submit throughput, submit-to-complete latency (Postgres's own
created_at/finished_at, so the client's polling does not blur it), and completed / lost / billed."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from bench.mesh import BenchMesh
from bench.overhead import measured

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


async def wait_ended(conn: asyncpg.Connection, ids: list[str], timeout_s: float,
                     stall_s: float = 60.0) -> float:
    """Seconds until every job ended (or the time we gave up: no progress for `stall_s`)."""
    started = time.monotonic()
    last_progress, last_count = started, -1
    while True:
        ended = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::text[]) AND status = ANY($2::text[])",
            ids, list(TERMINAL))
        now = time.monotonic()
        if ended == len(ids) or now - started > timeout_s or now - last_progress > stall_s:
            return now - started
        if ended != last_count:
            last_count, last_progress = ended, now
        await asyncio.sleep(0.5)


async def billed(conn: asyncpg.Connection, ids: list[str], timeout_s: float = 60.0) -> int:
    """Ledger rows for these request ids, once billing has caught up (or `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        exists = await conn.fetchval("SELECT to_regclass('ledger') IS NOT NULL")
        count = await conn.fetchval("SELECT count(*) FROM ledger WHERE request_id = ANY($1::text[])",
                                    ids) if exists else 0
        if count >= len(ids) or time.monotonic() > deadline:
            return int(count)
        await asyncio.sleep(0.5)


async def queue_run(mesh: BenchMesh, *, jobs: int, concurrency: int = 64,
                    timeout_s: float = 600.0) -> dict[str, Any]:
    submit = await measured(mesh, {"mode": "submit", "addr": mesh.addr("router"), "key": mesh.api_key,
                                   "concurrency": concurrency, "requests": jobs, "warmup": 0,
                                   "want_ids": True, "payload": {"prompt": "queued"}})
    ids = [i for i in submit.pop("request_ids") if i]
    conn = await asyncpg.connect(mesh.database_url)
    try:
        waited = await wait_ended(conn, ids, timeout_s)
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status='COMPLETED') AS completed,"
            " count(*) FILTER (WHERE status IN ('FAILED','CANCELLED')) AS failed,"
            " count(*) FILTER (WHERE attempts > 1) AS rerun,"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)) AS p50,"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)) AS p99,"
            " extract(epoch FROM max(finished_at) - min(created_at)) AS span"
            " FROM jobs WHERE id = ANY($1::text[])", ids)
        billed_rows = await billed(conn, ids)
    finally:
        await conn.close()
    completed = int(row["completed"])
    return {
        "jobs": jobs, "accepted": len(ids), "submit_errors": submit["errors"],
        "submit_per_s": submit["rps"], "submit_p50_ms": submit["p50_ms"], "submit_p99_ms": submit["p99_ms"],
        "completed": completed, "failed": int(row["failed"]), "lost": jobs - completed,
        "rerun": int(row["rerun"]), "billed": billed_rows,
        "latency_p50_s": float(row["p50"] or 0), "latency_p99_s": float(row["p99"] or 0),
        "completed_per_s": completed / float(row["span"]) if row["span"] else 0.0,
        "wait_s": waited, "cpu_us_per_submit": submit["cpu_us_per_req"],
    }
