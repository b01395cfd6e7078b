"""Nothing accepted is lost: router restarts, killed workers and two routers sharing the queue."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest
from google.protobuf import struct_pb2

from genmesh.up import Supervisor
from genmesh.v1 import echo_pb2, router_pb2, router_pb2_grpc
from tests.conftest import Infra, Mesh, start_mesh, wait_for_workers

pytestmark = pytest.mark.asyncio(loop_scope="session")


def struct(data: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


async def submit_many(mesh: Mesh, n: int, payload: dict, addr: str | None = None) -> list[str]:
    import grpc

    async with grpc.aio.insecure_channel(addr or mesh.router_addr) as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        ids = []
        for i in range(0, n, 50):
            batch = await asyncio.gather(*(stub.Submit(router_pb2.SubmitRequest(
                model_id="genmesh/echo", input=struct({**payload, "prompt": f"job-{i + j}"})),
                metadata=mesh.metadata) for j in range(min(50, n - i))))
            ids += [r.request_id for r in batch]
        return ids


async def wait_all_ended(db_url: str, ids: list[str], timeout: float = 180.0) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            rows = await conn.fetch("SELECT id, status, attempts, claimed_by, output, result, result_type"
                                    " FROM jobs WHERE id = ANY($1::text[])", ids)
            ended = [r for r in rows if r["status"] in ("COMPLETED", "FAILED", "CANCELLED")]
            if len(ended) == len(ids):
                return rows
            assert time.monotonic() < deadline, f"{len(ended)}/{len(ids)} ended"
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


def stored_echo(row: asyncpg.Record) -> echo_pb2.EchoResult:
    """A finished echo job's result as the router stores it: the typed message (migration 0010)."""
    assert row["result_type"] == "genmesh.v1.EchoResult" and row["output"] is None, dict(row)
    return echo_pb2.EchoResult.FromString(row["result"])


async def test_router_restarted_with_200_jobs_queued_completes_all_once(infra: Infra, tmp_path: Path) -> None:
    mesh = await start_mesh(infra, tmp_path, ["router"])
    try:
        ids = await submit_many(mesh, 200, {"num_events": 1})
        sup = mesh.supervisor
        await sup.stop_child("router")
        await sup.start_child("router")
        await sup.wait_healthy("router")
        await sup.start_child("echo")
        await sup.wait_healthy("echo")
        rows = await wait_all_ended(mesh.env["GENMESH_DATABASE_URL"], ids)
        print(f"\naccepted={len(ids)} completed={sum(r['status'] == 'COMPLETED' for r in rows)}")
        assert all(r["status"] == "COMPLETED" for r in rows)
        assert all(r["attempts"] == 1 for r in rows), "a job ran twice"
        assert {stored_echo(r).prompt for r in rows} == {f"job-{i}" for i in range(200)}
    finally:
        await mesh.supervisor.stop()


async def test_worker_killed_mid_job_is_replaced_and_the_job_completes(infra: Infra, tmp_path: Path) -> None:
    mesh = await start_mesh(infra, tmp_path, ["router", "echo"])
    try:
        [rid] = await submit_many(mesh, 1, {"num_events": 30, "delay_ms": 100})
        conn = await asyncpg.connect(mesh.env["GENMESH_DATABASE_URL"])
        deadline = time.monotonic() + 30
        while (await conn.fetchval("SELECT progress->>'step' FROM jobs WHERE id=$1", rid)) in (None, "1"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await conn.close()
        echo = mesh.supervisor.children["echo"]
        echo.proc.kill()  # SIGKILL mid-job
        await echo.proc.wait()
        await mesh.supervisor.start_child("echo")
        [row] = await wait_all_ended(mesh.env["GENMESH_DATABASE_URL"], [rid], timeout=60)
        assert row["status"] == "COMPLETED"
        assert stored_echo(row).num_events == 30
    finally:
        await mesh.supervisor.stop()


async def test_two_routers_share_500_jobs_each_dispatched_exactly_once(infra: Infra, tmp_path: Path) -> None:
    mesh = await start_mesh(infra, tmp_path / "a", ["router", "echo"])
    second = Supervisor(env=dict(mesh.env), log_dir=tmp_path / "b", services=["router"])
    try:
        await second.start()
        await wait_for_workers(second, ["echo"])
        other = f"127.0.0.1:{second.ports['router']}"
        ids = (await submit_many(mesh, 250, {}) + await submit_many(mesh, 250, {}, addr=other))
        rows = await wait_all_ended(mesh.env["GENMESH_DATABASE_URL"], ids)
        print(f"\naccepted={len(ids)} completed={sum(r['status'] == 'COMPLETED' for r in rows)} "
              f"routers={sorted({r['claimed_by'] for r in rows})}")
        assert len(rows) == 500
        assert all(r["status"] == "COMPLETED" and r["attempts"] == 1 for r in rows)
        assert len({r["claimed_by"] for r in rows}) == 2, "both routers should have dispatched"
    finally:
        await second.stop()
        await mesh.supervisor.stop()
