"""Per-key limits through the edge, and cancelling a job that is still waiting in the queue."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.conftest import Mesh

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def new_key(http: httpx.AsyncClient, mesh: Mesh, **limits: float) -> str:
    resp = await http.post("/v1/keys", json={"name": "limited", **limits},
                           headers={"Authorization": f"Bearer {mesh.api_key}"})
    assert resp.status_code == 200, resp.text
    return resp.json()["secret"]


async def test_over_the_rate_limit_is_429_with_retry_after(echo_mesh: Mesh) -> None:
    async with httpx.AsyncClient(base_url=echo_mesh.edge_url, timeout=30) as http:
        key = await new_key(http, echo_mesh, rate_limit_per_minute=60)
        headers = {"Authorization": f"Key {key}"}
        first = await http.post("/genmesh/echo", json={"prompt": "1"}, headers=headers)
        second = await http.post("/genmesh/echo", json={"prompt": "2"}, headers=headers)
        assert first.status_code == 200
        assert second.status_code == 429
        assert int(second.headers["retry-after"]) >= 1
        assert "rate limit" in second.json()["detail"]
        openai_style = await http.post("/v1/embeddings", json={"model": "x", "input": "y"},
                                       headers={"Authorization": f"Bearer {key}"})
        assert openai_style.status_code in (429, 404)  # limited before or after model lookup


async def test_over_budget_is_refused_naming_the_spend_limit(echo_mesh: Mesh) -> None:
    async with httpx.AsyncClient(base_url=echo_mesh.edge_url, timeout=30) as http:
        key = await new_key(http, echo_mesh, spend_limit=0)
        resp = await http.post("/genmesh/echo", json={"prompt": "x"}, headers={"Authorization": f"Key {key}"})
        assert resp.status_code == 402
        assert "spend limit" in resp.json()["detail"]
        # The admin key, with no limit, is unaffected.
        ok = await http.post("/genmesh/echo", json={"prompt": "x"},
                             headers={"Authorization": f"Key {echo_mesh.api_key}"})
        assert ok.status_code == 200


async def test_cancel_a_queued_job_drops_it_before_it_starts(echo_mesh: Mesh) -> None:
    headers = {"Authorization": f"Key {echo_mesh.api_key}"}
    async with httpx.AsyncClient(base_url=echo_mesh.edge_url, timeout=30) as http:
        blockers = [(await http.post("/queue/genmesh/echo", json={"num_events": 50, "delay_ms": 100},
                                     headers=headers)).json() for _ in range(8)]
        waiting = (await http.post("/queue/genmesh/echo", json={"prompt": "never"}, headers=headers)).json()
        status = (await http.get(waiting["status_url"], headers=headers)).json()
        assert status["status"] == "IN_QUEUE" and status["queue_position"] >= 1
        cancel = await http.put(waiting["cancel_url"], headers=headers)
        assert cancel.status_code == 202 and cancel.json()["status"] == "CANCELLATION_REQUESTED"
        deadline = time.monotonic() + 10
        while True:
            status = (await http.get(waiting["status_url"], headers=headers)).json()
            if status["status"] == "COMPLETED":
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert status["error_type"] == "cancelled"
        result = await http.get(waiting["response_url"], headers=headers)
        assert result.status_code == 499
        for b in blockers:
            await http.put(b["cancel_url"], headers=headers)
