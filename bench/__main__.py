"""`make bench`: every benchmark, one table of figures against their targets, and JSON.

    python -m bench [--runs 3] [--only overhead,streaming,status,queue,coldstart,services]
                    [--jobs 10000] [--out bench/results/latest.json]

Mesh figures come from a private mesh (embedded NATS and Postgres, router, billing, echo worker,
edge as processes) driven by `bench.loadgen` in a process of its own; each figure is the median
of `--runs` runs. The echo worker is given a capacity of 64 so placement never waits at 64
clients: the figures are the mesh's overhead, not a queue for a slot. The machine is shared, so
the load average is recorded beside every section, and the CPU each process spent per request
(from /proc) is kept in the JSON: on a busy machine it is steadier than latency.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bench import llm_serving, overhead, peer, queue_bench, startup
from bench.mesh import BenchMesh, bench_mesh
from bench.report import Row, table
from bench.service_benches import SERVICE_BENCHES, run_one

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("overhead", "peer", "streaming", "status", "queue", "coldstart", "startup", "services", "llm")
# Targets on a 2-core machine (issue 8).
TARGETS = {"rest_p50_ms": 1.5, "rest_c16_rps": 2000.0, "grpc_p50_ms": 1.0, "queue_submits_per_s": 1000.0}
MESH_ENV = {"GENMESH_WORKER_CAPACITY": "64", "GENMESH_HEARTBEAT_INTERVAL_S": "1.0"}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def med(values: list[Any]) -> float | None:
    numbers = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(numbers) if numbers else None


def pick(runs: list[dict[str, Any]], *path: str) -> float | None:
    """Median over runs of the value at `path` (missing values are skipped)."""
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        values.append(value)
    return med(values)


async def repeat(runs: int, label: str, fn: Callable[[], Any]) -> list[dict[str, Any]]:
    out = []
    for i in range(runs):
        load = os.getloadavg()[0]
        started = time.monotonic()
        result = await fn()
        result["_load"] = load
        out.append(result)
        say(f"  {label} run {i + 1}/{runs}: {time.monotonic() - started:.0f} s (load {load:.1f})")
    return out


# --- rows from each section's runs ---------------------------------------------------------------

PATH_NAMES = {"direct": "direct worker Echo (baseline)", "router-run": "Router.Run",
              "router-typed": "typed Echo via router", "rest": "REST POST /genmesh/echo"}


def overhead_rows(runs: list[dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    sec = "mesh overhead (echo)"
    direct_p50 = pick(runs, "direct", "sequential", "p50_ms")
    for path, name in PATH_NAMES.items():
        target = (TARGETS["rest_p50_ms"] if path == "rest" else
                  TARGETS["grpc_p50_ms"] if path.startswith("router") else None)
        p50 = pick(runs, path, "sequential", "p50_ms")
        rows.append(Row(sec, f"{name} p50 (sequential)", p50, "ms", "<=" if target else "", target))
        rows.append(Row(sec, f"{name} p99 (sequential)", pick(runs, path, "sequential", "p99_ms"), "ms"))
        if path != "direct" and p50 is not None and direct_p50 is not None:
            rows.append(Row(sec, f"{name} overhead over direct p50", p50 - direct_p50, "ms"))
        c16_target = TARGETS["rest_c16_rps"] if path == "rest" else None
        rows.append(Row(sec, f"{name} throughput, 16 clients", pick(runs, path, "c16", "rps"), "req/s",
                        ">=" if c16_target else "", c16_target))
        rows.append(Row(sec, f"{name} throughput, 64 clients", pick(runs, path, "c64", "rps"), "req/s"))
        cpu = {proc: pick(runs, path, "c16", "cpu_us_per_req", proc)
               for proc in ("edge", "router", "echo", "nats", "billing", "postgres")}
        used = " + ".join(f"{proc} {v:.0f}" for proc, v in cpu.items() if v and v >= 20)
        rows.append(Row(sec, f"{name} CPU per request, 16 clients", sum(v or 0 for v in cpu.values()),
                        "us", note=used))
    return rows


def streaming_rows(runs: list[dict[str, Any]]) -> list[Row]:
    sec = "streaming (100 echo events = 200 messages)"
    rows = []
    names = {"direct": "direct worker", "router-stream": "Router.Stream", "rest-sse": "REST SSE"}
    for path, name in names.items():
        rows.append(Row(sec, f"{name}: time to first event p50", pick(runs, path, "ttfe_p50_ms"), "ms"))
    for path, name in names.items():
        rows.append(Row(sec, f"{name}: time per event", pick(runs, path, "per_event_us"), "us"))
    direct = pick(runs, "direct", "per_event_us")
    for path in ("router-stream", "rest-sse"):
        value = pick(runs, path, "per_event_us")
        if value is not None and direct is not None:
            rows.append(Row(sec, f"{names[path]}: per-event overhead over direct", value - direct, "us"))
    return rows


def status_rows(runs: list[dict[str, Any]]) -> list[Row]:
    sec = "status polling (a completed job)"
    return [
        Row(sec, "Router.Status p50 (sequential)", pick(runs, "grpc", "sequential", "p50_ms"), "ms"),
        Row(sec, "Router.Status throughput, 16 clients", pick(runs, "grpc", "c16", "rps"), "req/s"),
        Row(sec, "Router.Status router CPU per poll", pick(runs, "grpc", "c16", "cpu_us_per_req", "router"), "us"),
        Row(sec, "REST GET .../status p50 (sequential)", pick(runs, "rest", "sequential", "p50_ms"), "ms"),
        Row(sec, "REST GET .../status throughput, 16 clients", pick(runs, "rest", "c16", "rps"), "req/s"),
    ]


def queue_rows(runs: list[dict[str, Any]], jobs: int) -> list[Row]:
    sec = f"queue ({jobs:,} jobs, 64 submitting clients)"
    return [
        Row(sec, "submit throughput", pick(runs, "submit_per_s"), "submits/s", ">=",
            TARGETS["queue_submits_per_s"]),
        Row(sec, "submit p50", pick(runs, "submit_p50_ms"), "ms"),
        Row(sec, "submit-to-complete p50", pick(runs, "latency_p50_s"), "s"),
        Row(sec, "submit-to-complete p99", pick(runs, "latency_p99_s"), "s"),
        Row(sec, "completion throughput", pick(runs, "completed_per_s"), "jobs/s"),
        Row(sec, "completed (worst run)", min((r["completed"] for r in runs), default=None), "jobs", "==",
            float(jobs)),
        Row(sec, "lost (worst run)", max((r["lost"] for r in runs), default=None), "jobs", "==", 0.0),
        Row(sec, "billed (worst run)", min((r["billed"] for r in runs), default=None), "records", "==",
            float(jobs)),
        Row(sec, "router CPU per job (submit and run)", pick(runs, "cpu_us_per_submit", "router"), "us"),
    ]


def coldstart_rows(result: dict[str, Any]) -> list[Row]:
    sec = f"cold start ({result.get('model', 'tiny model')} through the worker's ModelCache)"
    if "error" in result:
        return [Row(sec, "cold start", None, "s", note=result["error"])]
    return [
        Row(sec, "first load in a fresh process (imports + disk)", result["first_cold_s"], "s"),
        Row(sec, "cold load p50 (files in page cache)", result["cold_p50_s"], "s"),
        Row(sec, "warm cache hit p50", result["warm_p50_us"], "us"),
    ]


def service_rows(results: dict[str, dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    for module, outcome in results.items():
        sec = f"{module.removeprefix('bench.')} ({outcome['status']}, {outcome['seconds']:.0f} s)"
        if outcome["status"] != "ok":
            rows.append(Row(sec, "not measured", None, "", note=outcome.get("reason", "")))
            continue
        r = outcome["result"]
        if module == "bench.placement_sim":
            ours = 100 * r["resident-first"]["cold_fraction"]
            rr = 100 * r["round-robin"]["cold_fraction"]
            rows += [Row(sec, "cold loads, resident-first", ours, "%", "<=", rr / 2,
                         note="target: at most half of round-robin's"),
                     Row(sec, "cold loads, round-robin", rr, "%"),
                     Row(sec, "cold loads, random", 100 * r["random"]["cold_fraction"], "%")]
        elif module == "bench.bench_imagegen":
            rows += [Row(sec, "per-step time", r["step_ms"], "ms"),
                     Row(sec, "time to first preview", r["first_preview_ms"], "ms"),
                     Row(sec, "batched throughput", r["batched_images_per_s"], "images/s"),
                     Row(sec, "batching speedup", r["batching_speedup"], "x", ">=", 1.3)]
        elif module == "bench.bench_llm_batching":
            rows += [Row(sec, "sequential", r["sequential"]["tokens_per_s"], "tok/s"),
                     Row(sec, f"{r['concurrency']} concurrent streams", r["concurrent"]["tokens_per_s"], "tok/s"),
                     Row(sec, "time to first token p50 (concurrent)", r["concurrent"]["ttft_p50_s"], "s"),
                     Row(sec, "continuous-batching speedup", r["speedup"], "x", ">=", r.get("target_speedup", 4.0))]
        elif module == "bench.bench_apps":
            rows += [Row(sec, "cold start p50 (request -> runner ready)", r["cold_start_p50_s"], "s", "<=", 1.0),
                     Row(sec, "warm Router.Run p50", r["warm_grpc_p50_ms"], "ms", "<=", 25.0),
                     Row(sec, "warm FAL POST p50", r["warm_http_p50_ms"], "ms")]
        else:
            rows.append(Row(sec, "result", None, "", note=json.dumps(r)[:200]))
    return rows


# --- the run -------------------------------------------------------------------------------------

async def mesh_sections(args: argparse.Namespace, data: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    wanted = [s for s in ("overhead", "peer", "streaming", "status", "queue") if s in args.only]
    if not wanted:
        return rows
    with tempfile.TemporaryDirectory(prefix="genmesh-bench-") as tmp:
        say("starting a private mesh (NATS, Postgres, router, billing, echo, edge)")
        async with bench_mesh(Path(tmp), ["router", "billing", "echo", "edge"], MESH_ENV) as mesh:
            try:
                rows += await _mesh_sections(mesh, args, wanted, data)
            finally:
                data["mesh_pids"] = {n: mesh.pid(n) for n in mesh.supervisor.children}
    return rows


async def _mesh_sections(mesh: BenchMesh, args: argparse.Namespace, wanted: list[str],
                         data: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "overhead" in wanted:
        say("mesh overhead: direct / Router.Run / typed proxy / REST, sequential and 16/64 clients")
        runs = await repeat(args.runs, "overhead", lambda: overhead.mesh_overhead(
            mesh, sequential=args.sequential, duration_s=args.duration))
        data["overhead"] = runs
        rows += overhead_rows(runs)
    if "peer" in wanted:
        say("REST echo beside bare FastAPI and Ray Serve with HAProxy (same client, same run)")
        data["peer"] = await peer.compare(mesh, runs=args.runs, sequential=args.sequential,
                                          duration_s=args.duration, say=say)
        rows += peer.rows(data["peer"])
    if "streaming" in wanted:
        say("streaming: 100-event streams, time to first event and per-event cost")
        runs = await repeat(args.runs, "streaming", lambda: overhead.streaming(mesh, requests=args.stream_requests))
        data["streaming"] = runs
        rows += streaming_rows(runs)
    if "status" in wanted:
        say("status polling")
        runs = await repeat(args.runs, "status", lambda: overhead.status_polling(
            mesh, requests=args.sequential, duration_s=args.duration))
        data["status"] = runs
        rows += status_rows(runs)
    if "queue" in wanted:
        say(f"queue: {args.jobs:,} jobs")
        runs = await repeat(args.queue_runs, "queue", lambda: queue_bench.queue_run(mesh, jobs=args.jobs))
        data["queue"] = runs
        rows += queue_rows(runs, args.jobs)
    return rows


def coldstart_section(args: argparse.Namespace) -> dict[str, Any]:
    say("cold start: tiny-sd through the imagegen worker's ModelCache")
    with tempfile.TemporaryDirectory(prefix="genmesh-bench-models-") as tmp:
        try:
            out = subprocess.run([sys.executable, "-m", "bench.coldstart", tmp, str(max(3, args.runs))],
                                 capture_output=True, text=True, cwd=ROOT, timeout=600)
        except subprocess.TimeoutExpired:
            return {"error": "over its 600 s budget"}
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        tail = out.stderr.strip().splitlines()
        return {"error": tail[-1] if tail else f"exit code {out.returncode}"}
    return json.loads(lines[-1])


def startup_section() -> dict[str, Any]:
    """bench.startup in a process of its own, with a budget (two full starts and a build)."""
    try:
        out = subprocess.run([sys.executable, "-m", "bench.startup", json.dumps({"idle_s": 30})],
                             capture_output=True, text=True, cwd=ROOT, timeout=1500)
    except subprocess.TimeoutExpired:
        return {"error": "over its 1500 s budget"}
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        tail = out.stderr.strip().splitlines()
        return {"error": tail[-1] if tail else f"exit code {out.returncode}"}
    return json.loads(lines[-1])


def environment() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                                    cwd=ROOT).stdout.strip())
    except OSError:
        commit, dirty = "", False
    return {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "cpus": overhead.cpu_count(), "load_avg_start": os.getloadavg(),
            "python": platform.python_version(), "commit": commit + ("+dirty" if dirty else ""),
            "mesh_env": MESH_ENV}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="runs per figure (the median is reported)")
    p.add_argument("--queue-runs", type=int, default=None, help="runs of the queue section (default --runs)")
    p.add_argument("--jobs", type=int, default=10_000, help="jobs in the queue section")
    p.add_argument("--sequential", type=int, default=300, help="requests per sequential latency run")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per throughput run")
    p.add_argument("--stream-requests", type=int, default=60, help="streams per streaming run")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    args.queue_runs = args.queue_runs or args.runs
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    data: dict[str, Any] = {"environment": environment(), "args": {k: (str(v) if isinstance(v, Path) else v)
                                                                  for k, v in vars(args).items()}}
    say(f"genmesh bench on {data['environment']['cpus']} cores, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; median of {args.runs} runs per figure")
    rows = asyncio.run(mesh_sections(args, data))
    if "coldstart" in args.only:
        data["coldstart"] = coldstart_section(args)
        rows += coldstart_rows(data["coldstart"])
    if "startup" in args.only:
        say("start-up: genmesh up cold and warm, time to the ready line; idle CPU per process")
        data["startup"] = startup_section()
        rows += startup.rows(data["startup"])
    if "services" in args.only:
        data["services"] = {}
        for bench in SERVICE_BENCHES:
            say(f"{bench.module} (budget {bench.budget_s:.0f} s)")
            data["services"][bench.module] = run_one(bench)
        rows += service_rows(data["services"])
    if "llm" in args.only:
        say("LLM serving: vllm bench serve against genmesh's edge and against vllm serve (same model)")
        data["llm"] = llm_serving.section()
        rows += llm_serving.rows(data["llm"])
    data["environment"]["load_avg_end"] = os.getloadavg()
    data["seconds"] = time.monotonic() - started
    data["rows"] = [r.to_json() for r in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1, default=str))
    env = data["environment"]
    print(f"genmesh bench  {env['when']}  commit {env['commit']}  {env['cpus']} cores  "
          f"load {env['load_avg_start'][0]:.1f} -> {env['load_avg_end'][0]:.1f}  "
          f"median of {args.runs} runs  ({data['seconds'] / 60:.1f} min)")
    print(table(rows))
    missed = [r for r in rows if r.met is False]
    print(f"\n{len(missed)} of {sum(r.met is not None for r in rows)} targets missed; "
          f"JSON in {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
