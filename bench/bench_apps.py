"""Custom apps benchmark on a private mesh (router, app worker, edge): cold start (a request that
finds no runner: from the request reaching the worker to the runner's setup() done, and the whole
request as the client sees it) and warm latency p50/p99 of the example app through Router.Run
(gRPC) and the edge's FAL route (HTTP).

    python bench/bench_apps.py [--cold N] [--warm N]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.protobuf import struct_pb2

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.mesh import BenchMesh, bench_mesh  # noqa: E402
from genmesh.apps.client import Client  # noqa: E402
from genmesh.v1 import apps_pb2, apps_pb2_grpc, router_pb2, router_pb2_grpc  # noqa: E402

EXAMPLE = f"{ROOT / 'examples' / 'text_stats' / 'app.py'}::TextStats"
APP = "bench/text-stats"
# What a 2-core shared CPU machine should reach (a runner is a fresh Python importing pydantic).
TARGETS = {"cold_start_p50_s": 1.0, "warm_grpc_p50_ms": 25.0}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


async def _runners(ch: grpc.aio.Channel, mesh: BenchMesh) -> int:
    resp = await apps_pb2_grpc.AppsStub(ch).GetApp(apps_pb2.GetAppRequest(id=APP), metadata=mesh.metadata)
    return resp.app.runners


async def _until_no_runners(ch: grpc.aio.Channel, mesh: BenchMesh, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while await _runners(ch, mesh):
        if time.monotonic() > deadline:
            raise TimeoutError("runners did not scale to zero")
        await asyncio.sleep(0.05)


async def _cold_starts(mesh: BenchMesh, n: int) -> tuple[list[float], list[float]]:
    """(worker-side request->runner ready, client-side request time) of n cold requests."""
    ready, total = [], []
    async with grpc.aio.insecure_channel(mesh.addr("router")) as ch:
        stub = apps_pb2_grpc.AppRunnerStub(ch)
        for i in range(n):
            await _until_no_runners(ch, mesh)
            started = time.perf_counter()
            events = [e async for e in stub.Invoke(apps_pb2.InvokeRequest(
                model_id=APP, input=_struct({"text": f"cold start {i}"})), metadata=mesh.metadata, timeout=120)]
            total.append(time.perf_counter() - started)
            result = events[-1].result
            if not result.cold_start:
                raise RuntimeError("expected a cold start")
            ready.append(result.cold_start_seconds)
    return ready, total


async def _warm_grpc(mesh: BenchMesh, n: int) -> list[float]:
    out = []
    async with grpc.aio.insecure_channel(mesh.addr("router")) as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        request = router_pb2.RunRequest(model_id=APP, input=_struct({"text": "warm latency probe"}))
        for _ in range(5):
            await stub.Run(request, metadata=mesh.metadata, timeout=60)
        for _ in range(n):
            started = time.perf_counter()
            await stub.Run(request, metadata=mesh.metadata, timeout=60)
            out.append(time.perf_counter() - started)
    return out


async def _warm_http(mesh: BenchMesh, n: int) -> list[float]:
    out = []
    async with httpx.AsyncClient(base_url=mesh.edge_url, headers={"Authorization": f"Key {mesh.api_key}"},
                                 timeout=60) as http:
        for _ in range(5):
            (await http.post(f"/{APP}", json={"text": "warm latency probe"})).raise_for_status()
        for _ in range(n):
            started = time.perf_counter()
            (await http.post(f"/{APP}", json={"text": "warm latency probe"})).raise_for_status()
            out.append(time.perf_counter() - started)
    return out


async def _run(cold: int, warm: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-apps-") as tmp:
        async with bench_mesh(Path(tmp), ["router", "apps", "edge"]) as mesh:
            def deploy() -> dict[str, Any]:
                with Client(mesh.edge_url, mesh.api_key) as client:
                    client.deploy(EXAMPLE, name=APP)
                    return client.scale_app(APP, keep_alive=0.2, max_concurrency=2)

            await asyncio.to_thread(deploy)
            ready, total = await _cold_starts(mesh, cold)
            await asyncio.to_thread(lambda: Client(mesh.edge_url, mesh.api_key).scale_app(APP, keep_alive=600))
            grpc_lat = await _warm_grpc(mesh, warm)
            http_lat = await _warm_http(mesh, warm)
    return {
        "cold_starts": cold, "warm_requests": warm,
        "cold_start_p50_s": statistics.median(ready), "cold_start_max_s": max(ready),
        "cold_request_p50_s": statistics.median(total),
        "warm_grpc_p50_ms": percentile(grpc_lat, 50) * 1000, "warm_grpc_p99_ms": percentile(grpc_lat, 99) * 1000,
        "warm_http_p50_ms": percentile(http_lat, 50) * 1000, "warm_http_p99_ms": percentile(http_lat, 99) * 1000,
    }


def run(cold: int = 5, warm: int = 200) -> dict[str, Any]:
    """Starts a private mesh, measures, stops it; the numbers as a dict."""
    return asyncio.run(_run(cold, warm))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cold", type=int, default=5, help="cold starts to measure")
    p.add_argument("--warm", type=int, default=200, help="warm requests per route")
    args = p.parse_args()
    r = run(args.cold, args.warm)
    rows = [
        ("cold start: request -> runner ready, p50", f"{r['cold_start_p50_s']:.3f} s",
         f"target <= {TARGETS['cold_start_p50_s']} s"),
        ("cold start: request -> runner ready, max", f"{r['cold_start_max_s']:.3f} s", ""),
        ("cold request end to end (gRPC), p50", f"{r['cold_request_p50_s']:.3f} s", ""),
        ("warm Router.Run p50", f"{r['warm_grpc_p50_ms']:.1f} ms", f"target <= {TARGETS['warm_grpc_p50_ms']} ms"),
        ("warm Router.Run p99", f"{r['warm_grpc_p99_ms']:.1f} ms", ""),
        ("warm FAL POST /{app} p50", f"{r['warm_http_p50_ms']:.1f} ms", ""),
        ("warm FAL POST /{app} p99", f"{r['warm_http_p99_ms']:.1f} ms", ""),
    ]
    print(f"apps: example text-stats, {r['cold_starts']} cold starts, {r['warm_requests']} warm requests per route")
    for name, value, note in rows:
        print(f"  {name:<44} {value:>12}  {note}")


if __name__ == "__main__":
    main()
