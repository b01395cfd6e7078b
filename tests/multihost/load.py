"""The client host of the multi-host test: waits for the mesh, then drives a steady echo load.

Runs inside the client namespace (`ip netns exec <client> python -m tests.multihost.load ...`),
because gRPC sockets cannot be moved into a namespace from the test process. One JSON object
per line on stdout; the full record of what was accepted goes to --out.

  wait  --router A --router B --edge URL --workers N     until every service answers and each
                                                          router sees N echo workers
  run   --router A --router B --edge URL --seconds S --rate R --out FILE

`run` submits R queued jobs a second, spread over both routers' Router.Submit and the edge's
FAL queue route, each with an idempotency key, retried once on the other router when a call
fails (what a careful client does when a router stops answering); two more clients call
Router.Run back to back, alternating routers. Every call has a deadline, so nothing waits on a
cut-off host for long.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genmesh.rpc import CHANNEL_OPTIONS
from genmesh.v1 import router_pb2, router_pb2_grpc

CALL_TIMEOUT_S = 8.0
SYNC_CLIENTS = 2
MODEL = "genmesh/echo"
QUEUED_INPUT = {"num_events": 4, "delay_ms": 100}  # ~0.4 s on a worker: jobs are mid-run at a cut
SYNC_INPUT = {"num_events": 0, "delay_ms": 0}


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


def metadata() -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {os.environ['GENMESH_API_KEY']}"),)


# --------------------------------------------------------------------------- wait


async def wait(routers: list[str], edge: str, others: list[str], workers: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    missing: list[str] = []
    while time.monotonic() < deadline:
        missing = []
        for addr in [*routers, *others]:
            async with grpc.aio.insecure_channel(addr) as ch:
                try:
                    resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if resp.status != health_pb2.HealthCheckResponse.SERVING:
                        missing.append(f"{addr} not serving")
                        continue
                    if addr in routers:
                        listed = await router_pb2_grpc.RouterStub(ch).ListWorkers(
                            router_pb2.ListWorkersRequest(service="echo"), metadata=metadata(), timeout=1.0)
                        if len(listed.workers) < workers:
                            missing.append(f"{addr} sees {len(listed.workers)}/{workers} echo workers")
                except grpc.aio.AioRpcError as exc:
                    missing.append(f"{addr}: {exc.code().name}")
        try:
            async with httpx.AsyncClient(timeout=1.0) as http:
                if (await http.get(f"{edge}/health")).status_code != 200:
                    missing.append("edge unhealthy")
        except httpx.HTTPError as exc:
            missing.append(f"edge: {exc!r}")
        if not missing:
            emit("ready")
            return
        await asyncio.sleep(0.2)
    emit("not_ready", missing=missing)
    sys.exit(1)


# --------------------------------------------------------------------------- run


@dataclass
class Submitted:
    k: int
    prompt: str
    key: str
    via: list[str] = field(default_factory=list)  # where each try went
    errors: list[str] = field(default_factory=list)  # "<target>: <code>" of each failed try
    failed_at: list[float] = field(default_factory=list)
    request_id: str = ""
    at: float = 0.0  # seconds since the load started, when the answer came


class EdgeError(Exception):
    """The edge answered, but not with an accepted job."""


@dataclass
class Ran:
    prompt: str
    via: str
    request_id: str = ""
    error: str = ""
    output_prompt: str = ""
    at: float = 0.0


class Load:
    def __init__(self, routers: list[str], edge: str) -> None:
        self.routers = routers
        self.edge = edge
        self.run_id = uuid.uuid4().hex[:6]
        self.channels = {a: grpc.aio.insecure_channel(a, options=CHANNEL_OPTIONS) for a in routers}
        self.stubs = {a: router_pb2_grpc.RouterStub(ch) for a, ch in self.channels.items()}
        self.http = httpx.AsyncClient(timeout=CALL_TIMEOUT_S + 2)
        self.submitted: list[Submitted] = []
        self.ran: list[Ran] = []
        self.started = time.monotonic()

    def now(self) -> float:
        return round(time.monotonic() - self.started, 3)

    async def _submit_grpc(self, addr: str, s: Submitted) -> str:
        resp = await self.stubs[addr].Submit(router_pb2.SubmitRequest(
            model_id=MODEL, input=struct({**QUEUED_INPUT, "prompt": s.prompt}), idempotency_key=s.key),
            metadata=metadata(), timeout=CALL_TIMEOUT_S)
        return resp.request_id

    async def _submit_edge(self, s: Submitted) -> str:
        resp = await self.http.post(
            f"{self.edge}/queue/{MODEL}", json={**QUEUED_INPUT, "prompt": s.prompt},
            headers={"authorization": f"Key {os.environ['GENMESH_API_KEY']}", "idempotency-key": s.key})
        if resp.status_code != 200:
            raise EdgeError(f"HTTP {resp.status_code}")
        return resp.json()["request_id"]

    async def submit(self, k: int) -> None:
        s = Submitted(k, f"job-{self.run_id}-{k}", f"load-{self.run_id}-{k}")
        self.submitted.append(s)
        # A third each to router-a, router-b and the edge; the retry goes to a router the first
        # try did not use (after the edge, to either, alternately).
        first = self.edge if k % 3 == 2 else self.routers[k % 3]
        retry = self.routers[(k // 3) % 2] if first == self.edge else \
            self.routers[1 - self.routers.index(first)]
        for target in (first, retry):
            s.via.append(target)
            try:
                s.request_id = await (self._submit_edge(s) if target == self.edge else self._submit_grpc(target, s))
                s.at = self.now()
                return
            except grpc.aio.AioRpcError as exc:
                s.errors.append(f"{target}: {exc.code().name}")
            except (httpx.HTTPError, EdgeError, KeyError, ValueError) as exc:
                s.errors.append(f"{target}: {exc if isinstance(exc, EdgeError) else type(exc).__name__}")
            s.failed_at.append(self.now())

    async def sync_client(self, index: int, until: float) -> None:
        """Router.Run back to back (a short pause between), alternating routers."""
        n = 0
        while time.monotonic() < until:
            addr = self.routers[(index + n) % len(self.routers)]
            r = Ran(f"sync-{self.run_id}-{index}-{n}", addr)
            self.ran.append(r)
            n += 1
            try:
                resp = await self.stubs[addr].Run(router_pb2.RunRequest(
                    model_id=MODEL, input=struct({**SYNC_INPUT, "prompt": r.prompt})),
                    metadata=metadata(), timeout=CALL_TIMEOUT_S)
                r.request_id, r.output_prompt = resp.request_id, resp.output["prompt"]
            except grpc.aio.AioRpcError as exc:
                r.error = exc.code().name
            r.at = self.now()
            await asyncio.sleep(0.25)

    async def report(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            emit("progress", t=self.now(),
                 submitted=len(self.submitted), accepted=sum(1 for s in self.submitted if s.request_id),
                 runs=len(self.ran), runs_ok=sum(1 for r in self.ran if r.request_id))

    async def run(self, seconds: float, rate: float) -> None:
        self.started = time.monotonic()
        until = self.started + seconds
        emit("started")
        reporter = asyncio.create_task(self.report())
        syncs = [asyncio.create_task(self.sync_client(i, until)) for i in range(SYNC_CLIENTS)]
        submits: list[asyncio.Task[None]] = []
        k = 0
        # Paced by the clock, each submit its own task: a call hanging on a cut-off router
        # never slows the others down.
        while (now := time.monotonic()) < until:
            due = int((now - self.started) * rate) + 1
            while k < due:
                submits.append(asyncio.create_task(self.submit(k)))
                k += 1
            await asyncio.sleep(1.0 / rate)
        await asyncio.gather(*submits, *syncs)
        reporter.cancel()
        await self.http.aclose()
        for ch in self.channels.values():
            await ch.close()

    def summary(self) -> dict[str, Any]:
        errors = collections.Counter(e.split(": ", 1)[1] for s in self.submitted for e in s.errors)
        return {"submitted": len(self.submitted),
                "accepted": sum(1 for s in self.submitted if s.request_id),
                "retried": sum(1 for s in self.submitted if len(s.via) > 1),
                "rejected": sum(1 for s in self.submitted if not s.request_id),
                "submit_errors": dict(errors),
                "runs": len(self.ran), "runs_ok": sum(1 for r in self.ran if r.request_id),
                "run_errors": dict(collections.Counter(r.error for r in self.ran if r.error))}


async def run(routers: list[str], edge: str, seconds: float, rate: float, out: str) -> None:
    load = Load(routers, edge)
    await load.run(seconds, rate)
    Path(out).write_text(json.dumps({"submitted": [asdict(s) for s in load.submitted],
                                     "ran": [asdict(r) for r in load.ran]}))
    emit("done", t=load.now(), **load.summary())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.multihost.load")
    parser.add_argument("command", choices=("wait", "run"))
    parser.add_argument("--router", action="append", required=True)
    parser.add_argument("--edge", required=True)
    parser.add_argument("--grpc", action="append", default=[], help="more gRPC services to wait for")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--rate", type=float, default=8.0)
    parser.add_argument("--out", default="load.json")
    args = parser.parse_args()
    if args.command == "wait":
        asyncio.run(wait(args.router, args.edge, args.grpc, args.workers, args.timeout))
    else:
        asyncio.run(run(args.router, args.edge, args.seconds, args.rate, args.out))


if __name__ == "__main__":
    main()
