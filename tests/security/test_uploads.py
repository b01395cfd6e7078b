"""Uploads cannot outlive their key or change what they carry: a revoked key's CDN upload token,
signed PUT URL and realtime token stop working (as its REST calls do, within about a second), a
signed PUT uploads only the content type it was signed for, and user uploads come back as
attachments with `nosniff`, so an uploaded text/html never renders as a page."""
from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import grpc
import httpx
import pytest
import pytest_asyncio

from genmesh import jsonpb
from genmesh.v1 import router_pb2, router_pb2_grpc
from tests.conftest import Mesh

pytestmark = pytest.mark.asyncio(loop_scope="session")
PAGE = b"<html><body><script>alert(document.cookie)</script></body></html>"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def admin(echo_mesh: Mesh) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=echo_mesh.edge_url, timeout=30,
                                 headers={"authorization": f"Bearer {echo_mesh.api_key}"}) as client:
        yield client


async def new_key(admin: httpx.AsyncClient, name: str) -> tuple[str, str]:
    made = await admin.post("/v1/keys", json={"name": name, "scope": "user"})
    assert made.status_code == 200, made.text
    return made.json()["id"], made.json()["secret"]


async def until_refused(attempt: Callable[[], Awaitable[int]], refused: tuple[int, ...] = (401,)) -> int:
    """Repeats `attempt` (answering an HTTP status) until it is refused; caches hold a key for at
    most a second, so this ends quickly or the deadline fails the test."""
    deadline = time.monotonic() + 10
    while (status := await attempt()) not in refused:
        assert status == 200, status
        assert time.monotonic() < deadline, "still accepted long after revocation"
        await asyncio.sleep(0.1)
    return status


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_a_revoked_keys_cdn_upload_token_stops_working(echo_mesh: Mesh, admin: httpx.AsyncClient) -> None:
    key_id, secret = await new_key(admin, "cdn-uploader")
    async with httpx.AsyncClient(base_url=echo_mesh.edge_url, timeout=30) as http:
        issued = await http.post("/storage/auth/token", params={"storage_type": "fal-cdn-v3"},
                                 headers={"authorization": f"Key {secret}"})
        assert issued.status_code == 200, issued.text
        token = issued.json()["token"]
        assert secret not in token and key_id not in token  # sealed: neither readable nor the secret

        async def upload() -> int:
            return (await http.post("/files/upload", content=b"bytes", headers={
                "authorization": f"Bearer {token}", "content-type": "application/octet-stream"})).status_code

        assert await upload() == 200
        assert (await admin.delete(f"/v1/keys/{key_id}")).status_code == 200
        assert await until_refused(upload) == 401


async def test_a_revoked_keys_signed_put_url_stops_working(echo_mesh: Mesh, admin: httpx.AsyncClient) -> None:
    key_id, secret = await new_key(admin, "put-uploader")
    async with httpx.AsyncClient(timeout=30) as http:
        started = await http.post(f"{echo_mesh.edge_url}/storage/upload/initiate",
                                  params={"storage_type": "gcs"}, headers={"authorization": f"Key {secret}"},
                                  json={"file_name": "a.bin", "content_type": "application/octet-stream"})
        assert started.status_code == 200, started.text
        upload_url = started.json()["upload_url"]

        async def put() -> int:  # no Authorization: the URL alone is the credential
            return (await http.put(upload_url, content=b"bytes",
                                   headers={"content-type": "application/octet-stream"})).status_code

        assert await put() == 200
        assert (await admin.delete(f"/v1/keys/{key_id}")).status_code == 200
        assert await until_refused(put) == 401


async def test_a_signed_put_uploads_only_the_content_type_it_was_signed_for(admin: httpx.AsyncClient) -> None:
    started = (await admin.post("/storage/upload/initiate", json={"file_name": "cat.png",
                                                                 "content_type": "image/png"})).json()
    url = started["upload_url"]
    tampered = await admin.put(with_query(url, content_type="text/html"), content=PAGE,
                               headers={"content-type": "text/html"})
    assert tampered.status_code == 401, tampered.text
    mismatched = await admin.put(url, content=PAGE, headers={"content-type": "text/html"})
    assert mismatched.status_code == 403 and mismatched.json()["field"] == "content_type", mismatched.text
    assert (await admin.put(url, content=b"\x89PNG", headers={"content-type": "image/png"})).status_code == 200
    served = await admin.get(started["file_url"])
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert served.headers["x-content-type-options"] == "nosniff"


async def test_uploaded_html_is_served_as_an_attachment_with_nosniff(admin: httpx.AsyncClient) -> None:
    cdn = await admin.post("/files/upload", content=PAGE, headers={"content-type": "text/html"})
    assert cdn.status_code == 200, cdn.text
    started = (await admin.post("/storage/upload/initiate", json={"file_name": "page.html",
                                                                 "content_type": "text/html"})).json()
    assert (await admin.put(started["upload_url"], content=PAGE,
                            headers={"content-type": "text/html"})).status_code == 200
    made = await admin.post("/v1/files", files={"file": ("page.html", PAGE, "text/html")},
                            data={"purpose": "user_data"})
    assert made.status_code == 200, made.text
    for resp in (await admin.get(cdn.json()["access_url"]), await admin.get(started["file_url"]),
                 await admin.get(f"/v1/files/{made.json()['id']}/content")):
        assert resp.status_code == 200 and resp.content == PAGE
        assert resp.headers["content-disposition"].startswith("attachment")
        assert resp.headers["x-content-type-options"] == "nosniff"


async def test_a_realtime_token_opens_only_realtime_streams_and_dies_with_its_key(
        echo_mesh: Mesh, admin: httpx.AsyncClient) -> None:
    key_id, secret = await new_key(admin, "realtime")
    issued = await admin.post("/tokens/", json={"allowed_apps": ["echo"], "token_expiration": 600},
                              headers={"authorization": f"Key {secret}"})
    assert issued.status_code == 200, issued.text
    token = issued.json()
    assert secret not in token
    metadata = (("authorization", f"Bearer {token}"),)
    request = router_pb2.StreamRequest(model_id="genmesh/echo", input=jsonpb.dict_to_struct({"prompt": "rt"}))
    async with echo_mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        events = [e async for e in stub.Stream(request, metadata=metadata)]
        assert events[-1].WhichOneof("event") == "result"
        for call in (stub.Submit(router_pb2.SubmitRequest(model_id="genmesh/echo", input=request.input),
                                 metadata=metadata),
                     stub.Status(router_pb2.StatusRequest(request_id=events[-1].request_id), metadata=metadata)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        other = router_pb2.StreamRequest(model_id="genmesh/tiny-sd", input=request.input)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            [e async for e in stub.Stream(other, metadata=metadata)]
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert (await admin.delete(f"/v1/keys/{key_id}")).status_code == 200

        async def stream() -> int:
            try:
                [e async for e in stub.Stream(request, metadata=metadata)]
            except grpc.aio.AioRpcError as exc:
                return 401 if exc.code() == grpc.StatusCode.UNAUTHENTICATED else 500
            return 200

        assert await until_refused(stream) == 401
