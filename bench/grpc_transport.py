"""gRPC transport options for one mesh hop, compared in one run: the cost of a mutual-TLS echo
call (the shape of router -> echo worker: unary-stream with two messages back, and the unary-unary
shape of edge -> router) under each channel/server option set genmesh could use.

The server runs in its own process (as a worker does), the client drives 16 concurrent calls for
a fixed time; both processes' CPU is read around the run, so each variant reports requests/s and
CPU microseconds per call on each side. Run: `.venv/bin/python -m bench.grpc_transport [seconds]
[variant ...]`; GRPC_POLL_STRATEGY set for the run applies to both processes.

Found on 2 shared cores (load 2-4), 2026-12-02, repeated runs:
- unary-unary costs about half of unary-stream per side (client ~150-230 us vs ~330-470 us, server
  ~200-290 us vs ~330-530 us). Edge -> router (Router.Run) is already unary; router -> worker is
  unary-stream because every worker RPC streams: a unary worker RPC for calls whose partials never
  reach the caller (a sync run) is the one transport change here worth its contract change.
- A unix socket was 10-20% cheaper per call than loopback TCP in isolation, but in the whole mesh
  (echo advertising `unix:` under `genmesh up`, measured A/B twice in one run beside Ray Serve) REST
  echo did fewer requests/s (395 vs 526, 628 vs 799), so genmesh keeps TCP.
- BDP probe off, optimization_target latency/throughput, GRPC_POLL_STRATEGY=poll: no difference
  above run-to-run noise (which is +-50% on this machine); none adopted.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import psutil

from genmesh import meshtls
from genmesh.rpc import CHANNEL_OPTIONS, SERVER_OPTIONS

ROOT = Path(__file__).resolve().parents[1]
METHOD_STREAM = "/bench.Echo/Stream"
METHOD_UNARY = "/bench.Echo/Unary"
CONCURRENCY = 16

# name -> (extra channel options, extra server options, transport)
VARIANTS: dict[str, tuple[list[tuple[str, Any]], list[tuple[str, Any]], str]] = {
    "baseline-tcp": ([], [], "tcp"),
    "no-bdp-probe": ([("grpc.http2.bdp_probe", 0)], [("grpc.http2.bdp_probe", 0)], "tcp"),
    "opt-latency": ([("grpc.optimization_target", "latency")],
                    [("grpc.optimization_target", "latency")], "tcp"),
    "opt-throughput": ([("grpc.optimization_target", "throughput")],
                       [("grpc.optimization_target", "throughput")], "tcp"),
    "unix-socket": ([], [], "unix"),
}


def _creds(tls_dir: Path) -> tuple[meshtls.MeshCredentials, meshtls.MeshCredentials]:
    made = meshtls.ensure(tls_dir, ["router", "echo"])
    server, client = made["echo"], made["router"]
    return (meshtls.MeshCredentials.from_files(server.ca_file, server.cert_file, server.key_file),
            meshtls.MeshCredentials.from_files(client.ca_file, client.cert_file, client.key_file))


async def serve(address: str, tls_dir: Path, extra: list[tuple[str, Any]]) -> None:
    server_creds, _ = _creds(tls_dir)

    async def stream(request: bytes, context: grpc.aio.ServicerContext) -> Any:
        yield b"usage" + request[:4]
        yield request

    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    server = grpc.aio.server(options=[*SERVER_OPTIONS, *extra])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.Echo", {
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Unary": grpc.unary_unary_rpc_method_handler(unary)})])
    meshtls.add_port(server, address, server_creds)
    await server.start()
    print("READY", flush=True)
    await server.wait_for_termination()


async def drive(address: str, tls_dir: Path, extra: list[tuple[str, Any]], method: str,
                seconds: float) -> tuple[int, float, float, float]:
    _, client_creds = _creds(tls_dir)
    channel = meshtls.channel(address, client_creds, "echo", [*CHANNEL_OPTIONS, *extra])
    if method == METHOD_STREAM:
        call = channel.unary_stream(method)
    else:
        call = channel.unary_unary(method)
    payload = b'{"prompt": "hello"}' * 2
    latencies: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        if method == METHOD_STREAM:
            async for _ in call(payload):
                pass
        else:
            await call(payload)
        latencies.append(time.perf_counter() - started)

    for _ in range(200):  # warm: handshake, caches
        await one()
    latencies.clear()
    for _ in range(500):  # sequential p50
        await one()
    seq = sorted(latencies)[len(latencies) // 2]
    latencies.clear()
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await one()
            done += 1

    me = psutil.Process()
    cpu0 = sum(me.cpu_times()[:2])
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - t0
    cpu = sum(me.cpu_times()[:2]) - cpu0
    await channel.close()
    return done, elapsed, cpu, seq


def run_variant(name: str, method: str, seconds: float, scratch: Path) -> dict[str, Any]:
    chan_extra, server_extra, transport = VARIANTS[name]
    address = (f"unix:{scratch}/{name}.sock" if transport == "unix"
               else f"127.0.0.1:{_free_port()}")
    proc = subprocess.Popen([sys.executable, "-m", "bench.grpc_transport", "--serve", address,
                             str(scratch / "tls"), json.dumps(server_extra)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "READY":
            raise RuntimeError(f"{name}: server did not start")
        server = psutil.Process(proc.pid)
        scpu0 = sum(server.cpu_times()[:2])
        done, elapsed, ccpu, seq = asyncio.run(drive(address, scratch / "tls", chan_extra, method, seconds))
        scpu = sum(server.cpu_times()[:2]) - scpu0
    finally:
        proc.terminate()
        proc.wait(10)
    # the server's CPU also covers the warm-up and sequential calls (700 calls) before the timed run
    return {"variant": name, "method": method.rsplit("/", 1)[1], "rps": round(done / elapsed),
            "seq_p50_us": round(seq * 1e6), "client_cpu_us": round(ccpu / done * 1e6),
            "server_cpu_us": round(scpu / (done + 700) * 1e6)}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--serve":
        from genmesh.rpc import use_fast_event_loop

        use_fast_event_loop()
        asyncio.run(serve(argv[1], Path(argv[2]), [tuple(x) for x in json.loads(argv[3])]))
        return
    seconds = float(argv[0]) if argv else 4.0
    only = argv[1:] or list(VARIANTS)
    from genmesh.rpc import use_fast_event_loop

    use_fast_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        rows = []
        for name in only:
            for method in (METHOD_STREAM, METHOD_UNARY):
                rows.append(run_variant(name, method, seconds, scratch))
                print(json.dumps(rows[-1]), flush=True)
    print(f"{'variant':16} {'method':7} {'rps':>6} {'seq p50 us':>10} {'client us':>9} {'server us':>9}")
    for r in rows:
        print(f"{r['variant']:16} {r['method']:7} {r['rps']:6} {r['seq_p50_us']:10} "
              f"{r['client_cpu_us']:9} {r['server_cpu_us']:9}")


if __name__ == "__main__":
    main(sys.argv[1:])
