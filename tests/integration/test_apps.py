"""Custom apps on a real mesh (router, app worker, edge; real NATS and Postgres): deploy the
example, call it sync, queued and streamed through the router and the edge's FAL routes, scale to
zero and cold start, redeploy under load, crashes, ownership, logs and delete."""
from __future__ import annotations

import asyncio
import json
import shutil
import textwrap
import time
from pathlib import Path
from typing import Any, AsyncIterator

import asyncpg
import grpc
import httpx
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2

from genmesh import keys
from genmesh.apps.client import Client, ClientError
from genmesh.up import available_services
from genmesh.v1 import apps_pb2, apps_pb2_grpc, common_pb2, router_pb2, router_pb2_grpc
from tests.conftest import Mesh, start_mesh

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "text_stats"
APP = "tests/text-stats"

CRASHY = '''
import os, time
from pydantic import BaseModel
import genmesh


class Ask(BaseModel):
    crash: bool = False
    sleep_s: float = 0.0


class Answer(BaseModel):
    pid: int


class Crashy(genmesh.App):
    keep_alive = 30
    max_concurrency = 2

    @genmesh.endpoint("/")
    def run(self, ask: Ask) -> Answer:
        time.sleep(ask.sleep_s)
        if ask.crash:
            os._exit(3)
        return Answer(pid=os.getpid())
'''

BROKEN = '''
import genmesh
from pydantic import BaseModel


class Empty(BaseModel):
    pass


class Broken(genmesh.App):
    def setup(self) -> None:
        raise RuntimeError("no weights here")

    @genmesh.endpoint("/")
    def run(self, x: Empty) -> Empty:
        return x
'''


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


def write_app(directory: Path, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.py").write_text(textwrap.dedent(source))
    return directory / "app.py"


async def deploy(mesh: Mesh, ref: str, name: str, key: str | None = None, **scale: Any) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        with Client(mesh.edge_url, key or mesh.api_key) as client:
            app = client.deploy(ref, name=name)
            if scale:
                app = client.scale_app(name, **scale)
            return app
    return await asyncio.to_thread(work)


async def app_state(mesh: Mesh, app_id: str) -> apps_pb2.App:
    async with mesh.channel() as ch:
        return (await apps_pb2_grpc.AppsStub(ch).GetApp(apps_pb2.GetAppRequest(id=app_id),
                                                        metadata=mesh.metadata)).app


async def wait_runners(mesh: Mesh, app_id: str, predicate: Any, timeout: float = 30.0) -> apps_pb2.App:
    deadline = time.monotonic() + timeout
    while True:
        app = await app_state(mesh, app_id)
        if predicate(app.runners):
            return app
        assert time.monotonic() < deadline, f"{app_id} stuck at {app.runners} runners"
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def apps_mesh(infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    services = [s for s in ("router", "billing", "apps", "edge") if s in available_services()]
    mesh = await start_mesh(infra, tmp_path_factory.mktemp("apps-mesh"), services)
    try:
        await deploy(mesh, f"{EXAMPLE / 'app.py'}::TextStats", APP)
        yield mesh
    finally:
        await mesh.supervisor.stop()


async def test_deployed_app_is_a_catalog_model_with_its_endpoint_schemas(apps_mesh: Mesh) -> None:
    async with apps_mesh.channel() as ch:
        model = (await router_pb2_grpc.RouterStub(ch).GetModel(
            router_pb2.GetModelRequest(model_id=f"{APP}/transform"), metadata=apps_mesh.metadata)).model
        listed = await router_pb2_grpc.RouterStub(ch).ListModels(
            router_pb2.ListModelsRequest(task="app"), metadata=apps_mesh.metadata)
    assert model.id == APP and model.task == "app" and model.service == "apps"
    assert model.hardware.machine_type == "CPU" and not model.hardware.gpu_required
    assert [(p.unit, p.unit_price > 0) for p in model.prices] == [("runner_seconds", True)]
    assert "text" in model.input_schema["properties"]
    endpoints = {e.path: e for e in model.endpoints}
    assert set(endpoints) == {"/", "/transform"} and endpoints["/transform"].streaming
    assert "words" in endpoints["/"].output_schema["properties"]
    assert APP in [m.id for m in listed.models]


async def test_run_through_the_router_answers_the_output_and_runner_seconds(apps_mesh: Mesh) -> None:
    async with apps_mesh.channel() as ch:
        resp = await router_pb2_grpc.RouterStub(ch).Run(router_pb2.RunRequest(
            model_id=APP, input=struct({"text": "the cat saw the other cat", "top": 1})),
            metadata=apps_mesh.metadata)
    assert resp.output["words"] == 6
    assert [list(w) for w in resp.output["top_words"]] == [["cat", 2]]
    assert [i.unit for i in resp.usage.items] == ["runner_seconds"]
    assert 0 < resp.usage.items[0].quantity < 5


async def test_stream_through_the_router_yields_each_partial_then_the_result(apps_mesh: Mesh) -> None:
    async with apps_mesh.channel() as ch:
        events = [e async for e in router_pb2_grpc.RouterStub(ch).Stream(router_pb2.StreamRequest(
            model_id=f"{APP}/transform", input=struct({"text": "one two three", "mode": "reverse"})),
            metadata=apps_mesh.metadata)]
    partials = [e.partial for e in events if e.WhichOneof("event") == "partial"]
    assert [p.data["text"] for p in partials] == ["eno", "eno owt", "eno owt eerht"]
    assert events[-1].WhichOneof("event") == "result"
    assert events[-1].result.output["done"] == 3


async def test_queued_call_through_the_router_completes_with_its_output(apps_mesh: Mesh) -> None:
    async with apps_mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        sub = await stub.Submit(router_pb2.SubmitRequest(
            model_id=f"{APP}/transform", input=struct({"text": "queued words", "mode": "title"})),
            metadata=apps_mesh.metadata)
        seen = [w.job.status async for w in stub.WatchStatus(
            router_pb2.WatchStatusRequest(request_id=sub.request_id), metadata=apps_mesh.metadata)]
        result = await stub.Result(router_pb2.ResultRequest(request_id=sub.request_id), metadata=apps_mesh.metadata)
    assert seen[-1] == common_pb2.JOB_STATUS_COMPLETED
    assert result.output["text"] == "Queued Words"
    assert [i.unit for i in result.usage.items] == ["runner_seconds"]


async def test_fal_routes_run_queue_and_stream_the_app(apps_mesh: Mesh) -> None:
    headers = {"Authorization": f"Key {apps_mesh.api_key}"}
    async with httpx.AsyncClient(base_url=apps_mesh.edge_url, headers=headers, timeout=60) as http:
        run = await http.post(f"/{APP}", json={"text": "a b c"})
        assert run.status_code == 200 and run.json()["words"] == 3

        sub = (await http.post(f"/queue/{APP}/transform", json={"text": "x y", "mode": "upper"})).json()
        assert {"request_id", "status_url", "response_url", "cancel_url"} <= set(sub)
        deadline = time.monotonic() + 30
        while (await http.get(sub["status_url"], params={"logs": "true"})).json()["status"] != "COMPLETED":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert (await http.get(sub["response_url"])).json()["text"] == "X Y"

        async with http.stream("POST", f"/{APP}/transform/stream", json={"text": "s t", "mode": "upper"},
                               headers={"Accept": "text/event-stream"}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            data = [json.loads(line[5:]) async for line in stream.aiter_lines() if line.startswith("data:")]
    partials = [d for d in data if d.get("type") == "partial"]
    assert [p["partial"]["text"] for p in partials] == ["S", "S T"]
    assert data[-1] == {"text": "S T", "done": 2, "total": 2}


@pytest.mark.parametrize("body, field", [({"txt": "x"}, "txt"), ({"text": "x", "top": "many"}, "top"),
                                         ({"text": "x", "top": 500}, "top"), ({}, "text")])
async def test_bad_input_is_refused_naming_the_field_before_it_is_queued(apps_mesh: Mesh, body: dict,
                                                                        field: str) -> None:
    async with apps_mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        md = apps_mesh.metadata
        for call in (stub.Run(router_pb2.RunRequest(model_id=APP, input=struct(body)), metadata=md),
                     stub.Submit(router_pb2.SubmitRequest(model_id=APP, input=struct(body)), metadata=md)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert ("genmesh-field", field) in tuple(err.value.trailing_metadata())


async def test_unknown_endpoint_is_not_found_and_names_the_ones_there_are(apps_mesh: Mesh) -> None:
    async with apps_mesh.channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await router_pb2_grpc.RouterStub(ch).Run(router_pb2.RunRequest(
                model_id=f"{APP}/nope", input=struct({})), metadata=apps_mesh.metadata)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert f"{APP}/transform" in err.value.details()


async def test_runners_scale_to_zero_after_keep_alive_and_the_next_call_reports_its_cold_start(
        apps_mesh: Mesh) -> None:
    await asyncio.to_thread(lambda: Client(apps_mesh.edge_url, apps_mesh.api_key).scale_app(APP, keep_alive=1))
    async with apps_mesh.channel() as ch:
        await router_pb2_grpc.RouterStub(ch).Run(router_pb2.RunRequest(
            model_id=APP, input=struct({"text": "warm"})), metadata=apps_mesh.metadata)
        await wait_runners(apps_mesh, APP, lambda n: n == 0, timeout=15)

        events = [e async for e in apps_pb2_grpc.AppRunnerStub(ch).Invoke(apps_pb2.InvokeRequest(
            model_id=APP, input=struct({"text": "cold again"})), metadata=apps_mesh.metadata)]
        warm = [e async for e in apps_pb2_grpc.AppRunnerStub(ch).Invoke(apps_pb2.InvokeRequest(
            model_id=APP, input=struct({"text": "warm now"})), metadata=apps_mesh.metadata)]
    logs = [e.log.message for e in events if e.WhichOneof("event") == "log"]
    result = events[-1].result
    assert result.cold_start and result.cold_start_seconds > 0
    assert any(m.startswith("cold start:") for m in logs)
    assert result.output["words"] == 2
    assert not warm[-1].result.cold_start
    await asyncio.to_thread(lambda: Client(apps_mesh.edge_url, apps_mesh.api_key).scale_app(APP, keep_alive=30))


async def test_redeploy_under_load_fails_no_request_and_later_calls_run_the_new_version(
        apps_mesh: Mesh, tmp_path: Path) -> None:
    name = "tests/rollover"
    code = tmp_path / "rollover"
    shutil.copytree(EXAMPLE, code)
    first = await deploy(apps_mesh, f"{code / 'app.py'}::TextStats", name)
    calls: list[tuple[float, float, int]] = []  # (started, finished, version)
    failures: list[str] = []
    stop = asyncio.Event()

    async def caller(stub: apps_pb2_grpc.AppRunnerStub) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                events = [e async for e in stub.Invoke(apps_pb2.InvokeRequest(
                    model_id=f"{name}/transform", input=struct({"text": "load test now", "delay_ms": 20})),
                    metadata=apps_mesh.metadata)]
                calls.append((started, time.monotonic(), events[-1].result.version))
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{exc.code()}: {exc.details()}")

    async with apps_mesh.channel() as ch:
        stub = apps_pb2_grpc.AppRunnerStub(ch)
        callers = [asyncio.create_task(caller(stub)) for _ in range(4)]
        while len(calls) < 8 and not failures:
            await asyncio.sleep(0.02)
        deploying = time.monotonic()
        second = await deploy(apps_mesh, f"{code / 'app.py'}::TextStats", name)
        deployed = time.monotonic()
        count = len(calls)
        while len(calls) < count + 16 and not failures:
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.gather(*callers)
    assert failures == []
    assert second["version"] == first["version"] + 1
    # Calls in flight while the new version rolled out finished (on the old runners).
    assert any(started < deploying and finished > deploying and version == first["version"]
               for started, finished, version in calls)
    after = [version for started, _, version in calls if started > deployed]
    assert after and set(after) == {second["version"]}
    # The old runners retire: what is left serves the new version only.
    await wait_runners(apps_mesh, name, lambda n: 0 < n <= 2)


async def test_min_concurrency_keeps_runners_warm_until_scaled_back(apps_mesh: Mesh, tmp_path: Path) -> None:
    name = "tests/warm"
    await deploy(apps_mesh, f"{EXAMPLE / 'app.py'}::TextStats", name, min_concurrency=2, keep_alive=0.2)
    await wait_runners(apps_mesh, name, lambda n: n == 2)
    await asyncio.to_thread(lambda: Client(apps_mesh.edge_url, apps_mesh.api_key).scale_app(name, min_concurrency=0))
    await wait_runners(apps_mesh, name, lambda n: n == 0)


async def test_a_runner_crash_fails_only_that_request(apps_mesh: Mesh, tmp_path: Path) -> None:
    name = "tests/crashy"
    await deploy(apps_mesh, f"{write_app(tmp_path / 'crashy', CRASHY)}::Crashy", name)
    async with apps_mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        slow = asyncio.ensure_future(stub.Run(router_pb2.RunRequest(
            model_id=name, input=struct({"sleep_s": 1.0})), metadata=apps_mesh.metadata))
        await asyncio.sleep(0.2)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Run(router_pb2.RunRequest(model_id=name, input=struct({"crash": True})),
                           metadata=apps_mesh.metadata)
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert "crashed while serving this request" in err.value.details()
        assert (await slow).output["pid"] > 0
        again = await stub.Run(router_pb2.RunRequest(model_id=name, input=struct({})), metadata=apps_mesh.metadata)
    assert again.output["pid"] > 0


async def test_a_failing_setup_is_a_clear_error_for_the_request(apps_mesh: Mesh, tmp_path: Path) -> None:
    name = "tests/broken"
    await deploy(apps_mesh, f"{write_app(tmp_path / 'broken', BROKEN)}::Broken", name)
    async with apps_mesh.channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await router_pb2_grpc.RouterStub(ch).Run(router_pb2.RunRequest(model_id=name, input=struct({})),
                                                     metadata=apps_mesh.metadata)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "failed to start" in err.value.details() and "no weights here" in err.value.details()


async def test_only_the_deploying_key_or_an_admin_may_change_an_app(apps_mesh: Mesh, tmp_path: Path) -> None:
    secret = keys.new_secret()
    conn = await asyncpg.connect(apps_mesh.env["GENMESH_DATABASE_URL"])
    try:
        await conn.execute("INSERT INTO api_keys (id, name, scope, prefix, secret_hash) "
                           "VALUES ($1, 'someone', 'deploy', $2, $3)",
                           keys.new_key_id(), secret[:8], keys.hash_secret(secret))
    finally:
        await conn.close()
    user = Client(apps_mesh.edge_url, secret)
    try:
        assert (await asyncio.to_thread(user.run, APP, {"text": "anyone may call"}))["words"] == 3
        for change in (lambda: user.scale_app(APP, max_concurrency=1), lambda: user.delete_app(APP),
                       lambda: user.deploy(f"{EXAMPLE / 'app.py'}::TextStats", name=APP)):
            with pytest.raises(ClientError) as err:
                await asyncio.to_thread(change)
            assert err.value.status_code == 403
        with pytest.raises(ClientError) as reserved:
            await asyncio.to_thread(user.deploy, f"{EXAMPLE / 'app.py'}::TextStats", name="genmesh/echo")
        assert reserved.value.status_code == 403  # genmesh/ is the platform's own namespace
        with Client(apps_mesh.edge_url, apps_mesh.api_key) as admin, pytest.raises(ClientError) as taken:
            await asyncio.to_thread(admin.deploy, f"{EXAMPLE / 'app.py'}::TextStats", name="genmesh/echo")
        assert taken.value.status_code == 409  # even an admin cannot shadow a catalog model
        mine = await asyncio.to_thread(user.deploy, f"{EXAMPLE / 'app.py'}::TextStats", name="someone/text-stats")
        assert [a["id"] for a in await asyncio.to_thread(user.list_apps)] == [mine["id"]]
        await asyncio.to_thread(user.delete_app, mine["id"])
    finally:
        user.close()


async def test_logs_hold_the_deploys_and_what_the_app_printed(apps_mesh: Mesh) -> None:
    async with apps_mesh.channel() as ch:
        await router_pb2_grpc.RouterStub(ch).Run(router_pb2.RunRequest(model_id=APP, input=struct({"text": "x"})),
                                                 metadata=apps_mesh.metadata)
        lines = [line async for line in apps_pb2_grpc.AppsStub(ch).StreamAppLogs(
            apps_pb2.StreamAppLogsRequest(id=APP), metadata=apps_mesh.metadata)]
    messages = [line.entry.message for line in lines]
    assert any(m.startswith("deployed version") for m in messages)
    assert any("text-stats ready" in m and line.runner_id for m, line in zip(messages, lines, strict=True))


async def test_a_deleted_app_is_gone_from_every_route(apps_mesh: Mesh, tmp_path: Path) -> None:
    name = "tests/short-lived"
    await deploy(apps_mesh, f"{EXAMPLE / 'app.py'}::TextStats", name)
    client = Client(apps_mesh.edge_url, apps_mesh.api_key)
    try:
        assert (await asyncio.to_thread(client.run, name, {"text": "here"}))["words"] == 1
        await asyncio.to_thread(client.delete_app, name)
        with pytest.raises(ClientError) as err:
            await asyncio.to_thread(client.run, name, {"text": "gone"})
        assert err.value.status_code == 404
        assert name not in [a["id"] for a in await asyncio.to_thread(client.list_apps)]
    finally:
        client.close()


async def test_usage_is_billed_in_runner_seconds_at_the_machine_price(apps_mesh: Mesh) -> None:
    if "billing" not in apps_mesh.supervisor.services:
        pytest.skip("no billing service in this installation")
    async with apps_mesh.channel() as ch:
        resp = await router_pb2_grpc.RouterStub(ch).Run(router_pb2.RunRequest(
            model_id=APP, input=struct({"text": "bill me"})), metadata=apps_mesh.metadata)
    conn = await asyncpg.connect(apps_mesh.env["GENMESH_DATABASE_URL"])
    try:
        deadline = time.monotonic() + 30
        while (row := await conn.fetchrow("SELECT machine_type, cost, prices FROM ledger WHERE request_id=$1",
                                          resp.request_id)) is None:
            assert time.monotonic() < deadline, "the usage record never reached the ledger"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    prices = row["prices"] if isinstance(row["prices"], list) else json.loads(row["prices"])
    assert row["machine_type"] == "CPU" and row["cost"] > 0
    assert [(p["unit"], p["priced"]) for p in prices] == [("runner_seconds", True)]


async def test_rest_deploy_takes_json_with_base64_code_and_logs_follow_as_sse(apps_mesh: Mesh) -> None:
    import base64

    from genmesh.apps import bundle
    from genmesh.apps.loader import AppRef, load_class

    manifest = load_class(AppRef.parse(f"{EXAMPLE / 'app.py'}::TextStats")).manifest("app.py::TextStats")
    body = {**manifest.model_dump(), "name": "tests/json-deploy",
            "code": base64.b64encode(bundle.build(EXAMPLE)).decode()}
    headers = {"Authorization": f"Key {apps_mesh.api_key}"}
    async with httpx.AsyncClient(base_url=apps_mesh.edge_url, headers=headers, timeout=60) as http:
        bad = await http.post("/v1/apps", json={**body, "machine_type": "GPU-B200"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "machine_type"
        created = await http.post("/v1/apps", json=body)
        assert created.status_code == 201, created.text
        assert (await http.post("/tests/json-deploy", json={"text": "json too"})).json()["words"] == 2
        async with http.stream("GET", "/v1/apps/tests/json-deploy/logs", params={"follow": "true"}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            async for line in stream.aiter_lines():
                if line.startswith("data:") and json.loads(line[5:])["message"].startswith("deployed version"):
                    break
        assert (await http.delete("/v1/apps/tests/json-deploy")).json()["deleted"] is True


async def test_a_cancelled_stream_stops_the_app_at_its_next_yield(apps_mesh: Mesh) -> None:
    name = "tests/cancel"
    await deploy(apps_mesh, f"{EXAMPLE / 'app.py'}::TextStats", name, max_concurrency=1)
    words = " ".join(f"w{i}" for i in range(300))
    async with apps_mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        stream = stub.Stream(router_pb2.StreamRequest(
            model_id=f"{name}/transform", input=struct({"text": words, "delay_ms": 100})), metadata=apps_mesh.metadata)
        async for event in stream:
            if event.WhichOneof("event") == "partial":
                break
        stream.cancel()
        # With max_concurrency=1 the next call can only run once the cancel freed the runner:
        # finishing well inside the 30 s the whole stream would take shows that it did.
        started = time.monotonic()
        resp = await stub.Run(router_pb2.RunRequest(model_id=name, input=struct({"text": "next"})),
                              metadata=apps_mesh.metadata)
    assert resp.output["words"] == 1
    assert time.monotonic() - started < 15
    assert (await app_state(apps_mesh, name)).runners == 1


async def test_every_router_replica_learns_deploys_and_deletes_and_reloads_apps_at_start(
        apps_mesh: Mesh, tmp_path: Path) -> None:
    from genmesh.up import Supervisor
    from tests.conftest import wait_for_workers

    second = Supervisor(env=dict(apps_mesh.env), log_dir=tmp_path / "second", services=["router"])
    try:
        await second.start()
        await wait_for_workers(second, ["apps"])
        name = "tests/replicated"
        await deploy(apps_mesh, f"{EXAMPLE / 'app.py'}::TextStats", name)  # through the first router
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.ports['router']}") as ch:
            stub = router_pb2_grpc.RouterStub(ch)
            deadline = time.monotonic() + 5  # the bucket's update reaches it within milliseconds
            while True:
                try:
                    await stub.GetModel(router_pb2.GetModelRequest(model_id=name), metadata=apps_mesh.metadata)
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.NOT_FOUND and time.monotonic() < deadline
                    await asyncio.sleep(0.02)
            resp = await stub.Run(router_pb2.RunRequest(model_id=name, input=struct({"text": "via the other"})),
                                  metadata=apps_mesh.metadata)
            assert resp.output["words"] == 3
            await asyncio.to_thread(lambda: Client(apps_mesh.edge_url, apps_mesh.api_key).delete_app(name))
            deadline = time.monotonic() + 10
            while True:
                try:
                    await stub.GetModel(router_pb2.GetModelRequest(model_id=name), metadata=apps_mesh.metadata)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.NOT_FOUND
                    break
                assert time.monotonic() < deadline, "the other router still lists a deleted app"
                await asyncio.sleep(0.05)
        await second.stop_child("router")
        await second.start_child("router")
        await second.wait_healthy("router")
        await wait_for_workers(second, ["apps"])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.ports['router']}") as ch:
            resp = await router_pb2_grpc.RouterStub(ch).Run(router_pb2.RunRequest(
                model_id=APP, input=struct({"text": "after a restart"})), metadata=apps_mesh.metadata)
        assert resp.output["words"] == 3
    finally:
        await second.stop()
