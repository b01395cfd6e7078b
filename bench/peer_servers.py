"""The peers genmesh's REST echo is measured against, each serving `POST /genmesh/echo` (the same
path, body and answer as genmesh's FAL route) on a loopback port, run as
`python -m bench.peer_servers <fastapi|ray> <port> <scratch dir>`:

  fastapi  a bare FastAPI echo under uvicorn (httptools, uvloop, no access log): the limit of
           any Python HTTP service on this machine
  ray      Ray Serve 2.60 with its HAProxy ingress (RAY_SERVE_ENABLE_HA_PROXY=1): HAProxy, a C
           load balancer, routes straight to a replica's own HTTP port, bypassing Serve's
           Python proxy. Ray's state, logs and HAProxy's files live under the scratch dir.

The process prints `READY` once a request is answered, then serves until its stdin closes (or
SIGTERM), and stops what it started (Ray's whole local cluster) before exiting.
"""
# No `from __future__ import annotations`: FastAPI resolves the handlers' annotations (Request)
# where they are defined, inside the functions below.
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROUTE = "/genmesh/echo"


def fastapi_app() -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import ORJSONResponse

    app = FastAPI()

    @app.post(ROUTE)
    async def echo(request: Request) -> ORJSONResponse:
        body = await request.json()
        return ORJSONResponse({"prompt": body.get("prompt", ""), "num_events": 0})

    return app


def serve_fastapi(port: int) -> None:
    import uvicorn

    threading.Thread(target=_ready_when_up, args=(port,), daemon=True).start()
    uvicorn.run(fastapi_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools")


def _ready_when_up(port: int) -> None:
    """Prints READY once the server answers, then exits the process when stdin closes."""
    _wait_answering(port, 60.0)
    print("READY", flush=True)
    sys.stdin.read()
    os.kill(os.getpid(), signal.SIGTERM)


def _wait_answering(port: int, timeout: float) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("POST", ROUTE, body=b'{"prompt": "up?"}', headers={"content-type": "application/json"})
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing answered on port {port} within {timeout:.0f} s")
        time.sleep(0.2)


def serve_ray(port: int, scratch: Path) -> None:
    """Ray Serve with HAProxy on `port`; every Ray and HAProxy port on loopback."""
    # HAProxy's admin socket goes under <dir>/<56-character node id>/: a short directory, since
    # a Unix socket path must stay under 108 bytes.
    import shutil
    import tempfile

    haproxy_dir = Path(tempfile.mkdtemp(prefix="gmhp-", dir="/tmp"))
    # Serve reads these at import, in this process and (inherited) in its controller.
    os.environ.update({
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(haproxy_dir / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(haproxy_dir / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(haproxy_dir),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(haproxy_dir / "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
        # A 2-core machine: HAProxy's default of 4 threads would only contend.
        "RAY_SERVE_HAPROXY_NBTHREAD": "2",
        # A shared, loaded 2-core machine starts actors slowly: Serve's default readiness and
        # health-check timeouts (5-30 s) kill the proxy before it is up. Steady state is unchanged.
        "RAY_SERVE_HAPROXY_STARTUP_TIMEOUT_S": "180",
        "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "120",
        "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60",
        "RAY_USAGE_STATS_ENABLED": "0",
        # Ray's own processes talk over loopback too (by default it picks the host's address).
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
    })
    import ray
    from fastapi import FastAPI, Request
    from fastapi.responses import ORJSONResponse
    from ray import serve

    app = FastAPI()

    @serve.deployment(num_replicas=1, max_ongoing_requests=64)
    @serve.ingress(app)
    class Echo:
        @app.post("/echo")
        async def echo(self, request: Request) -> ORJSONResponse:
            body = await request.json()
            return ORJSONResponse({"prompt": body.get("prompt", ""), "num_events": 0})

    done = threading.Event()
    # SIGTERM (the bench's stop) ends the wait below, so Ray's cluster is always shut down.
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             _temp_dir=str(scratch / "ray"), logging_level="WARNING", log_to_driver=False,
             configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
        serve.run(Echo.bind(), route_prefix="/genmesh", name="echo")
        _wait_answering(port, 120.0)
        print("READY", flush=True)
        threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
        done.wait()
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            shutil.rmtree(haproxy_dir, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "fastapi":
        serve_fastapi(port)
    elif kind == "ray":
        serve_ray(port, Path(sys.argv[3]))
    else:
        raise SystemExit(f"unknown peer {kind!r}: fastapi or ray")


if __name__ == "__main__":
    main()
