"""How every genmesh process starts and stops: settings, logging, a gRPC server with health and
reflection (or the edge's HTTP server), Prometheus metrics, and a graceful SIGTERM drain.

Every internal port is mutual TLS with a caller check (genmesh/meshtls.py); the router's port
is the public one, where clients authenticate with API keys (over TLS when public_tls_* is set)."""
from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from genmesh import logs, meshtls
from genmesh.rpc import SERVER_OPTIONS
from genmesh.settings import Settings

log = logging.getLogger("genmesh.service")
DRAIN_GRACE_S = 30.0


class Component(Protocol):
    """A service's logic: registers its servicers, then runs between start() and stop()."""

    service_names: list[str]

    def register(self, server: grpc.aio.Server) -> None: ...
    async def start(self, port: int) -> None: ...
    async def drain(self) -> None: ...
    async def stop(self) -> None: ...


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def start_metrics(settings: Settings) -> None:
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.host)


async def _health_port(settings: Settings, name: str,
                       servicer: health.aio.HealthServicer) -> grpc.aio.Server | None:
    """A plaintext port with grpc.health.v1 alone, for probes that cannot present a client
    certificate; it shares the main server's health servicer, so both report the same status."""
    if not settings.health_port:
        return None
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if server.add_insecure_port(f"{settings.host}:{settings.health_port}") == 0:
        raise RuntimeError(f"{name}: cannot bind health port {settings.host}:{settings.health_port}")
    await server.start()
    return server


async def serve_grpc(settings: Settings, name: str, component: Component) -> None:
    """Serves until SIGTERM/SIGINT, then drains in-flight calls before stopping."""
    # Checked before anything starts: a service without certificates (and no explicit
    # plaintext opt-in) stops here with the reason.
    credentials = meshtls.load(settings, name)
    public = name in meshtls.PUBLIC_SERVICES
    if credentials is None:
        log.warning("service-to-service gRPC is plaintext (GENMESH_INSECURE_MESH)", extra={"service": name})
    interceptors = [] if public or credentials is None else [meshtls.CallerCheck(name)]
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
    component.register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [*component.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    address = f"{settings.host}:{settings.port}"
    if public:
        public_credentials = meshtls.public_server_credentials(settings)
        port = (server.add_insecure_port(address) if public_credentials is None
                else server.add_secure_port(address, public_credentials))
    else:
        port = meshtls.add_port(server, address, credentials)
    if port == 0:
        raise RuntimeError(f"{name}: cannot bind {address}")
    probe = await _health_port(settings, name, health_servicer)
    stop = _stop_event()
    # The component is ready (connected, migrated) before the first call can arrive.
    await component.start(port)
    await server.start()
    start_metrics(settings)
    for svc in ["", *component.service_names]:
        await health_servicer.set(svc, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", extra={"service": name, "port": port})
    await stop.wait()
    log.info("draining", extra={"service": name})
    for svc in ["", *component.service_names]:
        await health_servicer.set(svc, health_pb2.HealthCheckResponse.NOT_SERVING)
    await component.drain()
    await server.stop(DRAIN_GRACE_S)
    if probe is not None:
        await probe.stop(None)
    await component.stop()
    log.info("stopped", extra={"service": name})


def run(name: str, build: "type[Component] | object") -> None:
    """The body of every gRPC service's __main__: `run("router", RouterComponent)`."""
    settings = Settings()
    logs.configure(name, settings.log_level, settings.log_json)

    async def main() -> None:
        component = build(settings)  # type: ignore[operator]
        await serve_grpc(settings, name, component)

    asyncio.run(main())
