"""genmesh's REST echo beside its peers, in one run with one load client: a bare FastAPI echo (the
limit of a Python HTTP service here) and Ray Serve 2.60 with its HAProxy ingress.

Each peer runs as `bench.peer_servers` in a session of its own on a loopback port; the same
`bench.loadgen` spec (raw HTTP/1.1 keep-alive, `POST /genmesh/echo`) drives all three, and the CPU
of each server's whole process tree is read around every run. Ray Serve is the optional `bench`
extra (`make bench` installs it); without it that peer is reported as not measured. Every peer
process, Ray's raylet, GCS, controller, replica and HAProxy included, is stopped afterwards.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import psutil

from bench.mesh import BenchMesh
from bench.overhead import loadgen, measured

ROOT = Path(__file__).resolve().parents[1]
PEERS = {"fastapi": "bare FastAPI (the limit)", "ray": "Ray Serve 2.60 + HAProxy"}
START_TIMEOUT_S = {"fastapi": 60.0, "ray": 300.0}
STOP_GRACE_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PeerServer:
    """One peer's process tree: started, waited on until it answers, measured, stopped."""

    def __init__(self, kind: str, scratch: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.scratch = scratch
        self.proc: subprocess.Popen[str] | None = None
        self.seen: dict[int, psutil.Process] = {}
        self.ready_s: float | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        started = time.monotonic()
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.log = self.scratch / "server.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.peer_servers", self.kind, str(self.port), str(self.scratch)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log.open("w"),
            text=True, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.proc.stdout is not None
        deadline = started + START_TIMEOUT_S[self.kind]
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                how = "timed out" if self.proc.poll() is None else f"exited {self.proc.returncode}"
                tail = self.log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
                raise RuntimeError(f"{self.kind} peer did not become ready ({how}): {tail[0][-300:]}")
            readable, _, _ = select.select([self.proc.stdout], [], [], min(remaining, 1.0))
            if readable and self.proc.stdout.readline().strip() == "READY":
                break
        self.ready_s = time.monotonic() - started
        self.tree()

    def tree(self) -> list[psutil.Process]:
        """The peer's live processes; every one ever seen is remembered, to be stopped later
        (Ray's controller and replicas leave the process group)."""
        assert self.proc is not None
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                self.seen.setdefault(p.pid, p)
        return [p for p in self.seen.values() if p.is_running()]

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def stop(self) -> None:
        if self.proc is None:
            return
        self.tree()
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # asks it to shut down cleanly
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(STOP_GRACE_S)
        left = [p for p in self.seen.values() if p.is_running()]
        for p in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(left, timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


@contextlib.contextmanager
def peer_server(kind: str, scratch: Path) -> Iterator[PeerServer]:
    server = PeerServer(kind, scratch)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def available(kind: str) -> str | None:
    """Why a peer cannot run here, or None."""
    if kind == "ray" and importlib.util.find_spec("ray") is None:
        return "Ray Serve is not installed (pip install -e '.[bench]', which `make bench` does)"
    return None


def spec(addr: str, key: str, concurrency: int, **extra: Any) -> dict[str, Any]:
    return {"mode": "rest", "addr": addr, "key": key, "concurrency": concurrency, **extra}


def measure_peer(server: PeerServer, *, sequential: int, duration_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {"ready_s": server.ready_s}
    for name, s in (("sequential", spec(server.addr, "unused", 1, requests=sequential, warmup=50)),
                    ("c16", spec(server.addr, "unused", 16, duration_s=duration_s, warmup=64))):
        before = server.cpu_seconds()
        result = loadgen(s)
        calls = max(1, result["count"] + result["errors"] + s.get("warmup", 0))
        result["cpu_us_per_req"] = round((server.cpu_seconds() - before) / calls * 1e6)
        out[name] = result
    return out


async def measure_genmesh(mesh: BenchMesh, *, sequential: int, duration_s: float) -> dict[str, Any]:
    edge = mesh.addr("edge")
    seq = await measured(mesh, spec(edge, mesh.api_key, 1, requests=sequential, warmup=50))
    c16 = await measured(mesh, spec(edge, mesh.api_key, 16, duration_s=duration_s, warmup=64))
    return {"sequential": seq, "c16": c16}


async def compare(mesh: BenchMesh, *, runs: int, sequential: int, duration_s: float,
                  say: Any = print) -> dict[str, Any]:
    """{"fastapi"|"ray"|"genmesh": [one result per run]}, plus why a peer was skipped.

    Peers start once; each run measures all three back to back, so every ratio compares
    figures taken under the same load."""
    out: dict[str, Any] = {"genmesh": [], "skipped": {}}
    with tempfile.TemporaryDirectory(prefix="genmesh-peer-") as tmp, contextlib.ExitStack() as stack:
        servers: dict[str, PeerServer] = {}
        for kind in PEERS:
            reason = available(kind)
            if reason is None:
                for attempt in (1, 2):  # a loaded machine can fail Ray's own start-up checks
                    say(f"  starting {PEERS[kind]}" + (" (again)" if attempt > 1 else ""))
                    try:
                        servers[kind] = stack.enter_context(peer_server(kind, Path(tmp) / f"{kind}-{attempt}"))
                        say(f"  {PEERS[kind]} ready in {servers[kind].ready_s:.1f} s")
                        reason = None
                        break
                    except RuntimeError as exc:
                        reason = str(exc)
                        say(f"  {PEERS[kind]} failed to start: {reason}")
            if reason is not None:
                out["skipped"][kind] = reason
                say(f"  {PEERS[kind]}: not measured ({reason})")
            out[kind] = []
        for i in range(runs):
            load = os.getloadavg()[0]
            for kind, server in servers.items():
                result = await asyncio.to_thread(measure_peer, server, sequential=sequential,
                                                 duration_s=duration_s)
                result["_load"] = load
                out[kind].append(result)
            result = await measure_genmesh(mesh, sequential=sequential, duration_s=duration_s)
            result["_load"] = load
            out["genmesh"].append(result)
            say(f"  peer run {i + 1}/{runs} (load {load:.1f}): " + ", ".join(
                f"{k} {out[k][-1]['c16']['rps']:.0f} rps / {out[k][-1]['sequential']['p50_ms']:.2f} ms"
                for k in ("fastapi", "ray", "genmesh") if out[k]))
    return out


def rows(result: dict[str, Any]) -> list[Any]:
    """The table's rows: each server's rps and p50 (medians over runs), CPU per request, and
    genmesh's ratios to Ray Serve with HAProxy against their targets (>= 1.0x rps, p50 <= Ray's)."""
    import statistics

    from bench.report import Row

    sec = "REST echo beside its peers (same client, 16 clients + sequential)"

    def med(kind: str, phase: str, key: str) -> float | None:
        values = [r[phase][key] for r in result.get(kind, []) if isinstance(r[phase].get(key), (int, float))]
        return statistics.median(values) if values else None

    def cpu(kind: str) -> tuple[float | None, str]:
        if kind != "genmesh":
            return med(kind, "c16", "cpu_us_per_req"), ""
        per: dict[str, list[float]] = {}
        for r in result["genmesh"]:
            for proc, us in r["c16"].get("cpu_us_per_req", {}).items():
                per.setdefault(proc, []).append(us)
        medians = {proc: statistics.median(v) for proc, v in per.items()}
        note = " + ".join(f"{p} {v:.0f}" for p, v in medians.items() if v >= 5)
        return (sum(medians.values()) if medians else None), note

    out = []
    names = {**PEERS, "genmesh": "genmesh REST /genmesh/echo"}
    for kind, name in names.items():
        if kind in result.get("skipped", {}):
            out.append(Row(sec, name, None, "", note=f"not measured: {result['skipped'][kind]}"))
            continue
        total, note = cpu(kind)
        load = statistics.median([r["_load"] for r in result.get(kind, [])] or [0.0])
        out += [Row(sec, f"{name}: throughput, 16 clients", med(kind, "c16", "rps"), "req/s",
                    note=f"load {load:.1f}"),
                Row(sec, f"{name}: p50 (sequential)", med(kind, "sequential", "p50_ms"), "ms"),
                Row(sec, f"{name}: server CPU per request, 16 clients", total, "us", note=note)]
    ours_rps, ray_rps = med("genmesh", "c16", "rps"), med("ray", "c16", "rps")
    ours_p50, ray_p50 = med("genmesh", "sequential", "p50_ms"), med("ray", "sequential", "p50_ms")
    if ray_rps and ours_rps is not None:
        out.append(Row(sec, "genmesh / Ray Serve HAProxy throughput", ours_rps / ray_rps, "x", ">=", 1.0))
    if ray_p50 and ours_p50 is not None:
        out.append(Row(sec, "genmesh / Ray Serve HAProxy p50", ours_p50 / ray_p50, "x", "<=", 1.0,
                       note=f"Ray {ray_p50:.2f} ms"))
    return out
