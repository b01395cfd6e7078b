"""deploy/healthcheck.py, compose's healthcheck, tells serving from not serving on real sockets."""

from __future__ import annotations

import http.server
import importlib.util
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

HEALTHCHECK = Path(__file__).resolve().parents[2] / "deploy" / "healthcheck.py"


@pytest.fixture(scope="module")
def probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("genmesh_healthcheck", HEALTHCHECK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(grace=None)


@pytest.fixture
def http_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200 if self.path == "/health" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_grpc_probe_passes_only_while_the_server_reports_serving(
    probe: ModuleType, health_server
) -> None:
    target, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert probe.main(["grpc", target]) == 0
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert probe.main(["grpc", target]) == 1


def test_grpc_probe_fails_when_nothing_listens(probe: ModuleType) -> None:
    assert probe.main(["grpc", "127.0.0.1:1"]) == 1


def test_http_probe_follows_the_status_code(probe: ModuleType, http_server: str) -> None:
    assert probe.main(["http", f"{http_server}/health"]) == 0
    assert probe.main(["http", f"{http_server}/other"]) == 1


def test_usage_errors_exit_2(probe: ModuleType) -> None:
    assert probe.main([]) == 2
    assert probe.main(["tcp", "localhost:1"]) == 2
