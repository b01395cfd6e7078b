"""The authenticated mesh, probed from outside against running services (router, billing, echo,
edge as processes; an in-process ImageGen worker joined with its own certificate): worker ports
refuse plaintext, foreign certificates and mesh certificates of anyone but the router; billing
refuses workers; clients still reach the router in plaintext with a key; and a key id a client
forges never decides whose prefix a worker files outputs under."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, AsyncIterator

import grpc
import httpx
import pytest
import pytest_asyncio

from genmesh import keys, meshtls
from genmesh.rpc import KEY_ID_KEY, servicer_errors
from genmesh.v1 import (billing_pb2, billing_pb2_grpc, common_pb2, echo_pb2, echo_pb2_grpc, imagegen_pb2,
                        imagegen_pb2_grpc, worker_pb2, worker_pb2_grpc)
from genmesh.worker import WorkerComponent
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.conftest import ADMIN_KEY, Infra, Mesh, serve_in_mesh, start_mesh, wait_for_workers

pytestmark = pytest.mark.asyncio(loop_scope="session")
FORGED_KEY_ID = "key_victim_0001"
IMAGE_MODEL = "genmesh/tiny-sd"
REFUSED_AT_TLS = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED}


class RecordingImageGen(imagegen_pb2_grpc.ImageGenServicer):
    """Answers with a tiny PNG and records the key id each call's outputs would be filed under."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.owners: list[str] = []

    @servicer_errors
    async def GenerateImage(self, request: imagegen_pb2.GenerateImageRequest,
                            context: Any) -> AsyncIterator[imagegen_pb2.GenerateImageEvent]:
        from PIL import Image

        async with self.runtime.job(context, request.model_id) as job:
            self.owners.append(job.key_id)
            out = io.BytesIO()
            Image.new("RGB", (8, 8)).save(out, format="PNG")
            yield imagegen_pb2.GenerateImageEvent(result=imagegen_pb2.GenerateImageResult(
                prompt=request.prompt, seed=1, images=[common_pb2.Media(data=out.getvalue(),
                                                                        content_type="image/png")]))


class RecordingImageGenComponent(WorkerComponent):
    service = "imagegen"
    grpc_services = ["genmesh.v1.ImageGen"]
    uses_torch = False

    def add_servicers(self, server: grpc.aio.Server) -> None:
        self.servicer = RecordingImageGen(self.runtime)
        imagegen_pb2_grpc.add_ImageGenServicer_to_server(self.servicer, server)


def _scripted_models_dir(path: Path) -> Path:
    """The recording worker needs no weights; marked built, it reports tiny-sd as runnable."""
    from genmesh.models import build

    (path / IMAGE_MODEL).mkdir(parents=True)
    (path / IMAGE_MODEL / build.MARKER).touch()
    return path


class Probe:
    def __init__(self, mesh: Mesh, imagegen: RecordingImageGenComponent, imagegen_port: int) -> None:
        self.mesh, self.imagegen, self.imagegen_port = mesh, imagegen, imagegen_port

    def port(self, service: str) -> int:
        return self.imagegen_port if service == "imagegen" else self.mesh.supervisor.ports[service]

    def creds(self, service: str) -> meshtls.MeshCredentials:
        files = self.mesh.tls(service)
        return meshtls.MeshCredentials.from_files(files.ca_file, files.cert_file, files.key_file)

    def dial(self, target: str, credentials: meshtls.MeshCredentials | None) -> grpc.aio.Channel:
        """To `target`'s port, plaintext (None) or with `credentials`, verifying it is `target`."""
        return meshtls.channel(f"127.0.0.1:{self.port(target)}", credentials, target, [])


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def probe(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Probe]:
    mesh = await start_mesh(infra, tmp_path_factory.mktemp("mesh-auth"), ["router", "billing", "echo", "edge"])
    component = RecordingImageGenComponent(mesh.worker_settings("imagegen", models_dir=_scripted_models_dir(
        tmp_path_factory.mktemp("scripted-models"))))
    try:
        async with serve_in_mesh(component) as port:
            await wait_for_workers(mesh.supervisor, ["imagegen"])
            yield Probe(mesh, component, port)
    finally:
        await mesh.supervisor.stop()


async def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        result = call
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    return err.value.code()


def _echo(channel: grpc.aio.Channel, **metadata: str) -> Any:
    return echo_pb2_grpc.EchoStub(channel).Echo(echo_pb2.EchoRequest(model_id="genmesh/echo", prompt="x"),
                                                metadata=tuple(metadata.items()), timeout=10)


def _evict(channel: grpc.aio.Channel) -> Any:
    return worker_pb2_grpc.WorkerStub(channel).EvictModel(worker_pb2.EvictModelRequest(model_id="genmesh/echo"),
                                                          timeout=10)


async def test_plaintext_calls_to_a_worker_port_fail_at_the_tls_layer(probe: Probe) -> None:
    async with probe.dial("echo", None) as ch:
        assert await _code(_echo(ch)) in REFUSED_AT_TLS
        assert await _code(_evict(ch)) in REFUSED_AT_TLS
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert await _code(health) in REFUSED_AT_TLS


async def test_a_certificate_from_another_ca_is_refused_even_when_it_names_the_router(
        probe: Probe, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = meshtls.ensure(tmp_path_factory.mktemp("other-ca"), ["router"])["router"]
    forged = meshtls.MeshCredentials(ca=probe.creds("router").ca, cert=other.cert_file.read_bytes(),
                                     key=other.key_file.read_bytes())
    async with probe.dial("echo", forged) as ch:
        assert await _code(_echo(ch)) in REFUSED_AT_TLS
        assert await _code(_evict(ch)) in REFUSED_AT_TLS


@pytest.mark.parametrize("caller", ["edge", "billing", "supervisor"])
async def test_a_mesh_certificate_of_another_service_cannot_call_a_worker(probe: Probe, caller: str) -> None:
    async with probe.dial("echo", probe.creds(caller)) as ch:
        assert await _code(_echo(ch, **{KEY_ID_KEY: FORGED_KEY_ID})) == grpc.StatusCode.PERMISSION_DENIED
        assert await _code(_evict(ch)) == grpc.StatusCode.PERMISSION_DENIED
        state = worker_pb2_grpc.WorkerStub(ch).GetWorkerState(worker_pb2.GetWorkerStateRequest(), timeout=10)
        assert await _code(state) == grpc.StatusCode.PERMISSION_DENIED


async def test_any_mesh_certificate_may_ask_a_worker_for_its_health(probe: Probe) -> None:
    async with probe.dial("echo", probe.creds("supervisor")) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_router_certificate_is_what_a_worker_answers(probe: Probe) -> None:
    """The positive control for the refusals above: same port, same call, the router's cert."""
    async with probe.dial("echo", probe.creds("router")) as ch:
        events = [e async for e in _echo(ch)]
    assert events[-1].result.prompt == "x"


async def test_a_worker_certificate_cannot_impersonate_another_worker(probe: Probe) -> None:
    """A client verifies the server names the service it meant: echo's port is not billing."""
    async with meshtls.channel(f"127.0.0.1:{probe.port('echo')}", probe.creds("router"), "billing", []) as ch:
        assert await _code(_echo(ch)) in REFUSED_AT_TLS


async def test_billing_accepts_the_edge_and_refuses_workers_and_plaintext(probe: Probe) -> None:
    def prices(ch: grpc.aio.Channel) -> Any:
        return billing_pb2_grpc.BillingStub(ch).ListPrices(billing_pb2.ListPricesRequest(), timeout=10)

    async with probe.dial("billing", None) as ch:
        assert await _code(prices(ch)) in REFUSED_AT_TLS
    async with probe.dial("billing", probe.creds("echo")) as ch:
        assert await _code(prices(ch)) == grpc.StatusCode.PERMISSION_DENIED
    # The edge's certificate gets through to billing's own check: the API key, absent here.
    async with probe.dial("billing", probe.creds("edge")) as ch:
        assert await _code(prices(ch)) == grpc.StatusCode.UNAUTHENTICATED


async def test_clients_reach_the_router_in_plaintext_with_a_key_over_grpc_and_rest(probe: Probe) -> None:
    async with probe.mesh.channel() as ch:
        events = [e async for e in echo_pb2_grpc.EchoStub(ch).Echo(
            echo_pb2.EchoRequest(model_id="genmesh/echo", prompt="through the router"),
            metadata=probe.mesh.metadata, timeout=30)]
    assert events[-1].result.prompt == "through the router"
    async with httpx.AsyncClient(base_url=probe.mesh.edge_url, timeout=30,
                                 headers={"authorization": f"Key {ADMIN_KEY}"}) as http:
        resp = await http.post("/genmesh/echo", json={"prompt": "over rest"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["prompt"] == "over rest"


async def test_a_key_id_forged_by_a_client_does_not_decide_the_owner_of_outputs(probe: Probe) -> None:
    owner = "key_admin_" + keys.hash_secret(ADMIN_KEY)[:8]  # the bootstrap key's id
    request = imagegen_pb2.GenerateImageRequest(model_id=IMAGE_MODEL, prompt="a cat", width=64,
                                                height=64, num_inference_steps=1)
    probe.imagegen.servicer.owners.clear()
    async with probe.mesh.channel() as ch:
        events = [e async for e in imagegen_pb2_grpc.ImageGenStub(ch).GenerateImage(
            request, metadata=(*probe.mesh.metadata, (KEY_ID_KEY, FORGED_KEY_ID)), timeout=30)]
    assert events[-1].WhichOneof("event") == "result"
    assert probe.imagegen.servicer.owners == [owner]
    # Straight to the worker with a forged id and a non-router mesh certificate: refused.
    async with probe.dial("imagegen", probe.creds("edge")) as ch:
        call = imagegen_pb2_grpc.ImageGenStub(ch).GenerateImage(
            request, metadata=((KEY_ID_KEY, FORGED_KEY_ID),), timeout=10)
        assert await _code(call) == grpc.StatusCode.PERMISSION_DENIED
    assert probe.imagegen.servicer.owners == [owner]


async def test_a_worker_files_under_the_forwarded_key_id_only_when_the_router_sent_it(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Beneath the port's caller check: even on a server built without it, a worker with mesh
    certificates believes the key id only from a caller whose certificate names the router."""
    from genmesh.rpc import SERVER_OPTIONS
    from genmesh.settings import Settings

    certs = meshtls.ensure(tmp_path_factory.mktemp("tls"), ["imagegen", "router", "edge"])
    files = certs["imagegen"]
    component = RecordingImageGenComponent(Settings(
        data_dir=tmp_path_factory.mktemp("worker"), nats_url=None, tls_ca_file=files.ca_file,
        tls_cert_file=files.cert_file, tls_key_file=files.key_file))
    server = grpc.aio.server(options=SERVER_OPTIONS)  # no CallerCheck on purpose
    component.register(server)
    port = meshtls.add_port(server, "127.0.0.1:0", meshtls.load(component.settings, "imagegen"))
    await component.start(port)
    await server.start()
    request = imagegen_pb2.GenerateImageRequest(model_id=IMAGE_MODEL, prompt="a cat")
    try:
        for caller in ("edge", "router"):
            c = certs[caller]
            creds = meshtls.MeshCredentials.from_files(c.ca_file, c.cert_file, c.key_file)
            async with meshtls.channel(f"127.0.0.1:{port}", creds, "imagegen", []) as ch:
                [e async for e in imagegen_pb2_grpc.ImageGenStub(ch).GenerateImage(
                    request, metadata=((KEY_ID_KEY, FORGED_KEY_ID),), timeout=10)]
    finally:
        await server.stop(None)
        await component.stop()
    assert component.servicer.owners == ["anonymous", FORGED_KEY_ID]


async def test_the_router_port_can_serve_clients_over_tls_and_the_edge_follows(
        infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> None:
    """TLS on the client port is a setting: with it, plaintext is refused there, a TLS client
    with its key is served, and the edge reaches the router over TLS."""
    from genmesh.v1 import router_pb2, router_pb2_grpc

    public = meshtls.ensure(tmp_path_factory.mktemp("public-ca"), ["router"])["router"]
    env = {"GENMESH_PUBLIC_TLS_CERT_FILE": str(public.cert_file), "GENMESH_PUBLIC_TLS_KEY_FILE": str(public.key_file),
           "GENMESH_ROUTER_TLS_CA_FILE": str(public.ca_file)}
    mesh = await start_mesh(infra, tmp_path_factory.mktemp("public-tls"), ["router", "edge"], extra_env=env)
    try:
        async with mesh.channel() as plain:
            call = router_pb2_grpc.RouterStub(plain).ListWorkers(router_pb2.ListWorkersRequest(),
                                                                 metadata=mesh.metadata, timeout=10)
            assert await _code(call) in REFUSED_AT_TLS
        async with meshtls.router_channel(mesh.router_addr, public.ca_file, []) as tls:
            listed = await router_pb2_grpc.RouterStub(tls).ListWorkers(router_pb2.ListWorkersRequest(),
                                                                       metadata=mesh.metadata, timeout=10)
        assert list(listed.workers) == []
        async with httpx.AsyncClient(base_url=mesh.edge_url, timeout=30,
                                     headers={"authorization": f"Bearer {ADMIN_KEY}"}) as http:
            models = await http.get("/v1/models")
        assert models.status_code == 200, models.text
        assert "genmesh/echo" in {m["id"] for m in models.json()["data"]}
    finally:
        await mesh.supervisor.stop()
