"""Fault-injection fixtures. Each test gets a PRIVATE NATS and Postgres (these tests stop and
restart them, so the session's shared `infra` must not be used) and a mesh on them, all owned by
a controller process (see controller.py for why), plus the counts every fault test reports:
accepted / completed / billed."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

import asyncpg
import grpc
import pytest_asyncio
from google.protobuf import struct_pb2

from genmesh.v1 import router_pb2, router_pb2_grpc
from tests.conftest import ADMIN_KEY

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
# Every client call in the fault suite has a deadline: a hang fails the test, it never stalls it.
CALL_DEADLINE_S = 30.0
CONTROL_TIMEOUT_S = 120.0
MESH_ENV = {"GENMESH_API_KEY": ADMIN_KEY, "GENMESH_SIGNING_SECRET": "test-signing-secret",
            "GENMESH_HEARTBEAT_INTERVAL_S": "0.2", "GENMESH_WORKER_DEAD_AFTER_S": "2",
            "GENMESH_QUEUE_ACK_WAIT_S": "3", "HF_HUB_OFFLINE": "1"}


class FaultMesh:
    """The test's handle on the controller process and the mesh it runs."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.info: dict[str, Any] = {}

    async def _call(self, command: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps({"command": command, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), CONTROL_TIMEOUT_S)
        if not line:
            raise RuntimeError(f"fault controller exited during {command}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise RuntimeError(f"fault controller: {command} failed: {answer['error']}")
        return answer["result"]

    async def start(self, services: list[str], extra_env: dict[str, str] | None = None) -> None:
        self.info = await self._call("start", services=services, env={**MESH_ENV, **(extra_env or {})})
        await self.wait_for_workers([s for s in services if s not in ("router", "billing", "edge")])

    async def add_worker(self, service: str = "echo") -> None:
        await self._call("add_worker", service=service)

    async def kill(self, service: str, sig: int = signal.SIGKILL) -> None:
        await self._call("kill", service=service, sig=int(sig))

    async def start_service(self, service: str) -> None:
        await self._call("start_service", service=service)

    async def restart_nats(self, down_s: float) -> None:
        await self._call("restart_nats", down_s=down_s)

    async def stop_postgres(self) -> None:
        await self._call("stop_postgres")

    async def start_postgres(self) -> None:
        await self._call("start_postgres")

    @property
    def database_url(self) -> str:
        return self.info["database_url"]

    @property
    def router_addr(self) -> str:
        return f"127.0.0.1:{self.info['ports']['router']}"

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {ADMIN_KEY}"),)

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.router_addr)

    async def wait_for_workers(self, services: list[str], count: int = 1, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with self.channel() as ch:
            stub = router_pb2_grpc.RouterStub(ch)
            while True:
                resp = await stub.ListWorkers(router_pb2.ListWorkersRequest(), metadata=self.metadata,
                                              timeout=10)
                have = [w.service for w in resp.workers]
                if all(have.count(s) >= count for s in services):
                    return
                assert time.monotonic() < deadline, f"workers {services} x{count} not registered: {have}"
                await asyncio.sleep(0.05)


@pytest_asyncio.fixture(loop_scope="session")
async def fault_mesh(tmp_path: Path) -> AsyncIterator[FaultMesh]:
    """A controller process for this test; call `await fault_mesh.start([...services])`."""
    env = {**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = open(tmp_path / "controller.log", "wb")  # noqa: SIM115 - closed below
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.faults.controller", str(tmp_path), cwd=ROOT, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log)
    mesh = FaultMesh(proc)
    try:
        yield mesh
    finally:
        try:
            await asyncio.wait_for(mesh._call("shutdown"), 90)
        except Exception:  # noqa: BLE001 - still make sure it is gone
            pass
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        log.close()


# --- clients ------------------------------------------------------------------------------------

def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


async def submit_jobs(mesh: FaultMesh, n: int, payload: dict[str, Any], *, parallel: int = 25,
                      deadline_s: float = CALL_DEADLINE_S) -> tuple[list[str], list[grpc.StatusCode]]:
    """(accepted request ids, error codes of refused submits); every submit has a deadline."""
    accepted: list[str] = []
    refused: list[grpc.StatusCode] = []
    async with mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)

        async def one(i: int) -> None:
            try:
                resp = await stub.Submit(router_pb2.SubmitRequest(
                    model_id="genmesh/echo", input=struct({**payload, "prompt": f"job-{i}"})),
                    metadata=mesh.metadata, timeout=deadline_s)
                accepted.append(resp.request_id)
            except grpc.aio.AioRpcError as exc:
                refused.append(exc.code())

        for start in range(0, n, parallel):
            await asyncio.gather(*(one(i) for i in range(start, min(n, start + parallel))))
    return accepted, refused


async def jobs_by_status(db_url: str, ids: Iterable[str]) -> dict[str, str]:
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        rows = await conn.fetch("SELECT id, status FROM jobs WHERE id = ANY($1::text[])", list(ids))
    finally:
        await conn.close()
    return {r["id"]: r["status"] for r in rows}


async def wait_jobs_ended(db_url: str, ids: list[str], timeout_s: float = 90.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        status = await jobs_by_status(db_url, ids)
        if len(status) == len(ids) and all(s in TERMINAL for s in status.values()):
            return status
        if time.monotonic() > deadline:
            waiting = {s: sum(1 for v in status.values() if v == s) for s in set(status.values())}
            raise AssertionError(f"jobs not ended after {timeout_s:.0f}s: {waiting}, "
                                 f"{len(ids) - len(status)} missing")
        await asyncio.sleep(0.25)


async def billed(db_url: str, ids: list[str], timeout_s: float = 60.0) -> dict[str, int]:
    """Ledger rows per request id once billing caught up (or after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        conn = await asyncpg.connect(db_url, timeout=10)
        try:
            rows = await conn.fetch("SELECT request_id, count(*) AS n FROM ledger"
                                    " WHERE request_id = ANY($1::text[]) GROUP BY request_id", ids)
        finally:
            await conn.close()
        counts = {r["request_id"]: r["n"] for r in rows}
        if len(counts) >= len(set(ids)) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.25)


def report(test: str, **counts: int) -> str:
    line = f"[fault] {test}: " + " ".join(f"{k}={v}" for k, v in counts.items())
    print("\n" + line)
    return line


async def keep_calling(mesh: FaultMesh, stop: asyncio.Event, run_ids: list[str], job_ids: list[str],
                       codes: dict[str, int], *, submit_every: int = 0, pause_s: float = 0.05) -> None:
    """Sync runs (every `submit_every`-th call a submit instead), each with a 10 s deadline, until
    `stop`; counts outcomes by status code and records the slowest call in `codes`."""
    async with mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        i = 0
        while not stop.is_set():
            i += 1
            started = time.monotonic()
            try:
                if submit_every and i % submit_every == 0:
                    job = await stub.Submit(router_pb2.SubmitRequest(
                        model_id="genmesh/echo", input=struct({"prompt": f"d{i}"})), metadata=mesh.metadata,
                        timeout=10)
                    job_ids.append(job.request_id)
                else:
                    resp = await stub.Run(router_pb2.RunRequest(
                        model_id="genmesh/echo", input=struct({"prompt": "r"})), metadata=mesh.metadata, timeout=10)
                    run_ids.append(resp.request_id)
                codes["OK"] = codes.get("OK", 0) + 1
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
            codes["slowest_ms"] = max(codes.get("slowest_ms", 0), int((time.monotonic() - started) * 1000))
            await asyncio.sleep(pause_s)
