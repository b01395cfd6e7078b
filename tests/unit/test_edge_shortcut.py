"""The edge's FAL run shortcut answers exactly what FastAPI's route answers: it takes over a POST
path only after FastAPI has routed that path to `fal.run`, keeps the body cap, JSON checks and
key check, and never takes paths that belong to other routes.

The edge app runs in-process (httpx's ASGI transport) with its router address pointing at a
closed loopback port, so every call that reaches the mesh fails the same way (503): the answers
compared here are the edge's own."""
from __future__ import annotations

import socket
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from genmesh.services.edge import app as edge_app
from genmesh.services.edge.shortcut import RunShortcut
from genmesh.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")
CAP = 4096


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shortcut_of(app: object) -> RunShortcut:
    layer = getattr(app, "middleware_stack", None)
    while layer is not None and not isinstance(layer, RunShortcut):
        layer = getattr(layer, "app", None)
    assert isinstance(layer, RunShortcut), "the shortcut is not in the edge's middleware stack"
    return layer


@pytest_asyncio.fixture(loop_scope="session")
async def edge(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    port = closed_port()
    settings = Settings(data_dir=tmp_path, router_addr=f"127.0.0.1:{port}",
                        billing_addr=f"127.0.0.1:{port}", insecure_mesh=True,
                        signing_secret="test-signing-secret", max_body_bytes=CAP)
    app = edge_app.create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://edge", timeout=30,
                                     headers={"authorization": "Key gm_test_secret"}) as client:
            yield client, app


async def test_a_learned_run_path_answers_as_fastapi_did(edge: tuple[httpx.AsyncClient, object]) -> None:
    client, app = edge
    first = await client.post("/genmesh/echo", json={"prompt": "x"})
    shortcut = shortcut_of(app)
    assert "/genmesh/echo" in shortcut.fal_run_paths
    second = await client.post("/genmesh/echo", json={"prompt": "x"})
    assert first.status_code == second.status_code == 503
    assert first.json() == second.json()
    assert first.json()["error_type"]


async def test_the_shortcut_keeps_the_body_key_and_size_checks(edge: tuple[httpx.AsyncClient, object]) -> None:
    client, app = edge
    await client.post("/genmesh/echo", json={})
    assert "/genmesh/echo" in shortcut_of(app).fal_run_paths

    bad_json = await client.post("/genmesh/echo", content=b"{not json",
                                 headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and "JSON" in bad_json.json()["detail"]

    not_object = await client.post("/genmesh/echo", json=[1, 2])
    assert not_object.status_code == 400

    no_key = await client.post("/genmesh/echo", json={}, headers={"authorization": ""})
    assert no_key.status_code == 401 and no_key.json()["error_type"] == "unauthenticated"

    too_big = await client.post("/genmesh/echo", content=b'{"prompt": "' + b"x" * CAP + b'"}')
    assert too_big.status_code == 413

    deep = await client.post("/genmesh/echo", content=b"[" * 500 + b"]" * 500)
    assert deep.status_code == 400


async def test_paths_of_other_routes_are_never_taken_over(edge: tuple[httpx.AsyncClient, object]) -> None:
    client, app = edge
    for _ in range(2):
        await client.post("/v1/chat/completions", json={"model": "genmesh/tiny-llama", "messages": []})
        await client.post("/queue/genmesh/echo", json={"prompt": "x"})
    shortcut = shortcut_of(app)
    assert "/v1/chat/completions" not in shortcut.fal_run_paths
    assert "/queue/genmesh/echo" not in shortcut.fal_run_paths
    assert {"/v1/chat/completions", "/queue/genmesh/echo"} <= shortcut.other_paths
