"""Postgres stopped for 10 s under load: submits during the outage are refused with UNAVAILABLE
(never accepted and lost, never a hang), sync runs keep being answered or fail cleanly, and
every accepted job completes and is billed once after Postgres is back."""
from __future__ import annotations

import asyncio

import pytest

from tests.faults.conftest import FaultMesh, billed, keep_calling, report, submit_jobs, wait_jobs_ended

pytestmark = pytest.mark.asyncio(loop_scope="session")

PG_DOWN_S = 10.0
JOBS_BEFORE = 120



async def test_postgres_down_10s_refuses_cleanly_and_loses_nothing(fault_mesh: FaultMesh) -> None:
    mesh = fault_mesh
    await mesh.start(["router", "billing", "echo"])
    db = mesh.database_url
    jobs, refused = await submit_jobs(mesh, JOBS_BEFORE, {"num_events": 2, "delay_ms": 50})
    stop, run_ids, job_ids, codes = asyncio.Event(), [], [], {}
    caller = asyncio.create_task(keep_calling(mesh, stop, run_ids, job_ids, codes, submit_every=2))
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
