"""Postgres stopped for 10 s under load: submits during the outage are refused with UNAVAILABLE
(never accepted and lost, never a hang), sync runs keep being answered or fail cleanly, and
every accepted job completes and is billed once after Postgres is back."""
from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from genmesh.v1 import router_pb2, router_pb2_grpc
from tests.faults.conftest import FaultMesh, billed, report, struct, submit_jobs, wait_jobs_ended

pytestmark = pytest.mark.asyncio(loop_scope="session")

PG_DOWN_S = 10.0
JOBS_BEFORE = 120


async def keep_calling(mesh: FaultMesh, stop: asyncio.Event, run_ids: list[str], job_ids: list[str],
                       codes: dict[str, int]) -> None:
    """Alternating sync runs and submits, each with a 10 s deadline, until `stop`."""
    async with mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        i = 0
        while not stop.is_set():
            i += 1
            started = time.monotonic()
            try:
                if i % 2:
                    resp = await stub.Run(router_pb2.RunRequest(
                        model_id="genmesh/echo", input=struct({"prompt": "r"})), metadata=mesh.metadata, timeout=10)
                    run_ids.append(resp.request_id)
                else:
                    job = await stub.Submit(router_pb2.SubmitRequest(
                        model_id="genmesh/echo", input=struct({"prompt": f"d{i}"})), metadata=mesh.metadata,
                        timeout=10)
                    job_ids.append(job.request_id)
                codes["OK"] = codes.get("OK", 0) + 1
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
            codes["slowest_ms"] = max(codes.get("slowest_ms", 0), int((time.monotonic() - started) * 1000))
            await asyncio.sleep(0.05)


async def test_postgres_down_10s_refuses_cleanly_and_loses_nothing(fault_mesh: FaultMesh) -> None:
    mesh = fault_mesh
    await mesh.start(["router", "billing", "echo"])
    db = mesh.database_url
    jobs, refused = await submit_jobs(mesh, JOBS_BEFORE, {"num_events": 2, "delay_ms": 50})
    stop, run_ids, job_ids, codes = asyncio.Event(), [], [], {}
    caller = asyncio.create_task(keep_calling(mesh, stop, run_ids, job_ids, codes))
    await asyncio.sleep(0.5)
    await mesh.stop_postgres()
    await asyncio.sleep(PG_DOWN_S)
    await mesh.start_postgres()
    await asyncio.sleep(2.0)
    stop.set()
    await asyncio.wait_for(caller, 15)
    accepted_jobs = jobs + job_ids
    status = await wait_jobs_ended(db, accepted_jobs, timeout_s=120)
    ledger = await billed(db, accepted_jobs + run_ids, timeout_s=60)

    failures = {k: v for k, v in codes.items() if k not in ("OK", "slowest_ms")}
    report("Postgres down 10 s", jobs_accepted=len(accepted_jobs),
           jobs_completed=sum(s == "COMPLETED" for s in status.values()), runs_answered=len(run_ids),
           calls_refused=sum(failures.values()), billed=len(ledger),
           accepted=len(accepted_jobs) + len(run_ids), slowest_call_ms=codes.get("slowest_ms", 0))
    assert not refused
    assert set(failures) <= {"UNAVAILABLE"}, f"outage errors must be UNAVAILABLE, got {failures}"
    assert codes["slowest_ms"] < 10_500, "a call hung past its deadline"
    assert all(s == "COMPLETED" for s in status.values()), status
    assert len(ledger) == len(accepted_jobs) + len(run_ids) and set(ledger.values()) == {1}
