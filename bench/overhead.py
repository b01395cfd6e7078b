"""Mesh overhead on the echo model: the REST edge, Router.Run and the router's typed Echo proxy
against a direct call to the worker's Echo RPC; streaming (time to first event, per-event cost);
Status polling. Load comes from `bench.loadgen` in its own process; the CPU each mesh process
spent per request is read from /proc around every measurement."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2

from bench.mesh import BenchMesh, cpu_seconds, mesh_pids
from genmesh.v1 import router_pb2, router_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
PATHS = {  # name -> (loadgen mode, service whose address it calls)
    "direct": ("direct", "echo"),
    "router-run": ("run", "router"),
    "router-typed": ("typed", "router"),
    "rest": ("rest", "edge"),
}
LOADGEN_TIMEOUT_S = 300.0


def loadgen(spec: dict[str, Any]) -> dict[str, Any]:
    """One load run in a separate process (never on the measured services' loops)."""
    out = subprocess.run([sys.executable, "-m", "bench.loadgen", json.dumps(spec)], capture_output=True,
                         text=True, cwd=ROOT, timeout=LOADGEN_TIMEOUT_S)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


async def measured(mesh: BenchMesh, spec: dict[str, Any]) -> dict[str, Any]:
    """A load run plus the CPU microseconds each mesh process spent per request during it."""
    pids = mesh_pids(mesh)
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    result = await asyncio.to_thread(loadgen, spec)
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    calls = max(1, result["count"] + result["errors"] + spec.get("warmup", 0))
    result["cpu_us_per_req"] = {name: round((after[name] - before[name]) / calls * 1e6)
                                for name in pids}
    return result


def spec_for(mesh: BenchMesh, path: str, concurrency: int, **extra: Any) -> dict[str, Any]:
    mode, service = PATHS.get(path, (path, "router"))
    addr = mesh.addr(service)
    return {"mode": mode, "addr": addr, "key": mesh.api_key, "concurrency": concurrency,
            "tls": mesh.tls_spec(service), **extra}


async def mesh_overhead(mesh: BenchMesh, *, sequential: int, duration_s: float) -> dict[str, Any]:
    """p50/p99 of sequential calls and throughput at 16 and 64 clients, per path."""
    out: dict[str, Any] = {}
    for path in PATHS:
        seq = await measured(mesh, spec_for(mesh, path, 1, requests=sequential, warmup=50))
        c16 = await measured(mesh, spec_for(mesh, path, 16, duration_s=duration_s, warmup=64))
        c64 = await measured(mesh, spec_for(mesh, path, 64, duration_s=duration_s, warmup=128))
        out[path] = {"sequential": seq, "c16": c16, "c64": c64}
    return out


async def streaming(mesh: BenchMesh, *, requests: int, events: int = 100) -> dict[str, Any]:
    """Time to first event and per-event cost of an `events`-event stream, per path.

    Per-event cost is (stream of `events` - stream of 0) / `events`, from sequential medians; an
    echo event is a progress and a partial message."""
    out: dict[str, Any] = {}
    paths = {"direct": ("direct", "echo"), "router-stream": ("stream", "router"),
             "rest-sse": ("rest-stream", "edge")}
    for name, (mode, service) in paths.items():
        runs = {}
        for n in (0, events):
            runs[n] = await measured(mesh, {"mode": mode, "addr": mesh.addr(service), "key": mesh.api_key,
                                            "tls": mesh.tls_spec(service),
                                            "concurrency": 1, "requests": requests, "warmup": 10,
                                            "payload": {"prompt": "stream", "num_events": n}})
        full, empty = runs[events], runs[0]
        out[name] = {"ttfe_p50_ms": full.get("ttfe_p50_ms"), "ttfe_p99_ms": full.get("ttfe_p99_ms"),
                     "stream_p50_ms": full["p50_ms"], "empty_p50_ms": empty["p50_ms"],
                     "per_event_us": (full["p50_ms"] - empty["p50_ms"]) / events * 1000,
                     "messages": full.get("events"), "errors": full["errors"] + empty["errors"],
                     "runs": runs}
    return out


async def one_job(mesh: BenchMesh) -> str:
    """A completed queued job to poll."""
    async with grpc.aio.insecure_channel(mesh.addr("router")) as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        data = struct_pb2.Struct()
        data.update({"prompt": "poll me"})
        resp = await stub.Submit(router_pb2.SubmitRequest(model_id="genmesh/echo", input=data),
                                 metadata=mesh.metadata, timeout=30)
        for _ in range(600):
            job = (await stub.Status(router_pb2.StatusRequest(request_id=resp.request_id),
                                     metadata=mesh.metadata, timeout=30)).job
            if job.status in (3, 4, 5):  # COMPLETED, FAILED, CANCELLED
                return resp.request_id
            await asyncio.sleep(0.05)
    raise TimeoutError("the job to poll never ended")


async def status_polling(mesh: BenchMesh, *, requests: int, duration_s: float) -> dict[str, Any]:
    request_id = await one_job(mesh)
    out = {}
    for name, mode, service in (("grpc", "status", "router"), ("rest", "rest-status", "edge")):
        seq = await measured(mesh, {"mode": mode, "addr": mesh.addr(service), "key": mesh.api_key,
                                    "concurrency": 1, "requests": requests, "warmup": 20,
                                    "request_id": request_id})
        c16 = await measured(mesh, {"mode": mode, "addr": mesh.addr(service), "key": mesh.api_key,
                                    "concurrency": 16, "duration_s": duration_s, "warmup": 32,
                                    "request_id": request_id})
        out[name] = {"sequential": seq, "c16": c16}
    return out


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
