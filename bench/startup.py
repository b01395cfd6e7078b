"""Start-up and idle cost of the whole mesh, as a user runs it: `genmesh up` (every service) on a
scratch data directory, timed from the command to its ready line, twice:

  cold  a fresh data directory (Postgres initdb, the mesh CA, keys) and, if the models directory
        has none yet, the local models built first (reported beside it)
  warm  the same data directory and models again: what a second `make run` does

In the warm run, once every model worker has joined (bounded), the CPU time of every process
`genmesh up` started (NATS and Postgres included) is read over `idle_s` seconds with no request:
the idle mesh's cost per process, in percent of one core. Then one chat loads the LLM (vLLM's
engine where installed: its own processes join the table) and the idle CPU is read again, as a
mesh that has served is idle; last, the first chat after that idle is timed beside the next one
(what idling costs the first request).

Run as `python -m bench.startup <json kwargs>` (a process of its own); prints one JSON line.
Everything started is stopped (SIGTERM, then SIGKILL for anything left)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from genmesh.up import READY_WITH, available_services, free_port

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 600.0
JOIN_TIMEOUT_S = 300.0
DEFAULT_MODELS_DIR = Path.home() / ".cache" / "genmesh-bench" / "models"
# The chat model the loaded-idle phase wakes (served by vLLM where it is installed).
LLM_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
LOAD_TIMEOUT_S = 600.0


class Up:
    """One `genmesh up` child, its output read line by line with a deadline."""

    def __init__(self, data_dir: Path, models_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENMESH_")}
        env.update(GENMESH_MODELS_DIR=str(models_dir), GENMESH_LOG_LEVEL="WARNING", HF_HUB_OFFLINE="1",
                   PYTHONUNBUFFERED="1")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "genmesh.cli", "up", "--data-dir", str(data_dir),
             "--edge-port", str(free_port()), "--grpc-port", str(free_port())],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        self.sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.lines: list[tuple[float, str]] = []
        self.seen: dict[int, psutil.Process] = {}

    def until(self, pattern: str, timeout: float) -> float | None:
        """Seconds from the start to the first output line matching `pattern` (None: not seen)."""
        regex = re.compile(pattern)
        for at, line in self.lines:
            if regex.search(line):
                return at
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if not self.sel.select(timeout=min(1.0, max(0.0, deadline - time.monotonic()))):
                continue
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            if not line:
                break
            at = time.monotonic() - self.started
            self.lines.append((at, line.rstrip()))
            if regex.search(line):
                return at
        return None

    def processes(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                self.seen.setdefault(p.pid, p)
        return [p for p in self.seen.values() if p.is_running()]

    def stop(self) -> None:
        self.processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(90)
        left = [p for p in self.seen.values() if p.is_running()]
        for p in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(left, timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def label(p: psutil.Process) -> str:
    """A process's name in the table: the genmesh service, or nats / postgres."""
    try:
        cmd = " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    found = re.search(r"genmesh\.services\.(\w+)", cmd)
    if found:
        return found.group(1)
    if "genmesh.cli" in cmd:
        return "supervisor"
    if "nats-server" in cmd:
        return "nats"
    if "postgres" in cmd:
        return "postgres"
    if cmd.startswith("VLLM::"):  # vLLM's engine core and worker (their titles), under the llm worker
        return "llm-" + cmd.split()[0].removeprefix("VLLM::").lower()
    return p.name()


def idle_cpu(up: Up, seconds: float) -> dict[str, Any]:
    """Percent of one core each kind of process spent over `seconds`, and how many there were."""
    procs = up.processes()

    def times() -> dict[int, float]:
        out = {}
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
        return out

    names = {p.pid: label(p) for p in procs}
    before, started = times(), time.monotonic()
    time.sleep(seconds)
    after, elapsed = times(), time.monotonic() - started
    per: dict[str, float] = {}
    counts: dict[str, int] = {}
    for pid, t in after.items():
        name = names[pid]
        per[name] = per.get(name, 0.0) + 100 * (t - before.get(pid, t)) / elapsed
        counts[name] = counts.get(name, 0) + 1
    return {"seconds": elapsed, "percent_of_core": {k: round(v, 2) for k, v in sorted(per.items())},
            "total_percent_of_core": round(sum(per.values()), 2), "processes": counts}


def one_start(data_dir: Path, models_dir: Path, *, idle_s: float = 0.0) -> dict[str, Any]:
    workers = [s for s in available_services() if s not in READY_WITH]
    up = Up(data_dir, models_dir)
    try:
        ready = up.until(r"^genmesh ready:", READY_TIMEOUT_S)
        out: dict[str, Any] = {"ready_s": ready,
                               "built_models": any("building" in line for _, line in up.lines)}
        if ready is None:
            out["error"] = "no ready line: " + " | ".join(line for _, line in up.lines[-5:])
            return out
        joined = {}
        for name in workers:
            joined[name] = up.until(rf"^genmesh: {name} (ready|failed)", JOIN_TIMEOUT_S)
        out["joined_s"] = joined
        out["all_joined_s"] = max((v for v in joined.values() if v is not None), default=None)
        out["output"] = [f"{at:7.1f}s {line}" for at, line in up.lines if not line.startswith("api key")]
        if idle_s:
            time.sleep(5.0)  # let start-up work (first heartbeats, price seeding) settle
            out["idle"] = idle_cpu(up, idle_s)
            out["loaded"] = loaded_idle(up, idle_s)
        return out
    finally:
        up.stop()


def chat_s(base_url: str, key: str, timeout: float) -> float:
    """Seconds one short chat takes through the edge (raises unless it succeeds)."""
    started = time.monotonic()
    r = httpx.post(f"{base_url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   timeout=timeout, json={"model": LLM_MODEL, "max_tokens": 8,
                                          "messages": [{"role": "user", "content": "Say hi"}]})
    r.raise_for_status()
    return time.monotonic() - started


def loaded_idle(up: Up, seconds: float) -> dict[str, Any]:
    """The idle CPU once a chat has loaded the LLM, and the first chat after that idle against
    the next (back to back)."""
    text = "\n".join(line for _, line in up.lines)
    url, key = re.search(r"genmesh ready: (http://\S+)", text), re.search(r"^api key: (\S+)", text, re.M)
    if url is None or key is None:
        return {"error": "no edge address or api key in genmesh up's output"}
    base = url.group(1)
    try:
        out: dict[str, Any] = {"load_chat_s": chat_s(base, key.group(1), LOAD_TIMEOUT_S),
                               "warm_chat_s": chat_s(base, key.group(1), 60.0)}
        time.sleep(5.0)  # the chats' own after-work (usage records, job events) settles
        out["idle"] = idle_cpu(up, seconds)
        out["after_idle_chat_s"] = chat_s(base, key.group(1), 60.0)
        out["next_chat_s"] = chat_s(base, key.group(1), 60.0)
    except httpx.HTTPError as exc:
        return {"error": f"chat with {LLM_MODEL} failed: {exc!r}"}
    return out


def run(idle_s: float = 30.0, models_dir: str | None = None) -> dict[str, Any]:
    models = Path(models_dir or os.environ.get("GENMESH_MODELS_DIR") or DEFAULT_MODELS_DIR)
    models.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="genmesh-startup-") as tmp:
        data = Path(tmp) / "data"
        try:
            cold = one_start(data, models)
            warm = one_start(data, models, idle_s=idle_s)
        finally:
            _remove_cluster(data)
    return {"models_dir": str(models), "cold": cold, "warm": warm, "load_avg": os.getloadavg()}


def _remove_cluster(data_dir: Path) -> None:
    """As root, Postgres's cluster lives outside the data directory (see genmesh.embedded):
    the bench's scratch cluster goes with its scratch directory."""
    import shutil

    pointer = data_dir / "postgres" / "pgdata.location"
    if pointer.is_file():
        cluster = Path(pointer.read_text().strip())
        if cluster.name.startswith("pgdata-") and not cluster.is_relative_to(data_dir):
            shutil.rmtree(cluster, ignore_errors=True)


def main() -> None:
    kwargs = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    sys.stdout.write(json.dumps(run(**kwargs)) + "\n")


if __name__ == "__main__":
    main()


def rows(result: dict[str, Any]) -> list[Any]:
    """Table rows: time to the ready line cold and warm (target: warm within 15 s), until every
    model worker joined, and the idle mesh's CPU (target: at most 2% of one core in total)."""
    from bench.report import Row

    sec = "start-up and idle (genmesh up, every service)"
    if "error" in result:
        return [Row(sec, "start-up", None, "s", note=result["error"])]
    out = []
    for phase in ("cold", "warm"):
        r = result[phase]
        note = "models built first" if r.get("built_models") else ""
        out.append(Row(sec, f"{phase}: time to the ready line", r.get("ready_s"), "s",
                       "<=" if phase == "warm" else "", 15.0 if phase == "warm" else None,
                       note=r.get("error", note)))
        out.append(Row(sec, f"{phase}: until every model worker joined", r.get("all_joined_s"), "s"))
    idle = result["warm"].get("idle")
    if idle:
        out += idle_rows(sec, idle, "idle CPU")
    loaded = result["warm"].get("loaded")
    if loaded and "error" in loaded:
        out.append(Row(sec, "idle CPU with the LLM loaded", None, "% of a core", "<=", 2.0, note=loaded["error"]))
    elif loaded:
        out += idle_rows(sec, loaded["idle"], "idle CPU with the LLM loaded")
        out.append(Row(sec, "first chat after that idle", 1000 * loaded["after_idle_chat_s"], "ms",
                       note=f"next chat {1000 * loaded['next_chat_s']:.0f} ms, "
                            f"the loading chat {loaded['load_chat_s']:.1f} s"))
    return out


def idle_rows(sec: str, idle: dict[str, Any], name: str) -> list[Any]:
    """The idle mesh's total (target: at most 2% of one core), and the same without the LLM worker
    and its engine's processes (vLLM's own, shown apart)."""
    from bench.report import Row

    per = idle["percent_of_core"]
    top = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.05)
    rows = [Row(sec, f"{name} over {idle['seconds']:.0f} s, {sum(idle['processes'].values())} processes",
                idle["total_percent_of_core"], "% of a core", "<=", 2.0, note=top)]
    llm = sum(v for k, v in per.items() if k == "llm" or k.startswith("llm-"))
    if "llm" in per:
        rows.append(Row(sec, f"{name} without the LLM worker", idle["total_percent_of_core"] - llm,
                        "% of a core", "<=", 2.0, note=f"llm worker and its engine alone {llm:.2f}"))
    return rows
