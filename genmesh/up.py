"""`genmesh up`: the whole mesh on one machine.

Starts embedded NATS and Postgres unless external URLs are configured, builds the tiny models on
first run, starts every service as a supervised child process (restarting one that crashes),
waits for health, prints the ready line, and on Ctrl-C/SIGTERM stops everything it started.
The same `Supervisor` starts partial meshes for tests and benchmarks.

Every mesh it starts is mutual TLS: a CA and one certificate per service (and one for itself,
to ask children for their health) under `<data_dir>/tls`, made once and reused.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Collection

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genmesh import blobstore, meshtls, process
from genmesh.retry import Backoff
from genmesh.settings import Settings

log = logging.getLogger("genmesh.up")

GRPC_SERVICES = ("router", "billing", "echo", "imagegen", "videogen", "audio", "llm", "apps")
ALL_SERVICES = (*GRPC_SERVICES, "edge")
# The supervisor's own certificate name: it may ask any child for its health, nothing more.
SUPERVISOR = "supervisor"
HEALTH_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available_services() -> list[str]:
    """Services whose package exists in this installation."""
    import importlib.util

    found = []
    for name in ALL_SERVICES:
        try:
            if importlib.util.find_spec(f"genmesh.services.{name}.__main__") is not None:
                found.append(name)
        except ModuleNotFoundError:
            pass
    return found


@dataclass
class Child:
    name: str
    port: int
    proc: asyncio.subprocess.Process | None = None
    log_file: IO[bytes] | None = None
    restarts: int = 0
    started: float = 0.0
    # A child that keeps crashing soon after starting waits longer each time (1 s up to 10 s).
    backoff: Backoff = field(default_factory=lambda: Backoff(1.0, maximum=10.0))


@dataclass
class Supervisor:
    """Runs a set of genmesh services as child processes with one shared environment."""

    env: dict[str, str]
    log_dir: Path
    services: list[str]
    ports: dict[str, int] = field(default_factory=dict)
    children: dict[str, Child] = field(default_factory=dict)
    stopping: bool = False
    # Run after the children stop (e.g. infrastructure started for this mesh alone).
    cleanups: list[Any] = field(default_factory=list)
    # The mesh's CA and certificates; default <GENMESH_DATA_DIR>/tls (shared by every
    # supervisor of one data directory, so their services trust each other).
    tls_dir: Path | None = None
    certs: dict[str, meshtls.ServiceCert] = field(default_factory=dict)
    # False: a plaintext mesh (GENMESH_INSECURE_MESH), only to measure what mutual TLS costs.
    tls: bool = True
    # Health waits of the services started after `start(ready_with=...)` returned.
    joining: dict[str, "asyncio.Task[None]"] = field(default_factory=dict)
    _health_credentials: meshtls.MeshCredentials | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        for name in self.services:
            self.ports.setdefault(name, free_port())
        if self.tls_dir is None:
            data_dir = self.env.get("GENMESH_DATA_DIR") or os.environ.get("GENMESH_DATA_DIR")
            self.tls_dir = Path(data_dir).expanduser() / "tls" if data_dir else self.log_dir / "tls"
        if self.tls:
            self.certs = meshtls.ensure(self.tls_dir, [*ALL_SERVICES, SUPERVISOR])
            mine = self.certs[SUPERVISOR]
            self._health_credentials = meshtls.MeshCredentials.from_files(mine.ca_file, mine.cert_file, mine.key_file)
        else:
            self.env["GENMESH_INSECURE_MESH"] = "1"
        self.env.setdefault("GENMESH_ROUTER_ADDR", f"127.0.0.1:{self.ports.get('router', 0)}")
        self.env.setdefault("GENMESH_BILLING_ADDR", f"127.0.0.1:{self.ports.get('billing', 0)}")
        if "edge" in self.ports:
            self.env.setdefault("GENMESH_EDGE_PORT", str(self.ports["edge"]))
            self.env.setdefault("GENMESH_PUBLIC_URL", f"http://127.0.0.1:{self.ports['edge']}")
        self.log_dir.mkdir(parents=True, exist_ok=True)

    async def start_child(self, name: str) -> Child:
        if name not in self.ports:
            self.ports[name] = free_port()
        child = self.children.get(name) or Child(name, self.ports[name])
        tls_env: dict[str, str] = {}
        if self.tls:
            cert = self.certs.get(name) or meshtls.ensure(self.tls_dir, [name])[name]  # type: ignore[arg-type]
            tls_env = cert.env()
        env = {**os.environ, **self.env, **tls_env, "GENMESH_PORT": str(child.port)}
        if child.log_file is None:
            child.log_file = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the child
        child.proc = await process.spawn([sys.executable, "-m", f"genmesh.services.{name}"], env=env,
                                         stdout=child.log_file, stderr=child.log_file)
        child.started = time.monotonic()
        self.children[name] = child
        return child

    async def start(self, order: list[str] | None = None, *,
                    ready_with: Collection[str] | None = None) -> None:
        """Starts services (infrastructure-facing ones first) and waits until all are healthy.

        With `ready_with`, returns once those are healthy: they start (and load) first, alone on
        the CPU; every other service is started then, and `self.joining` waits for its health
        (model workers can take many seconds to import their libraries and load)."""
        first = [s for s in ("router", "billing") if s in self.services]
        rest = [s for s in self.services if s not in first]
        core = rest if ready_with is None else [s for s in rest if s in ready_with]
        later = [s for s in rest if s not in core]
        if ready_with is not None:
            # The API's services need nothing from each other to start (the edge dials the
            # router lazily): they import and connect side by side, and the ready line waits
            # for the slowest of them, not for their sum.
            first, core = first + core, []
        for name in first:
            await self.start_child(name)
        await asyncio.gather(*(self.wait_healthy(n) for n in first))
        for name in core:
            await self.start_child(name)
        await asyncio.gather(*(self.wait_healthy(n) for n in core))
        for name in later:
            await self.start_child(name)
        self.joining = {name: asyncio.create_task(self.wait_healthy(name)) for name in later}

    async def wait_healthy(self, name: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
        child = self.children[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.proc is not None and child.proc.returncode is not None:
                raise RuntimeError(f"{name} exited with code {child.proc.returncode}; see "
                                   f"{self.log_dir / (name + '.log')}:\n{self.tail(name)}")
            if await self.healthy(name):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{name} not healthy after {timeout:.0f}s; see {self.log_dir / (name + '.log')}")

    async def healthy(self, name: str) -> bool:
        port = self.ports[name]
        if name == "edge":
            try:
                async with httpx.AsyncClient(timeout=1.0) as client:
                    return (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200
            except httpx.HTTPError:
                return False
        address = f"127.0.0.1:{port}"
        # The router's port is public (plaintext, or TLS trusting GENMESH_ROUTER_TLS_CA_FILE);
        # every other child wants a mesh certificate.
        if name in meshtls.PUBLIC_SERVICES:
            channel = meshtls.router_channel(address, self.env.get("GENMESH_ROUTER_TLS_CA_FILE"), [])
        else:
            channel = meshtls.channel(address, self._health_credentials, name, [])
        try:
            async with channel:
                resp = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                return resp.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    async def watch(self) -> None:
        """Restarts a child that exits unexpectedly (with backoff), until stop()."""
        while not self.stopping:
            procs = {n: c.proc for n, c in self.children.items() if c.proc is not None}
            if not procs:
                return
            name, code = await process.wait_first_exit(procs)
            if self.stopping:
                return
            child = self.children[name]
            child.restarts += 1
            delay = child.backoff.next_delay() if time.monotonic() - child.started < 10 else 0.5
            log.warning("service exited; restarting", extra={"service": name, "code": code,
                                                             "restart_in_s": delay})
            await asyncio.sleep(delay)
            if not self.stopping:
                await self.start_child(name)

    async def stop_child(self, name: str, sig: int = signal.SIGTERM) -> int:
        child = self.children[name]
        assert child.proc is not None
        return await process.stop(child.proc, sig=sig, timeout=35.0)

    async def stop(self) -> None:
        self.stopping = True
        for joining in self.joining.values():
            joining.cancel()
        # The edge first (no new requests), then workers, then the router and billing.
        order = [n for n in ("edge", "apps", "echo", "imagegen", "videogen", "audio", "llm", "router", "billing")
                 if n in self.children]
        for group in (order[:1], order[1:-2], order[-2:]):
            await asyncio.gather(*(process.stop(self.children[n].proc, timeout=35.0)
                                   for n in group if self.children[n].proc is not None))
        for child in self.children.values():
            if child.log_file is not None:
                child.log_file.close()
        for cleanup in self.cleanups:
            with contextlib.suppress(Exception):
                await cleanup()


def _read_or_create(path: Path, make: Any) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    path.write_text(value)
    os.chmod(path, 0o600)
    return value


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# What `genmesh up` waits for before its ready line: the API itself (no model library in them).
READY_WITH = ("router", "billing", "edge")


def _joined(name: str, task: "asyncio.Task[None]") -> None:
    if task.cancelled():
        return
    error = task.exception()
    say(f"genmesh: {name} ready" if error is None else f"genmesh: {name} failed to start: {error}")


async def build_models(settings: Settings) -> None:
    """Builds missing tiny models (first run), showing progress."""
    from genmesh.models import build

    missing = build.missing(settings.resolved_models_dir())
    if not missing:
        return
    say(f"genmesh: building {len(missing)} local models into {settings.resolved_models_dir()} (first run only)")
    for i, model_id in enumerate(missing, 1):
        started = time.perf_counter()
        say(f"  [{i}/{len(missing)}] {model_id} ...")
        await asyncio.to_thread(build.build_one, model_id, settings.resolved_models_dir())
        say(f"  [{i}/{len(missing)}] {model_id} done in {time.perf_counter() - started:.1f}s")


async def up(settings: Settings, *, edge_port: int, grpc_port: int, services: list[str] | None = None,
             build: bool = True) -> int:
    data_dir = settings.data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    settings.data_dir = data_dir
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_event.set)

    from genmesh.embedded import EmbeddedNats, EmbeddedPostgres

    nats = pg = None
    sup: Supervisor | None = None
    try:
        nats_url = settings.nats_url
        if not nats_url:
            nats = EmbeddedNats(data_dir / "nats")
            nats_url = await nats.start()
        db_url = settings.database_url
        if not db_url:
            pg = EmbeddedPostgres(data_dir / "postgres", run_as=settings.postgres_user)
            db_url = await pg.start()
        api_key = settings.api_key or _read_or_create(data_dir / "api-key", lambda: "gm_" + secrets.token_urlsafe(24))
        secret = blobstore.signing_secret(settings)
        if build:
            await build_models(settings)
        env = {"GENMESH_NATS_URL": nats_url, "GENMESH_DATABASE_URL": db_url, "GENMESH_API_KEY": api_key,
               "GENMESH_DATA_DIR": str(data_dir), "GENMESH_SIGNING_SECRET": secret,
               "GENMESH_MODELS_DIR": str(settings.resolved_models_dir())}
        chosen = services or available_services()
        sup = Supervisor(env=env, log_dir=data_dir / "logs", services=chosen,
                         ports={"router": grpc_port, "edge": edge_port})
        say(f"genmesh: starting {', '.join(chosen)} (logs in {sup.log_dir})")
        # The API is ready once these are: model workers load after them and join when healthy
        # (until then their models are listed as not runnable yet, and requests wait for them).
        starting = asyncio.create_task(sup.start(ready_with=READY_WITH))
        stopped = asyncio.create_task(stop_event.wait())
        done, _ = await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if stopped in done:
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
            return 0
        starting.result()
        print(f"genmesh ready: http://127.0.0.1:{edge_port} grpc=127.0.0.1:{grpc_port}", flush=True)
        print(f"api key: {api_key}", flush=True)
        if sup.joining:
            say(f"genmesh: {', '.join(sup.joining)} joining as they finish loading")
            for name, task in sup.joining.items():
                task.add_done_callback(functools.partial(_joined, name))
        watcher = asyncio.create_task(sup.watch())
        await stop_event.wait()
        watcher.cancel()
        return 0
    except Exception as exc:  # noqa: BLE001 - a start-up failure is reported, then everything stops
        say(f"genmesh: failed to start: {exc}")
        return 1
    finally:
        say("genmesh: stopping")
        if sup is not None:
            await sup.stop()
        if pg is not None:
            await pg.stop()
        if nats is not None:
            await nats.stop()
        say("genmesh: stopped")
