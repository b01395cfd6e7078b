"""A worker host and a router host are cut off mid-load: every accepted job still completes
exactly once and is billed exactly once.

Timeline (seconds after the load starts; hosts as in conftest):
   0  load: 8 queued echo jobs/s over router-a, router-b and the edge, plus two sync clients
   8  worker-a cut off: routers notice missing heartbeats, re-place its calls on worker-b
  10  router-a cut off: its clients time out and retry on router-b; the jobs it holds come back
      to router-b once their JetStream ack wait and Postgres lease expire
  28  both healed: router-a returns with stale calls and leases, which must change nothing
  40  load stops; then every accepted job must end COMPLETED, once, with one usage record and
      one ledger row
"""
from __future__ import annotations

import asyncio
import collections
import json
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import nats
import pytest

from genmesh.v1 import billing_pb2, common_pb2
from tests.multihost.conftest import LabMesh, read_event, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")

LOAD_SECONDS = 40.0
RATE = 8.0
CUT_WORKER_AT = 8.0
CUT_ROUTER_AT = 10.0
HEAL_AT = 28.0
SETTLE_TIMEOUT_S = 60.0
ECHO_USAGE = [{"unit": "requests", "quantity": 1.0}]


# --------------------------------------------------------------------------- observations


async def router_ids(mesh: LabMesh) -> dict[str, str]:
    """Router id by host address, from the NATS server's connection list (routers name theirs)."""
    async def fetch() -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5.0) as http:
            return (await http.get(f"{mesh.nats.monitor_url}/connz?limit=1024")).json()

    connz = await mesh.on_client(fetch)
    return {c["ip"]: c["name"] for c in connz["connections"] if c.get("name", "").startswith("router-")}


async def jobs_in_progress(mesh: LabMesh) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(mesh.database_url, timeout=5)
        try:
            return [dict(r) for r in await conn.fetch(
                "SELECT id, claimed_by, attempts, now() AS at FROM jobs WHERE status='IN_PROGRESS'")]
        finally:
            await conn.close()

    return await mesh.on_client(fetch)


async def db_now(mesh: LabMesh) -> Any:
    async def fetch() -> Any:
        conn = await asyncpg.connect(mesh.database_url, timeout=5)
        try:
            return await conn.fetchval("SELECT now()")
        finally:
            await conn.close()

    return await mesh.on_client(fetch)


@dataclass
class Books:
    """What Postgres and the USAGE stream say about the requests, once everything settled."""

    jobs: dict[str, dict[str, Any]]  # every row of the jobs table
    ledger: dict[str, dict[str, Any]]  # every row of billing's ledger
    usage: dict[str, list[billing_pb2.UsageRecord]]  # USAGE stream records by request id


async def settle(mesh: LabMesh, queued: list[str], sync: list[str], timeout: float) -> Books:
    """Waits until every accepted job ended and billing recorded every accepted request."""
    async def fetch() -> Books:
        conn = await asyncpg.connect(mesh.database_url, timeout=5)
        try:
            deadline = time.monotonic() + timeout
            while True:
                ended = await conn.fetchval(
                    "SELECT count(*) FROM jobs WHERE id = ANY($1::text[])"
                    " AND status IN ('COMPLETED','FAILED','CANCELLED')", queued)
                billed = await conn.fetchval("SELECT count(*) FROM ledger WHERE request_id = ANY($1::text[])",
                                             queued + sync)
                if (ended == len(queued) and billed == len(queued) + len(sync)) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            jobs = {r["id"]: dict(r) for r in await conn.fetch(
                "SELECT id, status, attempts, claimed_by, output, usage, error, finished_at FROM jobs")}
            ledger = {r["request_id"]: dict(r) for r in await conn.fetch(
                "SELECT request_id, status, mode, usage FROM ledger")}
        finally:
            await conn.close()
        nc = await nats.connect(mesh.nats_url)
        try:
            usage = await read_usage(nc)
        finally:
            await nc.close()
        return Books(jobs, ledger, usage)

    return await mesh.on_client(fetch, timeout=timeout + 60)


async def read_usage(nc: Any) -> dict[str, list[billing_pb2.UsageRecord]]:
    js = nc.jetstream()
    total = (await js.stream_info("USAGE")).state.messages
    sub = await js.pull_subscribe("genmesh.usage.>", stream="USAGE")
    records: dict[str, list[billing_pb2.UsageRecord]] = collections.defaultdict(list)
    seen = 0
    while seen < total:
        for msg in await sub.fetch(batch=256, timeout=5):
            rec = billing_pb2.UsageRecord.FromString(msg.data)
            records[rec.request_id].append(rec)
            seen += 1
    await sub.unsubscribe()
    return records


def log_events(mesh: LabMesh, service: str) -> list[dict[str, Any]]:
    events = []
    for line in mesh.services[service].log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def as_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


# --------------------------------------------------------------------------- the test


async def test_cut_off_worker_and_router_hosts_lose_nothing_and_bill_each_job_once(lab_mesh: LabMesh) -> None:
    mesh = lab_mesh
    began = time.monotonic()
    routers = await router_ids(mesh)
    router_a = routers[mesh.host("router-a").addr]
    router_b = routers[mesh.host("router-b").addr]
    worker_a = next(e["worker_id"] for e in log_events(mesh, "echo-a") if e.get("event") == "worker started")

    out = mesh.tmp / "load.json"
    driver = await mesh.driver("run", "--seconds", str(LOAD_SECONDS), "--rate", str(RATE),
                               "--out", str(out), log_name="driver-run")
    assert (await read_event(driver, 60))["event"] == "started"
    t0 = time.monotonic()

    await wait_until(t0 + CUT_WORKER_AT)
    mesh.lab.cut(mesh.host("worker-a"))
    await wait_until(t0 + CUT_ROUTER_AT)
    mesh.lab.cut(mesh.host("router-a"))
    held = await jobs_in_progress(mesh)
    held_by_a = {j["id"] for j in held if j["claimed_by"] == router_a}
    await wait_until(t0 + HEAL_AT)
    healed_at = await db_now(mesh)
    mesh.lab.heal(mesh.host("worker-a"))
    mesh.lab.heal(mesh.host("router-a"))

    progress = []
    while (event := await read_event(driver, LOAD_SECONDS + 30))["event"] != "done":
        progress.append(event)
    assert await driver.wait() == 0
    load = json.loads(out.read_text())
    accepted = {s["request_id"]: s for s in load["submitted"] if s["request_id"]}
    runs_ok = {r["request_id"]: r for r in load["ran"] if r["request_id"]}

    books = await settle(mesh, list(accepted), list(runs_ok), SETTLE_TIMEOUT_S)
    assert not mesh.failed_services(), mesh.failed_services()

    # --- every accepted queued job: one row, COMPLETED, its own output, charged one request
    wrong = {rid: books.jobs.get(rid, {}).get("status", "MISSING") for rid in accepted
             if books.jobs.get(rid, {}).get("status") != "COMPLETED"}
    assert not wrong, f"accepted jobs not completed: {wrong}\n{mesh.logs()}"
    for rid, s in accepted.items():
        job = books.jobs[rid]
        assert as_json(job["output"])["prompt"] == s["prompt"], (rid, job["output"])
        assert as_json(job["usage"]) == ECHO_USAGE, (rid, job["usage"])

    # --- every accepted request (queued and sync): one usage record, one ledger row, COMPLETED
    for rid in [*accepted, *runs_ok]:
        records = books.usage.get(rid, [])
        assert len(records) == 1, f"{rid}: {len(records)} usage records"
        assert records[0].status == common_pb2.JOB_STATUS_COMPLETED, (rid, records[0])
        assert books.ledger.get(rid, {}).get("status") == "COMPLETED", (rid, books.ledger.get(rid))
    assert all(r["output_prompt"] == r["prompt"] for r in runs_ok.values())
    duplicated = {rid: len(recs) for rid, recs in books.usage.items() if len(recs) > 1}
    assert not duplicated, f"request ids with several usage records: {duplicated}"

    # --- what router-a held when it was cut off came back through router-b's lease takeover
    for rid in held_by_a:
        job = books.jobs[rid]
        assert job["status"] == "COMPLETED" and job["claimed_by"] == router_b and job["attempts"] >= 2, job
        assert job["finished_at"] < healed_at, f"{rid} waited for the heal: {job}"

    # --- the cuts really happened and the mesh noticed them
    dead = [e for e in log_events(mesh, "router-b") if e.get("event") == "worker dead"
            and e.get("worker_id") == worker_a]
    assert dead, "router-b never declared the cut-off worker dead"
    assert any(s["errors"] for s in load["submitted"]), "no client ever saw router-a stop answering"

    queued_completed = sum(1 for rid in accepted if books.jobs[rid]["status"] == "COMPLETED")
    billed = sum(1 for rid in [*accepted, *runs_ok] if books.ledger.get(rid, {}).get("status") == "COMPLETED")
    unacknowledged = {rid: j["status"] for rid, j in books.jobs.items() if rid not in accepted}
    replaced = sum(1 for svc in ("router-a", "router-b") for e in log_events(mesh, svc)
                   if e.get("event") == "worker lost; re-placing")
    by_via = collections.Counter(s["via"][-1].split("//")[0].rstrip(":") if s["via"][-1].startswith("http")
                                 else ("router-a" if s["via"][-1] == mesh.router_addrs[0] else "router-b")
                                 for s in accepted.values())
    total = len(accepted) + len(runs_ok)
    print(f"\naccepted = completed = billed: {total} = {queued_completed + len(runs_ok)} = {billed}"
          f"  (queued {len(accepted)}: {dict(by_via)}; sync {len(runs_ok)})"
          f"\nsubmits: {load_summary(load)}"
          f"\nheld by router-a at its cut: {len(held_by_a)}, all re-claimed and completed by router-b "
          f"before the heal; attempts>1: {sum(1 for rid in accepted if books.jobs[rid]['attempts'] > 1)}"
          f"\nrouter re-placements after a lost worker: {replaced}; worker-a declared dead {len(dead)}x by router-b"
          f"\njobs in Postgres never acknowledged to a client: {dict(collections.Counter(unacknowledged.values()))}"
          f"\nledger rows for requests whose client gave up: "
          f"{sum(1 for rid in books.ledger if rid not in accepted and rid not in runs_ok)}"
          f"\nwall time incl. set-up: {time.monotonic() - began:.0f}s (test body)")
    assert total == queued_completed + len(runs_ok) == billed


def load_summary(load: dict[str, Any]) -> str:
    submitted = load["submitted"]
    ran = load["ran"]
    errors = collections.Counter(e.split(": ", 1)[1] for s in submitted for e in s["errors"])
    return (f"{len(submitted)} submitted, {sum(1 for s in submitted if len(s['via']) > 1)} retried on the other "
            f"router, {sum(1 for s in submitted if not s['request_id'])} rejected, errors {dict(errors)}; "
            f"sync runs {len(ran)}, ok {sum(1 for r in ran if r['request_id'])}, "
            f"errors {dict(collections.Counter(r['error'] for r in ran if r['error']))}")
