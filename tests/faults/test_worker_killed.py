"""A worker SIGKILLed mid-stream: streaming clients get an error or their result, never a hang;
queued jobs on it are re-placed and complete; everything accepted is billed once."""
from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from genmesh.v1 import router_pb2, router_pb2_grpc
from tests.faults.conftest import (CALL_DEADLINE_S, FaultMesh, billed, report, struct, submit_jobs,
                                   wait_jobs_ended)

pytestmark = pytest.mark.asyncio(loop_scope="session")

STREAMS = 8
JOBS = 20
EVENTS, DELAY_MS = 40, 50  # a 2 s stream


async def stream_once(mesh: FaultMesh, i: int, started: asyncio.Event, counts: dict[str, int]
                      ) -> tuple[str, str]:
    """(request id, 'completed' or the error code name) of one Router.Stream call."""
    request_id = ""
    async with mesh.channel() as ch:
        call = router_pb2_grpc.RouterStub(ch).Stream(router_pb2.StreamRequest(
            model_id="genmesh/echo", input=struct({"prompt": f"s{i}", "num_events": EVENTS,
                                                    "delay_ms": DELAY_MS})),
            metadata=mesh.metadata, timeout=CALL_DEADLINE_S)
        try:
            async for event in call:
                request_id = event.request_id
                if event.WhichOneof("event") == "partial":
                    counts["partials"] += 1
                    if counts["partials"] >= STREAMS * 5:
                        started.set()
                if event.WhichOneof("event") == "result":
                    return request_id, "completed"
            return request_id, "ended without a result"
        except grpc.aio.AioRpcError as exc:
            return request_id, exc.code().name


async def test_worker_sigkilled_mid_stream_fails_streams_cleanly_and_replaces_queued_jobs(
        fault_mesh: FaultMesh) -> None:
    mesh = fault_mesh
    await mesh.start(["router", "billing", "echo"])
    await mesh.add_worker("echo")
    await mesh.wait_for_workers(["echo"], count=2)
    jobs, refused = await submit_jobs(mesh, JOBS, {"num_events": EVENTS, "delay_ms": DELAY_MS})
    started = asyncio.Event()
    counts = {"partials": 0}
    streams = [asyncio.create_task(stream_once(mesh, i, started, counts)) for i in range(STREAMS)]
    await asyncio.wait_for(started.wait(), CALL_DEADLINE_S)
    await mesh.kill("echo")  # SIGKILL one of the two, mid-stream
    killed_at = time.monotonic()
    outcomes = await asyncio.wait_for(asyncio.gather(*streams), CALL_DEADLINE_S + 5)
    errored_within = time.monotonic() - killed_at
    # New work after the kill goes to the surviving worker.
    after = [await stream_once(mesh, 100 + i, asyncio.Event(), {"partials": 0}) for i in range(2)]

    status = await wait_jobs_ended(mesh.database_url, jobs)
    stream_ids = [rid for rid, _ in outcomes + after if rid]
    accepted = jobs + stream_ids
    ledger = await billed(mesh.database_url, accepted)

    kinds = [o for _, o in outcomes]
    report("worker SIGKILL mid-stream",
           streams_accepted=len(stream_ids), streams_completed=sum(o == "completed" for _, o in outcomes + after),
           streams_failed_cleanly=sum(o == "UNAVAILABLE" for _, o in outcomes),
           jobs_accepted=len(jobs), jobs_completed=sum(s == "COMPLETED" for s in status.values()),
           billed=len(ledger), accepted=len(accepted))
    assert not refused
    assert len(stream_ids) == STREAMS + 2, "every stream got at least its first event"
    # Each stream on the killed worker ends with UNAVAILABLE (it had sent partial output, so it
    # is not silently re-run); the others complete. Nobody hangs or sees another code.
    assert set(kinds) <= {"completed", "UNAVAILABLE"}, kinds
    assert "UNAVAILABLE" in kinds, "no stream was on the killed worker"
    assert errored_within < 10, f"streams took {errored_within:.1f}s to end after the kill"
    assert [o for _, o in after] == ["completed", "completed"]
    assert all(s == "COMPLETED" for s in status.values()), status
    assert len(ledger) == len(accepted) and set(ledger.values()) == {1}, "billed exactly once each"
