"""A worker host and a router host are cut off mid-load: every accepted job still completes
exactly once and is billed exactly once, and nothing runs again once it has ended.

Timeline (seconds after the load starts; hosts as in conftest):
   0  load: 8 queued echo jobs/s over router-a, router-b and the edge, plus two sync clients
   8  worker-a cut off for good: routers miss its heartbeats and re-place its calls on worker-b
  10  router-a cut off: its clients fail over to router-b; the jobs it holds come back to
      router-b once their JetStream ack wait and Postgres lease expire
  28  router-a healed: it returns with stale calls and leases, which must change nothing
  40  load stops; every accepted job must end COMPLETED, once, with one usage record and one
      ledger row

worker-a stays cut off so that every heartbeat the test sees is fresh: a healed host's NATS
connection delivers the heartbeats it buffered during the cut, long after they were true.
"""
from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Self

import asyncpg
import httpx
import nats
import pytest

from genmesh import bus
from genmesh.v1 import billing_pb2, common_pb2, echo_pb2, worker_pb2
from tests.multihost.conftest import LabMesh, read_event, wait_until

# Bounded: ~10 s of set-up, 40 s of load, seconds to settle; the timeout only catches a hang.
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(300)]

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


class WorkerWatch:
    """Which requests each worker reports running, from its heartbeats, seen from the client host.

    Heartbeats come every 0.2 s and an echo job runs 0.4 s, so nearly every run is seen.
    """

    def __init__(self, mesh: LabMesh) -> None:
        self.mesh = mesh
        self.seen: dict[str, list[tuple[str, float]]] = collections.defaultdict(list)
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None

    async def _observe(self) -> None:
        nc = await nats.connect(self.mesh.nats_url)

        async def on_heartbeat(msg: Any) -> None:
            state = worker_pb2.WorkerState.FromString(msg.data)
            for rid in state.running_requests:
                self.seen[rid].append((state.worker_id, time.time()))

        await nc.subscribe(bus.HEARTBEAT_SUBJECT, cb=on_heartbeat)
        while not self._stop.is_set():
            await asyncio.sleep(0.1)
        await nc.close()

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self.mesh.on_client(self._observe, timeout=600))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def after(self, rid: str, ended: float) -> list[tuple[str, float]]:
        """(worker, seconds after `ended`) of each sighting of `rid` running once it had ended."""
        return [(w, round(t - ended, 2)) for w, t in self.seen.get(rid, []) if t > ended]


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
                "SELECT id, status, attempts, claimed_by, result, usage, error, finished_at FROM jobs")}
            ledger = {r["request_id"]: dict(r) for r in await conn.fetch(
                "SELECT request_id, status, mode, usage, finished_at FROM ledger")}
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
            for rec in bus.usage_records(msg.data, msg.headers):  # batched or single
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


def late_runs(books: Books, watch: WorkerWatch) -> dict[str, list[tuple[str, float]]]:
    """Jobs a worker reported running after they had ended: {request id: [(worker, s after)]}.

    0.5 s of slack for a heartbeat sent just before the worker let go of a call whose result the
    router had already stored.
    """
    late = {rid: watch.after(rid, j["finished_at"].timestamp() + 0.5) for rid, j in books.jobs.items()
            if j["finished_at"] is not None}
    return {rid: seen for rid, seen in late.items() if seen}


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

    async with WorkerWatch(mesh) as watch:
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
        mesh.lab.heal(mesh.host("router-a"))

        while (await read_event(driver, LOAD_SECONDS + 30))["event"] != "done":
            pass
        assert await driver.wait() == 0
        load = json.loads(out.read_text())
        accepted = {s["request_id"]: s for s in load["submitted"] if s["request_id"]}
        runs_ok = {r["request_id"]: r for r in load["ran"] if r["request_id"]}

        books = await settle(mesh, list(accepted), list(runs_ok), SETTLE_TIMEOUT_S)
        await asyncio.sleep(1.0)  # heartbeats of anything still running
    assert not mesh.failed_services(), mesh.failed_services()

    queued_completed = sum(1 for rid in accepted if books.jobs.get(rid, {}).get("status") == "COMPLETED")
    billed = sum(1 for rid in [*accepted, *runs_ok] if books.ledger.get(rid, {}).get("status") == "COMPLETED")
    total = len(accepted) + len(runs_ok)
    names = {mesh.router_addrs[0]: "router-a", mesh.router_addrs[1]: "router-b", mesh.edge_url: "edge"}
    names_of = {router_a: "router-a", router_b: "router-b"}
    unacknowledged = collections.Counter(j["status"] for rid, j in books.jobs.items() if rid not in accepted)
    gave_up = collections.Counter(f"{row['mode']} {row['status']}" for rid, row in books.ledger.items()
                                  if rid not in accepted and rid not in runs_ok)
    replaced = sum(1 for svc in ("router-a", "router-b") for e in log_events(mesh, svc)
                   if e.get("event") == "worker lost; re-placing")
    dead = [e for e in log_events(mesh, "router-b") if e.get("event") == "worker dead"
            and e.get("worker_id") == worker_a]
    print(f"\naccepted = completed = billed: {total} = {queued_completed + len(runs_ok)} = {billed}"
          f"  (queued {len(accepted)}, answered by "
          f"{dict(collections.Counter(names[s['via'][-1]] for s in accepted.values()))}; sync {len(runs_ok)})"
          f"\n{describe_load(load, names)}"
          f"\nheld by router-a when cut off: {len(held_by_a)}, then claimed by "
          f"{dict(collections.Counter(names_of.get(books.jobs[rid]['claimed_by'], '?') for rid in held_by_a))}; "
          f"accepted jobs with attempts > 1: {sum(1 for rid in accepted if books.jobs.get(rid, {}).get('attempts', 0) > 1)}"
          f"\ncalls re-placed after a lost worker: {replaced}; worker-a declared dead by router-b {len(dead)}x"
          f"\njobs in Postgres never acknowledged to a client: {dict(unacknowledged)}; ledger rows of "
          f"requests whose client gave up: {dict(gave_up)}"
          f"\ntest body {time.monotonic() - began:.0f}s")
    late = late_runs(books, watch)
    print(f"ran on a worker after the job had ended: {late}")

    # --- every accepted queued job: one row, COMPLETED, its own output, charged one request
    wrong = {rid: books.jobs.get(rid, {}).get("status", "MISSING") for rid in accepted
             if books.jobs.get(rid, {}).get("status") != "COMPLETED"}
    assert not wrong, f"accepted jobs not completed: {wrong}\n{mesh.logs()}"
    for rid, s in accepted.items():
        job = books.jobs[rid]
        assert echo_pb2.EchoResult.FromString(job["result"]).prompt == s["prompt"], (rid, job["result"])
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

    # --- nothing ran again once it had ended: a router that lost its lease stops its run
    assert not late, f"jobs run on a worker after they had ended (request id: [(worker, s after)]): {late}"

    # --- the cuts really happened and the mesh noticed them
    assert dead, "router-b never declared the cut-off worker dead"
    assert any(s["errors"] for s in load["submitted"]), "no client ever saw router-a stop answering"

    assert total == queued_completed + len(runs_ok) == billed


def describe_load(load: dict[str, Any], names: dict[str, str]) -> str:
    """Where the clients' calls failed, and when (seconds after the load started)."""
    def window(times: list[float]) -> str:
        return f"{min(times):.0f}-{max(times):.0f}s" if times else "-"

    failures: dict[str, list[float]] = collections.defaultdict(list)
    for s in load["submitted"]:
        for target, error, at in zip(s["via"], s["errors"], s["failed_at"]):
            failures[f"{names[target]} {error.split(': ', 1)[1]}"].append(at)
    for r in load["ran"]:
        if r["error"]:
            failures[f"sync {names[r['via']]} {r['error']}"].append(r["at"])
    submitted, ran = load["submitted"], load["ran"]
    return (f"clients: {len(submitted)} submits ({sum(1 for s in submitted if len(s['via']) > 1)} retried "
            f"on the other router, {sum(1 for s in submitted if not s['request_id'])} rejected twice), "
            f"{len(ran)} sync runs ({sum(1 for r in ran if r['request_id'])} ok); failed calls: "
            + ", ".join(f"{k} x{len(v)} at {window(v)}" for k, v in sorted(failures.items())))
