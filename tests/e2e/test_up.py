"""`genmesh up` as a user runs it: embedded infrastructure, every service healthy, echo over REST
and gRPC, and no process left behind after SIGTERM or a SIGKILL of the parent."""
from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import psutil
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genmesh.up import Supervisor, available_services, free_port
from genmesh.v1 import router_pb2, router_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="session")
READY_TIMEOUT_S = 300


class Up:
    def __init__(self, data_dir: Path, models_dir: Path, services: str | None = None) -> None:
        self.edge_port, self.grpc_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENMESH_")}
        env.update(GENMESH_MODELS_DIR=str(models_dir), GENMESH_LOG_LEVEL="INFO")
        argv = [sys.executable, "-m", "genmesh.cli", "up", "--data-dir", str(data_dir),
                "--edge-port", str(self.edge_port), "--grpc-port", str(self.grpc_port)]
        if services:
            argv += ["--services", services]
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=open(data_dir.parent / "up.err", "wb"),
                                     text=True)
        self.data_dir = data_dir

    def wait_ready(self) -> tuple[str, str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        ready = key = ""
        while time.monotonic() < deadline and not (ready and key):
            line = self.proc.stdout.readline()
            if not line:
                err = (self.data_dir.parent / "up.err").read_text()[-3000:]
                raise AssertionError(f"genmesh up exited with {self.proc.poll()}:\n{err}")
            if line.startswith("genmesh ready:"):
                ready = line.strip()
            elif line.startswith("api key:"):
                key = line.split(":", 1)[1].strip()
        assert ready and key, "no ready line"
        return ready, key

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_gone(procs: list[psutil.Process], timeout: float = 60.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while alive(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(procs)


async def joined_workers(grpc_port: int, key: str, expected: set[str]) -> router_pb2.ListWorkersResponse:
    """The router's workers once `expected` services have joined (bounded wait): the ready line
    comes once the API is up, and model workers join as they finish loading."""
    deadline = time.monotonic() + 300
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
        while True:
            workers = await router_pb2_grpc.RouterStub(ch).ListWorkers(
                router_pb2.ListWorkersRequest(), metadata=(("authorization", f"Bearer {key}"),))
            if expected <= {w.service for w in workers.workers} or time.monotonic() > deadline:
                return workers
            await asyncio.sleep(0.5)


async def test_up_serves_everything_then_stops_cleanly(tmp_path: Path, models_dir: Path) -> None:
    up = Up(tmp_path / "data", models_dir)
    try:
        ready, key = await asyncio.to_thread(up.wait_ready)
        assert ready == f"genmesh ready: http://127.0.0.1:{up.edge_port} grpc=127.0.0.1:{up.grpc_port}"
        expected = {s for s in available_services() if s not in ("router", "billing", "edge")}
        workers = await joined_workers(up.grpc_port, key, expected)
        assert expected <= {w.service for w in workers.workers}
        # Every service answers its health check.
        ports = {}
        for name in available_services():
            log = (tmp_path / "data" / "logs" / f"{name}.log")
            assert log.exists(), f"{name} did not start"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{up.edge_port}") as http:
            assert (await http.get("/health")).json() == {"status": "ok"}
            resp = await http.post("/genmesh/echo", json={"prompt": "hi"}, headers={"Authorization": f"Key {key}"})
            assert resp.status_code == 200 and resp.json()["prompt"] == "hi"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{up.grpc_port}") as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="genmesh.v1.Router"))
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            s = struct_pb2.Struct()
            s.update({"prompt": "grpc"})
            out = await router_pb2_grpc.RouterStub(ch).Run(router_pb2.RunRequest(model_id="genmesh/echo", input=s),
                                                           metadata=(("authorization", f"Bearer {key}"),))
            assert out.output["prompt"] == "grpc"
        # The mesh is mutual TLS: a worker's own port refuses a plaintext caller.
        tls = tmp_path / "data" / "tls"
        assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in tls.glob("*.key"))
        async with grpc.aio.insecure_channel(workers.workers[0].address) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        ca = (tls / "ca.crt").read_bytes()
        children = up.descendants()
        assert len(children) >= len(available_services()) + 2  # services + nats + postgres
        up.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(up.proc.wait, 90) == 0
        assert not await asyncio.to_thread(wait_gone, children)
        # A second `up` on the same data directory reuses its data (the same key works).
        again = Up(tmp_path / "data", models_dir, services="router,echo,edge")
        try:
            _, key2 = await asyncio.to_thread(again.wait_ready)
            assert key2 == key
            assert (tls / "ca.crt").read_bytes() == ca  # and the same CA
        finally:
            again.proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(again.proc.wait, 90)
    finally:
        if up.proc.poll() is None:
            up.proc.kill()


async def test_sigkill_of_up_leaves_no_process(tmp_path: Path, models_dir: Path) -> None:
    up = Up(tmp_path / "data", models_dir, services="router,echo,edge")
    try:
        await asyncio.to_thread(up.wait_ready)
        children = up.descendants()
        names = " ".join(" ".join(p.cmdline()) for p in children)
        assert "nats-server" in names and "postgres" in names and "genmesh.services.router" in names
        up.proc.kill()
        up.proc.wait()
        assert not await asyncio.to_thread(wait_gone, children), "children outlived a SIGKILLed genmesh up"
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
