"""Each service's own benchmark module (`bench/bench_*.py`, `bench/placement_sim.py`), run in a
process of its own with a time budget: `python -m bench.service_benches <module> <json kwargs>`
prints the module's `run()` result as JSON. A module that is absent, or whose model is missing,
is reported as skipped with the reason."""
from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ServiceBench:
    module: str
    budget_s: float
    kwargs: dict[str, Any] = field(default_factory=dict)


# On a shared 2-core machine one torch thread per benchmark (see bench_imagegen's docstring).
SERVICE_BENCHES = [
    ServiceBench("bench.placement_sim", 120.0, {"requests": 20_000}),
    ServiceBench("bench.bench_imagegen", 300.0, {"threads": 1}),
    ServiceBench("bench.bench_llm_batching", 600.0, {"threads": 1}),
    ServiceBench("bench.bench_apps", 300.0, {}),
]


def run_one(bench: ServiceBench) -> dict[str, Any]:
    """{"status": "ok"|"skipped"|"failed"|"timeout", "seconds", "result"|"reason"}."""
    try:
        found = importlib.util.find_spec(bench.module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        return {"status": "skipped", "reason": f"{bench.module} is not in this checkout", "seconds": 0.0}
    started = time.monotonic()
    try:
        out = subprocess.run([sys.executable, "-m", "bench.service_benches", bench.module,
                              json.dumps(bench.kwargs)], capture_output=True, text=True, cwd=ROOT,
                             timeout=bench.budget_s)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": f"over its {bench.budget_s:.0f} s budget",
                "seconds": time.monotonic() - started}
    seconds = time.monotonic() - started
    lines = out.stdout.strip().splitlines()
    if out.returncode == 0 and lines:
        return {"status": "ok", "seconds": seconds, "result": json.loads(lines[-1])}
    err = out.stderr.strip().splitlines()
    reason = err[-1] if err else f"exit code {out.returncode}"
    missing = any(word in out.stderr for word in ("ModelUnavailable", "FileNotFoundError", "not built",
                                                  "No such file"))
    return {"status": "skipped" if missing else "failed", "reason": reason[-300:], "seconds": seconds}


def main() -> None:
    module = importlib.import_module(sys.argv[1])
    kwargs = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    result = module.run(**kwargs)
    sys.stdout.write(json.dumps(result, default=str) + "\n")


if __name__ == "__main__":
    main()
