"""The e2e suites' shared SmolLM2 mesh.

Starting vLLM takes 1-4 minutes on two busy cores, so the whole session starts ONE mesh (router,
billing, an llm worker serving SmolLM2 on vLLM where it is installed, edge; see smollm2.py) and
every test module that asks for it shares it. To use it in a new module:

    @pytest.fixture(scope="module")
    def mesh(smollm2: Mesh) -> Mesh:
        return smollm2

`smollm2` is that mesh with an API key of the module's own (admin scope, like the mesh's own key,
so a test may still create keys), so what one module stores (responses, files, deferred results)
is not seen by another. A test that restarts a service (`mesh.supervisor.start_child`) must leave
it running. Modules that use `smollm2` run last in the session, so that vLLM's engine (pinned to
core 0, spinning while idle) stops when they are done instead of at the end of everything else.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from tests.conftest import Infra, Mesh
from tests.e2e.smollm2 import smollm2_mesh

SHARED = "smollm2"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def smollm2_session_mesh(infra: Infra, tmp_path_factory: pytest.TempPathFactory,
                               models_dir: Path) -> AsyncIterator[Mesh]:
    """The one SmolLM2 mesh of the session, under the mesh's admin key (use `smollm2` instead)."""
    async with smollm2_mesh(infra, tmp_path_factory.mktemp("smollm2"), models_dir) as mesh:
        yield mesh


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def smollm2(smollm2_session_mesh: Mesh, request: pytest.FixtureRequest) -> Mesh:
    """The session's SmolLM2 mesh with a fresh admin-scope API key for this test module."""
    shared = smollm2_session_mesh
    async with httpx.AsyncClient(base_url=shared.edge_url, timeout=60,
                                 headers={"authorization": f"Bearer {shared.api_key}"}) as http:
        made = await http.post("/v1/keys", json={"name": request.module.__name__, "scope": "admin"})
        assert made.status_code == 200, made.text
    return dataclasses.replace(shared, api_key=made.json()["secret"])


@pytest.hookimpl(trylast=True)  # after pytest's own reordering by fixture parameters
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Moves the modules that use the shared mesh (directly or through another fixture) to the end
    of the session, keeping every module's own order."""
    sharing = {item.module for item in items
               if isinstance(item, pytest.Function) and SHARED in item.fixturenames}
    if sharing:
        items[:] = ([i for i in items if getattr(i, "module", None) not in sharing]
                    + [i for i in items if getattr(i, "module", None) in sharing])
