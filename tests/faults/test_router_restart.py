"""The router killed (SIGKILL) and restarted with jobs queued and running: every accepted job
completes and is billed once; clients polling Status meanwhile get answers or UNAVAILABLE, never
a hang."""
from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from genmesh.v1 import router_pb2, router_pb2_grpc
from tests.faults.conftest import FaultMesh, billed, jobs_by_status, report, submit_jobs, wait_jobs_ended

pytestmark = pytest.mark.asyncio(loop_scope="session")

JOBS = 200


async def poll_until(mesh: FaultMesh, request_id: str, stop: asyncio.Event, seen: dict[str, int]) -> None:
    """A FAL-style poller (every 0.1 s, each call with a deadline) across the restart."""
    async with mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        while not stop.is_set():
            started = time.monotonic()
            try:
                await stub.Status(router_pb2.StatusRequest(request_id=request_id), metadata=mesh.metadata,
                                  timeout=5)
                seen["ok"] += 1
            except grpc.aio.AioRpcError as exc:
                seen[exc.code().name] = seen.get(exc.code().name, 0) + 1
            seen["slowest_ms"] = max(seen["slowest_ms"], int((time.monotonic() - started) * 1000))
            await asyncio.sleep(0.1)


async def test_router_killed_and_restarted_with_jobs_queued_completes_and_bills_each_once(
        fault_mesh: FaultMesh) -> None:
    mesh = fault_mesh
    await mesh.start(["router", "billing", "echo"])
    db = mesh.database_url
    jobs, refused = await submit_jobs(mesh, JOBS, {"num_events": 2, "delay_ms": 20})
    while sum(s == "COMPLETED" for s in (await jobs_by_status(db, jobs)).values()) < JOBS // 4:
        await asyncio.sleep(0.05)
    stop, seen = asyncio.Event(), {"ok": 0, "slowest_ms": 0}
    pollers = [asyncio.create_task(poll_until(mesh, rid, stop, seen)) for rid in jobs[-5:]]
    await asyncio.sleep(0.3)
    await mesh.kill("router")  # SIGKILL with jobs queued and in flight
    before_restart = dict(await jobs_by_status(db, jobs))
    await asyncio.sleep(1.0)
    await mesh.start_service("router")
    status = await wait_jobs_ended(db, jobs, timeout_s=120)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*pollers), 10)
    ledger = await billed(db, jobs)

    report("router SIGKILL + restart", accepted=len(jobs), refused=len(refused),
           queued_at_kill=sum(s == "IN_QUEUE" for s in before_restart.values()),
           running_at_kill=sum(s == "IN_PROGRESS" for s in before_restart.values()),
           completed=sum(s == "COMPLETED" for s in status.values()), billed=len(ledger),
           polls_ok=seen["ok"], polls_unavailable=seen.get("UNAVAILABLE", 0), slowest_poll_ms=seen["slowest_ms"])
    assert not refused
    assert sum(s == "IN_QUEUE" for s in before_restart.values()) > 0, "nothing was queued at the kill"
    assert all(s == "COMPLETED" for s in status.values()), status
    assert len(ledger) == len(jobs) and set(ledger.values()) == {1}
    assert set(seen) <= {"ok", "UNAVAILABLE", "slowest_ms"}, seen
    assert seen["slowest_ms"] <= 5_500, "a Status poll hung past its deadline"
