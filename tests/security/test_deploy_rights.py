"""Deploy rights on a running mesh (router, billing, app worker, edge as processes): deploying,
scaling and deleting need the `deploy` scope an admin grants; an owner namespace belongs to the key
that first deployed under it; `genmesh/` and catalog owners are reserved; a key deploys only under
its own names, free or not; and what held before still holds: another key's apps cannot be
listed, read in full, scaled, deleted, redeployed or their logs followed."""
from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import AsyncIterator

import asyncpg
import grpc
import pytest
import pytest_asyncio

from genmesh import keys
from genmesh.apps.client import Client, ClientError
from genmesh.apps.spec import default_owner
from genmesh.catalog import Catalog
from genmesh.keys import Identity
from genmesh.services.billing.keys_api import KeysApi
from genmesh.v1 import apps_pb2, apps_pb2_grpc, billing_pb2
from tests.conftest import Infra, Mesh, start_mesh

pytestmark = pytest.mark.asyncio(loop_scope="session")

SOURCE = '''
from pydantic import BaseModel
import genmesh


class Text(BaseModel):
    text: str = ""


class Upper(genmesh.App):
    @genmesh.endpoint("/")
    def run(self, x: Text) -> Text:
        return Text(text=x.text.upper())
'''


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mesh(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    mesh = await start_mesh(infra, tmp_path_factory.mktemp("deploy-rights"), ["router", "billing", "apps", "edge"])
    try:
        yield mesh
    finally:
        await mesh.supervisor.stop()


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("upper")
    (directory / "app.py").write_text(textwrap.dedent(SOURCE))
    return f"{directory / 'app.py'}::Upper"


async def new_key(mesh: Mesh, name: str, scope: str) -> tuple[str, str]:
    """(id, secret) of a key as CreateApiKey writes it."""
    key_id, secret = keys.new_key_id(), keys.new_secret()
    conn = await asyncpg.connect(mesh.env["GENMESH_DATABASE_URL"])
    try:
        await conn.execute("INSERT INTO api_keys (id, name, scope, prefix, secret_hash) VALUES ($1,$2,$3,$4,$5)",
                           key_id, name, scope, secret[:8], keys.hash_secret(secret))
    finally:
        await conn.close()
    return key_id, secret


async def refused(call: object, status: int = 403) -> str:
    with pytest.raises(ClientError) as err:
        await asyncio.to_thread(call)  # type: ignore[arg-type]
    assert err.value.status_code == status, err.value
    return str(err.value)


async def test_a_key_without_the_deploy_scope_cannot_deploy_scale_or_delete(mesh: Mesh, ref: str) -> None:
    with Client(mesh.edge_url, mesh.api_key) as admin:
        await asyncio.to_thread(admin.deploy, ref, name="ops/upper")
    _, secret = await new_key(mesh, "plain", "user")
    with Client(mesh.edge_url, secret) as user:
        assert (await asyncio.to_thread(user.run, "ops/upper", {"text": "hi"}))["text"] == "HI"  # calling is fine
        assert "'deploy' scope" in await refused(lambda: user.deploy(ref, name="plain/upper"))
        await refused(lambda: user.deploy(ref, name="upper"))
        await refused(lambda: user.scale_app("ops/upper", max_concurrency=1))
        await refused(lambda: user.delete_app("ops/upper"))
    async with mesh.channel() as ch:
        stub = apps_pb2_grpc.AppsStub(ch)
        md = (("authorization", f"Bearer {secret}"),)
        for call in (stub.ScaleApp(apps_pb2.ScaleAppRequest(id="ops/upper", max_concurrency=1), metadata=md),
                     stub.DeleteApp(apps_pb2.DeleteAppRequest(id="ops/upper"), metadata=md)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_genmesh_and_catalog_owners_are_reserved_for_admins(mesh: Mesh, ref: str) -> None:
    _, secret = await new_key(mesh, "genmesh", "deploy")  # even a key named after the platform
    catalog_owners = {m.id.split("/")[0].lower() for m in Catalog.load() if "/" in m.id} - {"genmesh"}
    assert catalog_owners  # e.g. qwen/ for Qwen/... models
    with Client(mesh.edge_url, secret) as user:
        assert "reserved" in await refused(lambda: user.deploy(ref, name="genmesh/upper"))
        for owner in sorted(catalog_owners)[:3]:
            assert "reserved" in await refused(lambda: user.deploy(ref, name=f"{owner}/upper"))


async def test_a_key_deploys_only_under_its_own_names_and_not_under_another_owner(mesh: Mesh, ref: str) -> None:
    alice_id, alice = await new_key(mesh, "alice", "deploy")
    bob_id, bob = await new_key(mesh, "bob", "deploy")
    with Client(mesh.edge_url, alice) as a, Client(mesh.edge_url, bob) as b:
        assert (await asyncio.to_thread(a.deploy, ref, name="alice/upper"))["id"] == "alice/upper"
        # Bob may not move in beside Alice's apps, nor take a name that is still free.
        assert "belongs to another API key" in await refused(lambda: b.deploy(ref, name="alice/other"))
        assert "may deploy only under" in await refused(lambda: b.deploy(ref, name="carol/upper"))
        mine = await asyncio.to_thread(b.deploy, ref, name="bob/upper")
        by_id = await asyncio.to_thread(b.deploy, ref, name="upper")  # an alias alone: under the key id
        assert (mine["id"], by_id["id"]) == ("bob/upper", f"{default_owner(bob_id)}/upper")
        assert (await asyncio.to_thread(a.run, "bob/upper", {"text": "x"}))["text"] == "X"
    _, alice2 = await new_key(mesh, "alice", "deploy")  # same name, another key: the name stays Alice's
    with Client(mesh.edge_url, alice2) as a2:
        assert "belongs to another API key" in await refused(lambda: a2.deploy(ref, name="alice/mine"))
    assert alice_id != bob_id


async def test_an_admin_grants_deploy_with_create_api_key(mesh: Mesh, ref: str) -> None:
    pool = await asyncpg.create_pool(mesh.env["GENMESH_DATABASE_URL"], min_size=1, max_size=1)
    try:
        api = KeysApi(pool, None)
        admin = Identity("key_admin", "admin")
        made = await api.create(admin, billing_pb2.CreateApiKeyRequest(name="dora", scope=billing_pb2.API_KEY_SCOPE_DEPLOY))
        assert made.key.scope == billing_pb2.API_KEY_SCOPE_DEPLOY
        with pytest.raises(Exception) as err:  # a deploy key cannot mint keys, deploy or not
            await api.create(Identity(made.key.id, "deploy"), billing_pb2.CreateApiKeyRequest(
                name="eve", scope=billing_pb2.API_KEY_SCOPE_DEPLOY))
        assert getattr(err.value, "http_status", None) == 403
    finally:
        await pool.close()
    with Client(mesh.edge_url, made.secret) as dora:
        assert (await asyncio.to_thread(dora.deploy, ref, name="dora/upper"))["id"] == "dora/upper"
        assert (await asyncio.to_thread(dora.scale_app, "dora/upper", max_concurrency=1))["max_concurrency"] == 1
        await asyncio.to_thread(dora.delete_app, "dora/upper")


async def test_an_admin_grants_deploy_over_rest_and_an_ordinary_key_cannot(mesh: Mesh, ref: str) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=mesh.edge_url, timeout=30) as http:
        made = await http.post("/v1/keys", json={"name": "frida", "scope": "deploy"},
                               headers={"Authorization": f"Bearer {mesh.api_key}"})
        assert made.status_code == 200, made.text
        assert made.json()["scope"] == "deploy"
        _, plain = await new_key(mesh, "gus", "user")
        denied = await http.post("/v1/keys", json={"name": "gus2", "scope": "deploy"},
                                 headers={"Authorization": f"Bearer {plain}"})
        assert denied.status_code == 403
    with Client(mesh.edge_url, made.json()["secret"]) as frida:
        assert (await asyncio.to_thread(frida.deploy, ref, name="frida/upper"))["id"] == "frida/upper"
        await asyncio.to_thread(frida.delete_app, "frida/upper")


async def test_another_deploy_key_cannot_see_or_manage_an_app_it_does_not_own(mesh: Mesh, ref: str) -> None:
    _, owner = await new_key(mesh, "olga", "deploy")
    _, other = await new_key(mesh, "oscar", "deploy")
    with Client(mesh.edge_url, owner) as o, Client(mesh.edge_url, other) as x:
        await asyncio.to_thread(o.deploy, ref, name="olga/upper")
        assert "olga/upper" not in [app["id"] for app in await asyncio.to_thread(x.list_apps)]
        seen = await asyncio.to_thread(x.get_app, "olga/upper")  # its schemas are public; not its code
        assert not seen.get("code_url") and not seen.get("owner_key_id")
        await refused(lambda: x.scale_app("olga/upper", max_concurrency=1))
        await refused(lambda: x.delete_app("olga/upper"))
        await refused(lambda: x.deploy(ref, name="olga/upper"))
        await refused(lambda: list(x.app_logs("olga/upper")))
        assert (await asyncio.to_thread(o.get_app, "olga/upper"))["id"] == "olga/upper"
