"""A private mesh for benchmarks: embedded NATS and Postgres in a scratch directory and the
chosen services as child processes (the same `Supervisor` that `genmesh up` uses)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import asyncpg
import grpc
import psutil

from genmesh.embedded import EmbeddedNats, EmbeddedPostgres
from genmesh.up import Supervisor
from genmesh.v1 import router_pb2, router_pb2_grpc


@dataclass
class BenchMesh:
    supervisor: Supervisor
    api_key: str
    database_url: str
    nats_url: str
    env: dict[str, str]
    infra_pids: dict[str, int]

    def addr(self, service: str) -> str:
        return f"127.0.0.1:{self.supervisor.ports[service]}"

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.supervisor.ports['edge']}"

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)

    def tls_spec(self, service: str) -> dict[str, str] | None:
        """For a load generator calling `service` directly: the router's certificate (workers
        answer only the router) and the name to verify; None on the public ports."""
        if not self.supervisor.tls or service in ("router", "edge"):
            return None
        cert = self.supervisor.certs["router"]
        return {"ca": str(cert.ca_file), "cert": str(cert.cert_file), "key": str(cert.key_file),
                "service": service}

    def pid(self, service: str) -> int:
        proc = self.supervisor.children[service].proc
        assert proc is not None
        return proc.pid


async def wait_for_worker(mesh: BenchMesh, service: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(mesh.addr("router")) as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        while True:
            resp = await stub.ListWorkers(router_pb2.ListWorkersRequest(service=service),
                                          metadata=mesh.metadata, timeout=5)
            if resp.workers:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {service} worker registered after {timeout:.0f}s")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def bench_mesh(workdir: Path, services: list[str], extra_env: dict[str, str] | None = None,
                     *, keep_data: bool = False, tls: bool = True) -> AsyncIterator[BenchMesh]:
    """Infrastructure and services under `workdir`; everything is stopped on exit, and the
    Postgres cluster removed unless `keep_data` (as root it lives outside `workdir`). `tls=False`
    runs the services' own links in plaintext, to measure what mutual TLS costs."""
    workdir.mkdir(parents=True, exist_ok=True)
    nats = EmbeddedNats(workdir / "nats")
    pg = EmbeddedPostgres(workdir / "postgres")
    sup: Supervisor | None = None
    try:
        nats_url = await nats.start()
        db_url = await pg.start()
        api_key = "gm_bench_" + secrets.token_hex(12)
        env = {"GENMESH_NATS_URL": nats_url, "GENMESH_DATABASE_URL": db_url, "GENMESH_API_KEY": api_key,
               "GENMESH_DATA_DIR": str(workdir), "GENMESH_SIGNING_SECRET": "bench-signing-secret",
               "GENMESH_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1", **(extra_env or {})}
        sup = Supervisor(env=env, log_dir=workdir / "logs", services=services, tls=tls)
        await sup.start()
        mesh = BenchMesh(sup, api_key, db_url, nats_url, env,
                         {"nats": nats.pid or 0, "postgres": pg.pid or 0})
        for service in services:
            if service not in ("router", "billing", "edge") and "router" in services:
                await wait_for_worker(mesh, service)
        yield mesh
    finally:
        if sup is not None:
            await sup.stop()
        await pg.stop()
        await nats.stop()
        if not keep_data and pg.pgdata is not None and not pg.pgdata.is_relative_to(workdir):
            shutil.rmtree(pg.pgdata, ignore_errors=True)


async def db_fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children (Postgres serves each connection in a child)."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def mesh_pids(mesh: BenchMesh) -> dict[str, int]:
    return {**{name: mesh.pid(name) for name in mesh.supervisor.children}, **mesh.infra_pids}
