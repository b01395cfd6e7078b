"""The load generator, run in its own process so its cost never shares the measured services'
event loops: `python -m bench.loadgen '<json spec>'` prints one JSON result line.

Modes (all on the echo model):
  rest           POST /genmesh/echo on the edge (raw HTTP/1.1 keep-alive; cheaper than httpx)
  rest-stream    POST /genmesh/echo/stream (SSE over chunked HTTP)
  run            Router.Run
  typed          the typed Echo RPC served by the router (placement-aware proxy)
  direct         the typed Echo RPC on the worker itself (the baseline)
  stream         Router.Stream
  submit         Router.Submit (the durable queue); prints the request ids it got back
  status         Router.Status of one request id (what FAL clients poll every 0.1 s)
  rest-status    GET /queue/genmesh/echo/requests/<id>/status on the edge

Every call has a deadline and every loop is bounded (a request count and a wall-clock cap), so
a load run always ends by itself. The result includes the client's own CPU time per request.
"""
from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import grpc
from google.protobuf import struct_pb2

from genmesh import meshtls
from genmesh.v1 import echo_pb2, echo_pb2_grpc, router_pb2, router_pb2_grpc

CALL_TIMEOUT_S = 30.0
MAX_WALL_S = 300.0


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


# --- a minimal HTTP/1.1 client --------------------------------------------------------------


class HttpError(Exception):
    pass


class HttpConn:
    """One keep-alive connection; enough HTTP/1.1 for JSON and SSE answers."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _ensure(self) -> None:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        return await self.post(path, b"", headers, method="GET")

    async def post(self, path: str, body: bytes, headers: dict[str, str],
                   on_chunk: Callable[[bytes], None] | None = None,
                   method: str = "POST") -> tuple[int, bytes]:
        await self._ensure()
        assert self.reader is not None and self.writer is not None
        lines = [f"{method} {path} HTTP/1.1", f"host: {self.host}:{self.port}",
                 f"content-length: {len(body)}", "content-type: application/json",
                 *(f"{k}: {v}" for k, v in headers.items())]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.close()
            raise HttpError(f"connection closed: {exc!r}") from None
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        hdrs = {}
        for line in header_lines:
            if ":" in line:
                k, _, v = line.partition(":")
                hdrs[k.strip().lower()] = v.strip()
        if "content-length" in hdrs:
            data = await self.reader.readexactly(int(hdrs["content-length"]))
            if on_chunk is not None:
                on_chunk(data)
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                if on_chunk is not None:
                    on_chunk(chunk[:-2])
                parts.append(chunk[:-2])
            data = b"".join(parts)
        else:
            data = await self.reader.read()
            self.close()
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return status, data


# --- one request of each mode ---------------------------------------------------------------


@dataclass
class Sample:
    latency: float
    ttfe: float | None = None  # time to first event (streams)
    events: int = 0
    request_id: str = ""


@dataclass
class Target:
    spec: dict[str, Any]
    channel: grpc.aio.Channel | None = None
    conns: list[HttpConn] = field(default_factory=list)

    def __post_init__(self) -> None:
        s = self.spec
        self.metadata = (("authorization", f"Bearer {s['key']}"),)
        self.payload: dict[str, Any] = s.get("payload", {"prompt": "hello"})
        if s["mode"] in ("rest", "rest-stream", "rest-status"):
            host, port = s["addr"].rsplit(":", 1)
            self.conns = [HttpConn(host, int(port)) for _ in range(s["concurrency"])]
            self.body = json.dumps(self.payload).encode()
            self.headers = {"authorization": f"Bearer {s['key']}"}
        else:
            tls = s.get("tls")  # a worker's port: mutual TLS with the router's certificate
            credentials = None if not tls else meshtls.MeshCredentials.from_files(tls["ca"], tls["cert"], tls["key"])
            self.channel = meshtls.channel(s["addr"], credentials, tls["service"] if tls else "", [])
            router = router_pb2_grpc.RouterStub(self.channel)
            echo = echo_pb2_grpc.EchoStub(self.channel)
            self.input = struct_pb2.Struct()
            self.input.update(self.payload)
            self.run_rpc, self.stream_rpc, self.submit_rpc = router.Run, router.Stream, router.Submit
            self.status_rpc = router.Status
            self.echo_rpc = echo.Echo
            self.echo_req = echo_pb2.EchoRequest(model_id="genmesh/echo", **self.payload)

    async def once(self, worker: int) -> Sample:
        mode = self.spec["mode"]
        start = time.perf_counter()
        if mode == "rest":
            status, body = await self.conns[worker].post("/genmesh/echo", self.body, self.headers)
            if status != 200:
                raise HttpError(f"HTTP {status}: {body[:200]!r}")
            return Sample(time.perf_counter() - start)
        if mode == "rest-stream":
            first: list[float] = []
            count = [0]

            def on_chunk(chunk: bytes) -> None:
                n = chunk.count(b"data:")
                if n and not first:
                    first.append(time.perf_counter() - start)
                count[0] += n
            status, body = await self.conns[worker].post("/genmesh/echo/stream", self.body, self.headers,
                                                         on_chunk)
            if status != 200 or b"event: error" in body:
                raise HttpError(f"HTTP {status}: {body[:200]!r}")
            return Sample(time.perf_counter() - start, first[0] if first else None, count[0])
        if mode == "run":
            resp = await self.run_rpc(router_pb2.RunRequest(model_id="genmesh/echo", input=self.input),
                                      metadata=self.metadata, timeout=CALL_TIMEOUT_S)
            return Sample(time.perf_counter() - start, request_id=resp.request_id)
        if mode == "status":
            resp = await self.status_rpc(router_pb2.StatusRequest(request_id=self.spec["request_id"]),
                                         metadata=self.metadata, timeout=CALL_TIMEOUT_S)
            return Sample(time.perf_counter() - start, request_id=resp.job.request_id)
        if mode == "rest-status":
            status, body = await self.conns[worker].get(
                f"/queue/genmesh/echo/requests/{self.spec['request_id']}/status", self.headers)
            if status not in (200, 202):
                raise HttpError(f"HTTP {status}: {body[:200]!r}")
            return Sample(time.perf_counter() - start)
        if mode == "submit":
            resp = await self.submit_rpc(router_pb2.SubmitRequest(model_id="genmesh/echo", input=self.input),
                                         metadata=self.metadata, timeout=CALL_TIMEOUT_S)
            return Sample(time.perf_counter() - start, request_id=resp.request_id)
        if mode in ("typed", "direct", "stream"):
            if mode == "stream":
                call = self.stream_rpc(router_pb2.StreamRequest(model_id="genmesh/echo", input=self.input),
                                       metadata=self.metadata, timeout=CALL_TIMEOUT_S)
            else:
                call = self.echo_rpc(self.echo_req, metadata=self.metadata, timeout=CALL_TIMEOUT_S)
            ttfe = None
            events = 0
            async for _event in call:
                if ttfe is None:
                    ttfe = time.perf_counter() - start
                events += 1
            return Sample(time.perf_counter() - start, ttfe, events)
        raise ValueError(f"unknown mode {mode}")

    async def close(self) -> None:
        for c in self.conns:
            c.close()
        if self.channel is not None:
            await self.channel.close()


async def drive(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm up, then run `requests` calls (or until `duration_s`) over `concurrency` workers."""
    target = Target(spec)
    concurrency = spec["concurrency"]
    total = spec.get("requests", 10 ** 9)
    duration = min(spec.get("duration_s", MAX_WALL_S), MAX_WALL_S)
    warmup = spec.get("warmup", 20)
    samples: list[Sample] = []
    errors: list[str] = []
    issued = 0

    async def warm(worker: int) -> None:
        for _ in range(max(1, warmup // concurrency) if warmup else 0):
            try:
                await target.once(worker)
            except Exception:  # noqa: BLE001 - warm-up failures show up in the real run
                pass

    await asyncio.gather(*(warm(w) for w in range(concurrency)))
    cpu0, start = _cpu(), time.perf_counter()
    deadline = start + duration

    async def worker(w: int) -> None:
        nonlocal issued
        while issued < total and time.perf_counter() < deadline:
            issued += 1
            try:
                samples.append(await target.once(w))
            except Exception as exc:  # noqa: BLE001 - counted and sampled, never fatal
                errors.append(exc.details() if isinstance(exc, grpc.aio.AioRpcError) else repr(exc))

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu = _cpu() - cpu0
    await target.close()
    lat = [s.latency * 1000 for s in samples]
    out: dict[str, Any] = {
        "mode": spec["mode"], "concurrency": concurrency, "count": len(samples), "errors": len(errors),
        "error_samples": sorted(set(errors))[:5], "elapsed_s": elapsed,
        "rps": len(samples) / elapsed if elapsed else 0.0,
        "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
        "mean_ms": sum(lat) / len(lat) if lat else float("nan"),
        "client_cpu_us_per_req": cpu / max(1, len(samples)) * 1e6,
    }
    ttfes = [s.ttfe * 1000 for s in samples if s.ttfe is not None]
    if ttfes:
        out["ttfe_p50_ms"] = percentile(ttfes, 50)
        out["ttfe_p99_ms"] = percentile(ttfes, 99)
        out["events"] = samples[0].events if samples else 0
    if spec.get("want_ids"):
        out["request_ids"] = [s.request_id for s in samples]
    return out


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(drive(spec))
    else:
        result = uvloop.run(drive(spec))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
