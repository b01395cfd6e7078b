"""The mesh the SDK e2e suites talk to: router, billing, an LLM worker serving SmolLM2 (on vLLM
where it is installed) and the edge, warmed so that no test's own request pays the model load."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import AsyncIterator

import httpx

from genmesh.models import build
from tests.conftest import Infra, Mesh, start_mesh

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


async def warm(mesh: Mesh) -> None:
    """The worker loads the model on first use (minutes for vLLM on a small CPU machine): load it
    once here."""
    async with httpx.AsyncClient(timeout=900) as http:
        answer = await http.post(f"{mesh.edge_url}/v1/chat/completions", headers={
            "authorization": f"Bearer {mesh.api_key}"}, json={
            "model": SMOLLM2, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})
        answer.raise_for_status()


@contextlib.asynccontextmanager
async def smollm2_mesh(infra: Infra, tmp: Path, models_dir: Path) -> AsyncIterator[Mesh]:
    build.build_missing(models_dir, [SMOLLM2])
    mesh = await start_mesh(infra, tmp, ["router", "billing", "llm", "edge"], models_dir=models_dir)
    try:
        await warm(mesh)
        yield mesh
    finally:
        await mesh.supervisor.stop()
