"""The mesh the SDK e2e suites talk to: router, billing, an LLM worker serving SmolLM2 (on vLLM
where it is installed) and the edge, warmed so that no test's own request pays the model load.
Tests use the one such mesh of the session, the `smollm2` fixture of tests/e2e/conftest.py."""
from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from typing import AsyncIterator

import httpx
import openai

from genmesh.models import build
from tests.conftest import Infra, Mesh, start_mesh

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
HAS_VLLM = importlib.util.find_spec("vllm") is not None
# Where vLLM is installed it must serve (no silent fallback), in a 1 GB KV cache, 16 sequences
# at a time (more than any test sends at once).
VLLM_ENV = {"GENMESH_LLM_ENGINE": "vllm", "VLLM_CPU_KVCACHE_SPACE": "1", "GENMESH_LLM_MAX_NUM_SEQS": "16"}
# The worker's heartbeats stall for seconds while vLLM starts on two loaded cores; with the tests'
# usual 2 s the router declared it dead twice during the warm-up request and re-placed that
# request, and each re-placement started another engine (three at once, 171 s, then the warm-up
# failed). No test here kills this worker, so a long grace costs nothing.
MESH_ENV = {"GENMESH_WORKER_DEAD_AFTER_S": "30"}


async def warm(mesh: Mesh) -> None:
    """The worker loads the model on first use (minutes for vLLM on a small CPU machine): load it
    once here."""
    async with httpx.AsyncClient(timeout=1200) as http:
        answer = await http.post(f"{mesh.edge_url}/v1/chat/completions", headers={
            "authorization": f"Bearer {mesh.api_key}"}, json={
            "model": SMOLLM2, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})
        answer.raise_for_status()


@contextlib.asynccontextmanager
async def smollm2_mesh(infra: Infra, tmp: Path, models_dir: Path) -> AsyncIterator[Mesh]:
    build.build_missing(models_dir, [SMOLLM2])
    mesh = await start_mesh(infra, tmp, ["router", "billing", "llm", "edge"], models_dir=models_dir,
                            extra_env={**MESH_ENV, **(VLLM_ENV if HAS_VLLM else {})})
    try:
        await warm(mesh)
        yield mesh
    finally:
        await mesh.supervisor.stop()


def strict_sdk(mesh: Mesh, key: str | None = None, timeout: float = 120) -> openai.OpenAI:
    """The official openai client on the mesh's edge, validating every response against its
    types (so a field genmesh shapes wrongly fails the test), and never retrying on its own."""
    return openai.OpenAI(base_url=f"{mesh.edge_url}/v1", api_key=key or mesh.api_key, max_retries=0,
                         _strict_response_validation=True, timeout=timeout)
