"""What mutual TLS between services costs: the router's typed Echo proxy and a direct worker call,
sequential p50/p99 and throughput at 16 clients, on a plaintext mesh and on the mutual-TLS mesh
(`genmesh up`'s), alternating so drift on a shared machine falls on both.

    python -m bench.mtls_cost [--requests 2000] [--rounds 2] [--duration 5]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from bench.mesh import bench_mesh
from bench.overhead import measured, spec_for

PATHS = ("router-typed", "direct")


async def one_mesh(tls: bool, *, requests: int, duration_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="genmesh-mtls-") as tmp:
        async with bench_mesh(Path(tmp), ["router", "echo"], tls=tls) as mesh:
            out: dict[str, Any] = {}
            for path in PATHS:
                seq = await measured(mesh, spec_for(mesh, path, 1, requests=requests, warmup=100))
                c16 = await measured(mesh, spec_for(mesh, path, 16, duration_s=duration_s, warmup=64))
                out[path] = {"p50_ms": seq["p50_ms"], "p99_ms": seq["p99_ms"], "errors": seq["errors"] + c16["errors"],
                             "c16_rps": c16.get("rps"), "router_cpu_us": seq["cpu_us_per_req"].get("router"),
                             "echo_cpu_us": seq["cpu_us_per_req"].get("echo")}
            return out


async def main(requests: int, rounds: int, duration_s: float) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {"plaintext": [], "mtls": []}
    for _ in range(rounds):
        for name, tls in (("plaintext", False), ("mtls", True)):
            results[name].append(await one_mesh(tls, requests=requests, duration_s=duration_s))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.requests, args.rounds, args.duration)), indent=1))
