"""`genmesh up` is ready once its API is: the supervisor returns when the services it is asked to
be ready with are healthy, whatever the others (model workers, still loading) are doing; their
health is still watched, and a failure among them is reported."""
from __future__ import annotations

from pathlib import Path

import pytest

from genmesh.embedded import EmbeddedNats
from genmesh.up import Supervisor
from tests.conftest import ADMIN_KEY, Infra

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_ready_with_the_api_while_another_service_never_becomes_healthy(infra: Infra,
                                                                              tmp_path: Path) -> None:
    nats = EmbeddedNats(tmp_path / "nats")
    env = {"GENMESH_NATS_URL": await nats.start(), "GENMESH_DATABASE_URL": await infra.new_database(),
           "GENMESH_API_KEY": ADMIN_KEY, "GENMESH_DATA_DIR": str(tmp_path),
           "GENMESH_SIGNING_SECRET": "test-signing-secret", "HF_HUB_OFFLINE": "1"}
    # A service that can never start stands in for a model worker that is still loading.
    sup = Supervisor(env=env, log_dir=tmp_path / "logs", services=["router", "billing", "no_such_worker"])
    sup.cleanups.append(nats.stop)
    try:
        await sup.start(ready_with=["router", "billing"])
        assert await sup.healthy("router") and await sup.healthy("billing")
        assert set(sup.joining) == {"no_such_worker"}
        with pytest.raises(RuntimeError, match="no_such_worker exited"):
            await sup.joining["no_such_worker"]
    finally:
        await sup.stop()
