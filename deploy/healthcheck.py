#!/usr/bin/env python3
"""Container health probe for Docker/compose, installed in the image as `genmesh-healthcheck`.

    genmesh-healthcheck grpc localhost:50051      # grpc.health.v1 Check, overall server status
    genmesh-healthcheck http http://localhost:8080/health

Kubernetes uses its native gRPC and HTTP probes instead; Docker has neither, so compose calls
this. Exit status 0 means healthy, 1 unhealthy, 2 usage error.
"""

from __future__ import annotations

import sys
import urllib.request

TIMEOUT_S = 3.0


def grpc_serving(target: str, timeout: float = TIMEOUT_S) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def http_ok(url: str, timeout: float = TIMEOUT_S) -> bool:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed local URL
        return 200 <= response.status < 300


PROBES = {"grpc": grpc_serving, "http": http_ok}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in PROBES:
        print("usage: genmesh-healthcheck grpc HOST:PORT | http URL", file=sys.stderr)
        return 2
    kind, target = argv
    try:
        healthy = PROBES[kind](target)
    except Exception as exc:  # any failure to get an answer is "unhealthy", with the reason
        print(f"{kind} {target}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if not healthy:
        print(f"{kind} {target}: not serving", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
