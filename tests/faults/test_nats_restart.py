"""NATS restarted (same data directory, same port) while jobs are queued and sync calls run:
every accepted job completes, every answered call and job is billed once, and no client hangs:
calls during the outage either succeed or fail with UNAVAILABLE before their deadline."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from tests.faults.conftest import FaultMesh, billed, keep_calling, report, submit_jobs, wait_jobs_ended

pytestmark = pytest.mark.asyncio(loop_scope="session")

JOBS_BEFORE, JOBS_DURING = 150, 40
NATS_DOWN_S = 1.5



async def test_nats_restart_loses_no_job_and_no_usage_record(fault_mesh: FaultMesh) -> None:
    mesh = fault_mesh
    await mesh.start(["router", "billing", "echo"])
    db = mesh.database_url
    jobs, refused = await submit_jobs(mesh, JOBS_BEFORE, {"num_events": 2, "delay_ms": 30})
    stop, run_ids, codes = asyncio.Event(), [], {}
    runner = asyncio.create_task(keep_calling(mesh, stop, run_ids, [], codes, pause_s=0.02))
    await asyncio.sleep(0.5)
    restart = asyncio.create_task(mesh.restart_nats(NATS_DOWN_S))
    await asyncio.sleep(0.2)
    # Submitting while NATS is down: accepted only once enqueued, else UNAVAILABLE.
    during, refused_during = await submit_jobs(mesh, JOBS_DURING, {"num_events": 1}, parallel=10)
    await restart
    after, refused_after = await submit_jobs(mesh, 20, {"num_events": 1})
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.wait_for(runner, 15)
    accepted_jobs = jobs + during + after
    status = await wait_jobs_ended(db, accepted_jobs, timeout_s=120)
    ledger = await billed(db, accepted_jobs + run_ids, timeout_s=60)

    report("NATS restart", jobs_accepted=len(accepted_jobs),
           jobs_refused=len(refused) + len(refused_during) + len(refused_after),
           jobs_completed=sum(s == "COMPLETED" for s in status.values()),
           runs_answered=len(run_ids), runs_failed=sum(v for k, v in codes.items() if k not in ("OK", "slowest_ms")),
           billed=len(ledger), accepted=len(accepted_jobs) + len(run_ids))
    assert not refused and not refused_after
    assert set(refused_during) <= {grpc.StatusCode.UNAVAILABLE}, refused_during
    assert set(codes) <= {"OK", "UNAVAILABLE", "slowest_ms"}, codes
    assert codes["slowest_ms"] < 10_500, "a sync call hung past its deadline"
    assert all(s == "COMPLETED" for s in status.values()), status
    assert len(ledger) == len(accepted_jobs) + len(run_ids) and set(ledger.values()) == {1}
