"""Webhooks cannot aim inside the network: loopback, private, link-local and metadata targets are
refused (at submit when the address is literal, at delivery when a name resolves to one) without
a byte posted, redirects are not followed, and delivery records never say which ports answered.
A target the admin allows (GENMESH_OUTBOUND_ALLOW) is delivered to, signed."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from typing import AsyncIterator

import grpc
import httpx
import pytest
import pytest_asyncio

from genmesh import jsonpb
from genmesh.outbound import NOT_ALLOWED, OutboundPolicy, Target, is_public, pinned_request
from genmesh.up import free_port
from genmesh.services.router import webhooks
from genmesh.v1 import router_pb2, router_pb2_grpc
from tests.conftest import Infra, Mesh, start_mesh
from tests.webhook_receiver import WebhookReceiver

# Only the mesh tests are coroutines; they share the session loop with the mesh fixture.
ON_MESH = pytest.mark.asyncio(loop_scope="session")
# The admin allows one loopback address (Linux routes all of 127/8 to lo): the tests' receiver
# listens there, while 127.0.0.1, ::1 and `localhost` stay refused.
ALLOWED_HOST = "127.0.0.2"


# --- the policy itself (no network) ---------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.255.0.9", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
    "fd00:ec2::254", "fe80::1", "0.0.0.0", "::", "100.64.0.1", "224.0.0.1", "ff02::1", "240.0.0.1",
    "255.255.255.255", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "2002:7f00:1::", "64:ff9b::a00:1",
    "198.18.0.1", "192.0.2.1", "fc00::1",
])
def test_internal_and_special_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))
    assert not OutboundPolicy().address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert OutboundPolicy().address_allowed(ipaddress.ip_address(address))


def test_the_admin_setting_allows_networks_and_nothing_else() -> None:
    policy = OutboundPolicy.parse(" 10.0.0.0/8 , hooks.internal,[fd00::]/8")
    assert policy.address_allowed(ipaddress.ip_address("10.9.9.9"))
    assert policy.address_allowed(ipaddress.ip_address("::ffff:10.9.9.9"))
    assert policy.address_allowed(ipaddress.ip_address("fd00::5"))
    assert not policy.address_allowed(ipaddress.ip_address("127.0.0.1"))
    assert policy.allow_hosts == frozenset({"hooks.internal"})


def test_a_pinned_request_connects_to_the_checked_address_keeping_host_and_sni() -> None:
    target = Target("https://hooks.example.com:8443/in?x=1", "https", "hooks.example.com", 8443,
                    ipaddress.ip_address("203.0.113.7"))
    url, headers, extensions = pinned_request(target)
    assert url == "https://203.0.113.7:8443/in?x=1"
    assert headers == {"host": "hooks.example.com:8443"}
    assert extensions == {"sni_hostname": "hooks.example.com"}
    v6 = Target("http://hooks.example.com/", "http", "hooks.example.com", 80, ipaddress.ip_address("2001:db8::1"))
    assert pinned_request(v6)[:2] == ("http://[2001:db8::1]:80/", {"host": "hooks.example.com"})


# --- against a mesh -------------------------------------------------------------------------------

@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mesh(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    m = await start_mesh(infra, tmp_path_factory.mktemp("webhooks"), ["router", "echo", "edge"],
                         extra_env={"GENMESH_OUTBOUND_ALLOW": f"{ALLOWED_HOST}/32",
                                    "GENMESH_WEBHOOK_MAX_ATTEMPTS": "2"})
    try:
        yield m
    finally:
        await m.supervisor.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def trap() -> AsyncIterator[WebhookReceiver]:
    """A receiver on 127.0.0.1 that no delivery may ever reach."""
    async with WebhookReceiver("127.0.0.1") as receiver:
        yield receiver


async def submit(mesh: Mesh, webhook_url: str) -> str:
    async with mesh.channel() as ch:
        resp = await router_pb2_grpc.RouterStub(ch).Submit(router_pb2.SubmitRequest(
            model_id="genmesh/echo", input=jsonpb.dict_to_struct({"prompt": "hooked"}),
            webhook_url=webhook_url), metadata=mesh.metadata)
    return resp.request_id


async def deliveries(mesh: Mesh, request_id: str, count: int) -> list[router_pb2.WebhookDelivery]:
    """The job's delivery records, once there are `count` of them."""
    deadline = time.monotonic() + 30
    async with mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        while True:
            found = (await stub.ListWebhookDeliveries(router_pb2.ListWebhookDeliveriesRequest(
                request_id=request_id), metadata=mesh.metadata)).deliveries
            if len(found) >= count:
                return list(found)
            assert time.monotonic() < deadline, f"{len(found)} of {count} delivery records"
            await asyncio.sleep(0.05)


def assert_no_connection_detail(record: router_pb2.WebhookDelivery, *ports: int) -> None:
    for port in ports:
        assert str(port) not in record.error
    lowered = record.error.lower()
    for word in ("connect", "refused", "errno", "timeout", "resolve", "127.", "::1", "localhost"):
        assert word not in lowered, record.error


@ON_MESH
@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "10.0.0.1", "169.254.169.254", "[fd00:ec2::254]",
                                  "[::ffff:127.0.0.1]", "0.0.0.0", "192.168.0.10"])
async def test_a_literal_internal_target_is_refused_at_submit(mesh: Mesh, trap: WebhookReceiver, host: str) -> None:
    url = f"http://{host}:{trap.port}/hook"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await submit(mesh, url)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "webhook_url" in err.value.details()
    async with httpx.AsyncClient(base_url=mesh.edge_url, timeout=30) as http:
        resp = await http.post("/queue/genmesh/echo", params={"fal_webhook": url}, json={"prompt": "x"},
                               headers={"authorization": f"Key {mesh.api_key}"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["field"] == "fal_webhook" and resp.json()["error_type"] == "invalid_argument"
    assert str(trap.port) not in resp.json()["detail"]
    assert trap.received == []


@ON_MESH
async def test_an_unresolvable_or_malformed_target_is_refused_at_submit(mesh: Mesh) -> None:
    async with httpx.AsyncClient(base_url=mesh.edge_url, timeout=30) as http:
        for url in ("http://no-such-host.invalid/hook", "ftp://example.com/", "http://user:pw@8.8.8.8/"):
            resp = await http.post("/queue/genmesh/echo", params={"fal_webhook": url}, json={"prompt": "x"},
                                   headers={"authorization": f"Key {mesh.api_key}"})
            assert resp.status_code == 400 and resp.json()["field"] == "fal_webhook", (url, resp.text)


@ON_MESH
@pytest.mark.parametrize("host", ["localhost", "2130706433"])  # a name, and 127.0.0.1 as one number
async def test_a_name_resolving_to_loopback_is_refused_without_posting(mesh: Mesh, trap: WebhookReceiver,
                                                                       host: str) -> None:
    request_id = await submit(mesh, f"http://{host}:{trap.port}/hook")
    [record] = await deliveries(mesh, request_id, 1)
    assert record.status_code == 0 and record.error == NOT_ALLOWED
    assert_no_connection_detail(record, trap.port)
    assert trap.received == []


@ON_MESH
async def test_a_redirect_to_loopback_is_not_followed(mesh: Mesh, trap: WebhookReceiver) -> None:
    async with WebhookReceiver(ALLOWED_HOST, redirect_to=f"http://127.0.0.1:{trap.port}/hook") as receiver:
        request_id = await submit(mesh, f"http://{ALLOWED_HOST}:{receiver.port}/redirect")
        records = await deliveries(mesh, request_id, 2)
    assert [r.status_code for r in records] == [307, 307]
    assert len(receiver.received) == 2 and trap.received == []


@ON_MESH
async def test_a_failed_connection_is_recorded_without_its_details(mesh: Mesh) -> None:
    port = free_port()  # nothing listens there
    request_id = await submit(mesh, f"http://{ALLOWED_HOST}:{port}/hook")
    records = await deliveries(mesh, request_id, 2)
    assert all(r.status_code == 0 and r.error == webhooks.DELIVERY_FAILED for r in records)
    for record in records:
        assert_no_connection_detail(record, port)


@ON_MESH
async def test_an_allowed_target_is_delivered_signed_with_its_own_host(mesh: Mesh) -> None:
    async with WebhookReceiver(ALLOWED_HOST) as receiver:
        request_id = await submit(mesh, f"http://{ALLOWED_HOST}:{receiver.port}/hook")
        [record] = await deliveries(mesh, request_id, 1)
    assert record.status_code == 200 and not record.error
    [(path, headers, body)] = receiver.received
    assert path == "/hook" and headers["host"] == f"{ALLOWED_HOST}:{receiver.port}"
    assert webhooks.verify("test-signing-secret", headers, body)
    payload = json.loads(body)
    assert payload["request_id"] == request_id and payload["status"] == "OK"
