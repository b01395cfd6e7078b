"""A genmesh mesh spread over network-namespace hosts on one machine, built and torn down per test.

    infra    10.213.0.2   nats-server (JetStream), PostgreSQL, billing
    router-a 10.213.0.11  router          router-b 10.213.0.12  router
    worker-a 10.213.0.21  echo worker     worker-b 10.213.0.22  echo worker
    edge     10.213.0.31  edge (dials both routers)
    client   10.213.0.41  the load driver (tests/multihost/load.py) and the checks

Every host is a namespace with one veth to a bridge in a switch namespace of its own; nothing is
added to the root namespace. Needs root (skipped otherwise); everything made is removed at the
end, whatever happened.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from genmesh import meshtls, process
from tests.multihost import netlab
from tests.multihost.netlab import Host, Lab
from tests.multihost.servers import HostNats, HostPostgres, Service

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
ROUTER_PORT = 50051
BILLING_PORT = 50052
BILLING_HEALTH_PORT = 50053
WORKER_PORT = 50061
EDGE_PORT = 8080
PG_DIR_PREFIX = "genmesh-multihost-pg-"
TOPOLOGY = {"infra": 2, "router-a": 11, "router-b": 12, "worker-a": 21, "worker-b": 22,
            "edge": 31, "client": 41}
# As conftest's start_mesh: a silent router's jobs come back after seconds, not minutes.
MESH_ENV = {"GENMESH_HEARTBEAT_INTERVAL_S": "0.2", "GENMESH_WORKER_DEAD_AFTER_S": "2",
            "GENMESH_QUEUE_ACK_WAIT_S": "3", "GENMESH_WORKER_CAPACITY": "8",
            "GENMESH_LOG_LEVEL": "INFO", "HF_HUB_OFFLINE": "1"}


@dataclass
class LabMesh:
    lab: Lab
    tmp: Path
    api_key: str
    nats: HostNats
    postgres: HostPostgres
    services: dict[str, Service] = field(default_factory=dict)
    drivers: list[process.Process] = field(default_factory=list)

    def host(self, role: str) -> Host:
        return self.lab.hosts[role]

    @property
    def client(self) -> Host:
        return self.host("client")

    @property
    def database_url(self) -> str:
        assert self.postgres.url is not None
        return self.postgres.url

    @property
    def nats_url(self) -> str:
        assert self.nats.url is not None
        return self.nats.url

    @property
    def router_addrs(self) -> list[str]:
        return [self.services["router-a"].addr, self.services["router-b"].addr]

    @property
    def edge_url(self) -> str:
        return f"http://{self.services['edge'].addr}"

    async def on_client(self, fn: Callable[[], Awaitable[T]], timeout: float = 120.0) -> T:
        """Runs `fn` (pure-asyncio clients only) from the client host."""
        return await asyncio.to_thread(netlab.run_in, self.client.ns, fn, timeout)

    async def driver(self, *args: str, log_name: str) -> process.Process:
        """Starts tests.multihost.load on the client host; its stdout is a pipe of JSON lines."""
        stderr = (self.tmp / "logs" / f"{log_name}.log").open("ab")
        proc = await process.spawn(
            self.client.argv(sys.executable, "-m", "tests.multihost.load", *args,
                             *[a for r in self.router_addrs for a in ("--router", r)],
                             "--edge", self.edge_url),
            env={**os.environ, "GENMESH_API_KEY": self.api_key}, cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=stderr)
        stderr.close()  # the child holds its own copy
        self.drivers.append(proc)
        return proc

    def failed_services(self) -> dict[str, str]:
        """Services that exited, with the tail of their log."""
        return {n: s.tail() for n, s in self.services.items() if s.exited() is not None}

    def logs(self) -> str:
        return "\n".join(f"--- {n} (exit {s.exited()}) ---\n{s.tail(15)}" for n, s in self.services.items())


async def read_event(proc: process.Process, timeout: float) -> dict[str, Any]:
    """The next JSON line from a driver; EOF or silence past `timeout` raise."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    if not line:
        raise RuntimeError(f"load driver exited with code {await proc.wait()}")
    return json.loads(line)


async def _start_services(mesh: LabMesh) -> None:
    hosts = mesh.lab.hosts
    common = {**MESH_ENV, "GENMESH_NATS_URL": mesh.nats_url, "GENMESH_DATABASE_URL": mesh.database_url,
              "GENMESH_API_KEY": mesh.api_key, "GENMESH_SIGNING_SECRET": "multihost-signing-secret",
              "GENMESH_BILLING_ADDR": f"{hosts['infra'].addr}:{BILLING_PORT}"}

    # One mesh CA, a certificate per service, as a deployment's Secret would hold them.
    certs = meshtls.ensure(mesh.tmp / "tls", ["billing", "router", "echo", "edge"])

    def add(name: str, module: str, host: str, port: int, **env: str) -> Service:
        data_dir = mesh.tmp / "data" / name
        data_dir.mkdir(parents=True, exist_ok=True)
        svc = Service(name, module, hosts[host], port,
                      {**common, **certs[module].env(), "GENMESH_DATA_DIR": str(data_dir), **env},
                      mesh.tmp / "logs" / f"{name}.log")
        mesh.services[name] = svc
        return svc

    # Billing's port wants a mesh certificate; the driver waits on its plaintext health port.
    add("billing", "billing", "infra", BILLING_PORT, GENMESH_HEALTH_PORT=str(BILLING_HEALTH_PORT))
    add("router-a", "router", "router-a", ROUTER_PORT)
    add("router-b", "router", "router-b", ROUTER_PORT)
    for host in ("worker-a", "worker-b"):
        add(f"echo-{host[-1]}", "echo", host, WORKER_PORT,
            GENMESH_ADVERTISE_ADDR=f"{hosts[host].addr}:{WORKER_PORT}")
    # Both routers behind one gRPC target: pick_first moves to the next when one stops answering.
    edge_url = f"http://{hosts['edge'].addr}:{EDGE_PORT}"
    add("edge", "edge", "edge", EDGE_PORT, GENMESH_PUBLIC_URL=edge_url,
        GENMESH_ROUTER_ADDR=f"ipv4:{hosts['router-a'].addr}:{ROUTER_PORT},{hosts['router-b'].addr}:{ROUTER_PORT}")
    # Routers and billing migrate the database (under an advisory lock); all start together.
    await asyncio.gather(*(s.start() for s in mesh.services.values()))
    waiter = await mesh.driver("wait", "--workers", "2", "--timeout", "90",
                               "--grpc", f"{hosts['infra'].addr}:{BILLING_HEALTH_PORT}", log_name="driver-wait")
    try:
        event = await read_event(waiter, 100)
    finally:
        await process.stop(waiter, timeout=2)
    if event["event"] != "ready":
        raise RuntimeError(f"mesh not ready: {event}\n{mesh.logs()}")


@pytest_asyncio.fixture(loop_scope="session")
async def lab_mesh(tmp_path: Path) -> AsyncIterator[LabMesh]:
    """The whole mesh, one service per host as in the module docstring, ready for load."""
    try:
        netlab.check_available()
    except netlab.NetlabUnavailable as exc:
        pytest.skip(str(exc))
    if shutil.which("setpriv") is None:
        pytest.skip("util-linux setpriv is needed to run PostgreSQL unprivileged inside a namespace")
    netlab.remove_stale()
    _remove_stale_pg_dirs()
    (tmp_path / "logs").mkdir()
    lab = Lab()
    # PostgreSQL runs as `nobody`, which cannot enter pytest's mode-700 tmp dirs: its cluster
    # lives in a directory of its own, deleted at the end.
    pg_dir = Path(tempfile.mkdtemp(prefix=f"{PG_DIR_PREFIX}{os.getpid()}-"))
    pg_dir.chmod(0o755)
    mesh: LabMesh | None = None
    try:
        lab.create()
        for role, octet in TOPOLOGY.items():
            lab.add_host(role, octet)
        nats = HostNats(tmp_path / "nats", lab.hosts["infra"])
        postgres = HostPostgres(pg_dir, lab.hosts["infra"])
        mesh = LabMesh(lab, tmp_path, "gm_multihost_" + secrets.token_hex(8), nats, postgres)
        started = await asyncio.gather(nats.start(), postgres.start(), return_exceptions=True)
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        await _start_services(mesh)
        yield mesh
    finally:
        await _teardown(lab, mesh, pg_dir)


def _remove_stale_pg_dirs() -> None:
    """Database directories left by a test process that was killed before its teardown."""
    for path in Path(tempfile.gettempdir()).glob(f"{PG_DIR_PREFIX}*-*"):
        pid = path.name.removeprefix(PG_DIR_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not netlab.pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


async def _teardown(lab: Lab, mesh: LabMesh | None, pg_dir: Path) -> None:
    """Stops every process, then removes every namespace (veths and bridge with them), then the
    database directory; each step runs even when an earlier one failed."""
    problems: list[str] = []
    if mesh is not None:
        for proc in mesh.drivers:
            with contextlib.suppress(Exception):
                await process.stop(proc, timeout=2)
        results = await asyncio.gather(*(s.stop() for s in mesh.services.values()), return_exceptions=True)
        problems += [repr(r) for r in results if isinstance(r, BaseException)]
        for server in (mesh.postgres, mesh.nats):
            try:
                await server.stop()
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                problems.append(repr(exc))
    problems += lab.destroy()
    shutil.rmtree(pg_dir, ignore_errors=True)
    left = lab.leftovers()
    assert not left and not problems, f"teardown left {left}; problems: {problems}"


def wait_until(deadline: float) -> Awaitable[None]:
    return asyncio.sleep(max(0.0, deadline - time.monotonic()))
