"""Abandoned chat streams are freed: 100 clients open a streamed chat through the edge and leave,
4 at their first token and the rest after about 2 s (those still queued before their first
token), then a new chat completes, the
engine holds no sequence of theirs, and each left stream that had been sent tokens is billed for
them in a CANCELLED usage record.

The llm worker runs in this process (joined to a mesh of router, billing and edge processes) so
that its engine can be asked what it still holds; it serves SmolLM2 with vLLM where vLLM is
installed, else with the transformers engine. How fast the new chat is answered is measured in
`make bench` (bench/llm_serving.py), not asserted here."""
from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import json
from pathlib import Path
from typing import AsyncIterator

import asyncpg
import httpx
import pytest
import pytest_asyncio

from genmesh.models import build
from genmesh.services.llm.server import LLMComponent
from tests.conftest import Infra, Mesh, serve_in_mesh, start_mesh, wait_for_workers

pytestmark = pytest.mark.asyncio(loop_scope="session")

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
HAS_VLLM = importlib.util.find_spec("vllm") is not None
STREAMS = 100
AT_FIRST_TOKEN = 4  # clients that leave as soon as their first content arrives
LEAVE_AFTER_S = 2.0  # how long each client stays (the behaviour under test, not a limit)
MAX_NUM_SEQS = 16  # so that most of the 100 wait in the queue and leave before their first token
STORY = {"model": SMOLLM2, "messages": [{"role": "user", "content": "Write a long story about the sea."}],
         "max_tokens": 2000, "ignore_eos": True, "stream": True}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def served(infra: Infra, tmp_path_factory: pytest.TempPathFactory,
                 models_dir: Path) -> AsyncIterator[tuple[Mesh, LLMComponent]]:
    build.build_missing(models_dir, [SMOLLM2])
    mesh = await start_mesh(infra, tmp_path_factory.mktemp("abandoned"), ["router", "billing", "edge"],
                            models_dir=models_dir, extra_env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    settings = mesh.worker_settings("llm", models_dir=models_dir, torch_threads=1,
                                    llm_engine="vllm" if HAS_VLLM else "transformers",
                                    llm_max_num_seqs=MAX_NUM_SEQS)
    component = LLMComponent(settings)
    try:
        async with serve_in_mesh(component):
            await wait_for_workers(mesh.supervisor, ["llm"])
            yield mesh, component
    finally:
        await mesh.supervisor.stop()


async def leave(client: httpx.AsyncClient, *, after_s: float | None = None) -> bool:
    """One streamed chat, left `after_s` seconds in (before its first token if it is still queued),
    or at its first content when `after_s` is None; whether any content had arrived by then."""
    got_content = False

    async def read() -> None:
        nonlocal got_content
        async with client.stream("POST", "/v1/chat/completions", json=STORY) as resp:
            assert resp.status_code == 200, await resp.aread()
            async for line in resp.aiter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    got_content = True
                    if after_s is None:
                        return  # leaving closes the connection mid-answer

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(read(), after_s)  # leaving closes the connection mid-answer
    return got_content


def billed(row: asyncpg.Record) -> dict[str, float]:
    return {item["unit"]: item["quantity"] for item in json.loads(row["usage"])}


async def ledger_rows(pool: asyncpg.Pool, with_output: int, completed: set[str]) -> list[asyncpg.Record]:
    """The ledger's rows for SmolLM2, once the `completed` chats (by request id) are recorded and
    `with_output` cancelled ones bill output tokens (billing writes in batches, in any order)."""
    for _ in range(600):
        rows = await pool.fetch("SELECT request_id, status, usage FROM ledger WHERE model_id=$1", SMOLLM2)
        if (completed <= {r["request_id"] for r in rows} and
                sum(r["status"] == "CANCELLED" and billed(r).get("output_tokens", 0) > 0 for r in rows)
                >= with_output):
            return rows
        await asyncio.sleep(0.1)
    return rows


async def test_a_hundred_abandoned_streams_are_freed_billed_and_a_new_chat_completes(
        served: tuple[Mesh, LLMComponent]) -> None:
    mesh, component = served
    headers = {"authorization": f"Bearer {mesh.api_key}"}
    limits = httpx.Limits(max_connections=STREAMS + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=mesh.edge_url, headers=headers, timeout=1200, limits=limits) as client:
        # The model loads before the clients come (vLLM's start takes minutes on two busy cores).
        warm = await client.post("/v1/chat/completions", json={**STORY, "stream": False, "max_tokens": 1})
        assert warm.status_code == 200, warm.text
        engine = component.runtime.cache.entries[SMOLLM2].value
        assert type(engine).__name__ == ("VLLMEngine" if HAS_VLLM else "LLMEngine")
        # A few leave at their first token (so some were sent tokens however slow this machine is
        # today); the rest after 2 s, most of them still queued.
        got_content = await asyncio.gather(*(leave(client) for _ in range(AT_FIRST_TOKEN)),
                                           *(leave(client, after_s=LEAVE_AFTER_S)
                                             for _ in range(STREAMS - AT_FIRST_TOKEN)))

        answer = await client.post("/v1/chat/completions", json={
            "model": SMOLLM2, "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 8})
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"]

    # Every abandoned sequence has left the engine (the new chat was the only one after them).
    assert engine.unfinished() == 0
    assert component.generations == 0
    pool = await asyncpg.create_pool(mesh.env["GENMESH_DATABASE_URL"], min_size=1, max_size=1)
    try:
        everything = await ledger_rows(pool, sum(got_content),
                                       {warm.headers["x-request-id"], answer.headers["x-request-id"]})
    finally:
        await pool.close()
    # The warm-up and the new chat completed; every abandoned stream that reached the router ended
    # CANCELLED (one that left before the router ran it generated nothing and has no record).
    statuses = collections.Counter(r["status"] for r in everything)
    assert statuses["COMPLETED"] == 2 and set(statuses) <= {"COMPLETED", "CANCELLED"}, statuses
    assert 0 < statuses["CANCELLED"] <= STREAMS
    # The streams that were sent tokens are billed for them; none ran on to its 2000 tokens.
    with_output = [b for b in map(billed, everything) if b.get("output_tokens", 0) > 0]
    assert len(with_output) >= 2 + sum(got_content) and sum(got_content) >= AT_FIRST_TOKEN
    assert all(b["input_tokens"] > 0 for b in with_output)
    assert sum(b["output_tokens"] >= 2000 for b in with_output) == 0
