"""The edge over real HTTP in front of a real mesh (router, billing, echo): error shapes, the body
cap, OpenAPI, signed file URLs, isolation of files and batches between keys, and the platform API
(with and without billing)."""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

import httpx
import pytest
import pytest_asyncio

from tests.conftest import Infra, Mesh, start_mesh

pytestmark = pytest.mark.asyncio(loop_scope="session")
BODY_CAP = 256 * 1024


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mesh(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    m = await start_mesh(infra, tmp_path_factory.mktemp("edge"), ["router", "billing", "echo", "edge"],
                         extra_env={"GENMESH_MAX_BODY_BYTES": str(BODY_CAP)})
    try:
        yield m
    finally:
        await m.supervisor.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def http(mesh: Mesh) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=mesh.edge_url, timeout=30,
                                 headers={"authorization": f"Bearer {mesh.api_key}"}) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def user_key(mesh: Mesh) -> str:
    """A second, user-scoped key made through the platform API."""
    async with httpx.AsyncClient(base_url=mesh.edge_url, timeout=30) as client:
        resp = await client.post("/v1/keys", json={"name": "second", "scope": "user"},
                                 headers={"authorization": f"Bearer {mesh.api_key}"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["scope"] == "user" and body["secret"] and body["id"].startswith("key_")
    return body["secret"]


def assert_openai_error(resp: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error


# --- error shapes ---------------------------------------------------------------------------------

async def test_missing_or_wrong_key_is_401_in_openai_and_fal_shapes(mesh: Mesh) -> None:
    async with httpx.AsyncClient(base_url=mesh.edge_url, timeout=30) as anon:
        for headers in ({}, {"authorization": "Bearer wrong"}):
            resp = await anon.get("/v1/models", headers=headers)
            error = assert_openai_error(resp, 401)
            assert error["type"] == "authentication_error"
            assert resp.headers["x-should-retry"] == "false"
        fal = await anon.post("/genmesh/echo", json={"prompt": "x"}, headers={"authorization": "Key wrong"})
    assert fal.status_code == 401
    assert fal.json()["error_type"] == "unauthenticated" and fal.json()["detail"]


CHAT = "genmesh/tiny-llama"
USER = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize("body, param", [
    ({"model": CHAT, "messages": [{"role": "bogus", "content": "x"}]}, "messages[0].role"),
    ({"model": CHAT, "messages": []}, "messages"),
    ({"model": CHAT, "messages": USER, "temperature": 5}, "temperature"),
    ({"model": CHAT, "messages": USER, "temprature": 1}, "temprature"),
    ({"messages": USER}, "model"),
    ({"model": CHAT, "messages": USER, "top_logprobs": 2}, "top_logprobs"),
    ({"model": CHAT, "messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice.function.name"),
    ({"model": CHAT, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://elsewhere.example/cat.png"}}]}]},
     "messages[0].content[0].image_url.url"),
])
async def test_invalid_chat_body_is_400_naming_the_param(http: httpx.AsyncClient, body: dict, param: str) -> None:
    resp = await http.post("/v1/chat/completions", json=body)
    error = assert_openai_error(resp, 400, param)
    assert error["type"] == "invalid_request_error"
    assert resp.headers["x-should-retry"] == "false"


async def test_malformed_json_is_400_on_body(http: httpx.AsyncClient) -> None:
    resp = await http.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    assert_openai_error(resp, 400, "body")


async def test_a_model_of_another_task_is_400_and_an_unknown_one_404(http: httpx.AsyncClient) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    wrong = await http.post("/v1/chat/completions", json={"model": "genmesh/echo", "messages": msgs})
    assert_openai_error(wrong, 400, "model")
    missing = await http.post("/v1/chat/completions", json={"model": "nobody/nothing", "messages": msgs})
    error = assert_openai_error(missing, 404, "model")
    assert error["code"] == "model_not_found"


async def test_unknown_routes_are_404_in_the_shape_of_their_api(http: httpx.AsyncClient) -> None:
    assert_openai_error(await http.get("/v1/nothing/here"), 404)
    fal = await http.get("/queue/genmesh/echo/requests/nope/status")
    assert fal.status_code == 404 and fal.json()["error_type"] == "not_found"


async def test_a_failing_worker_answers_without_a_stack_trace(http: httpx.AsyncClient) -> None:
    resp = await http.post("/genmesh/echo", json={"fail_with": "internal"})
    assert resp.status_code == 500
    assert resp.json()["error_type"] == "internal_error"
    assert "Traceback" not in resp.text and 'File "' not in resp.text


# --- body cap -------------------------------------------------------------------------------------

async def test_bodies_over_the_cap_are_413_whether_announced_or_streamed(http: httpx.AsyncClient) -> None:
    big = b'{"prompt": "' + b"x" * (BODY_CAP + 10) + b'"}'

    async def chunked() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    announced = await http.post("/genmesh/echo", content=big, headers={"content-type": "application/json"})
    assert announced.status_code == 413 and announced.json()["error_type"] == "invalid_argument"
    streamed = await http.post("/v1/embeddings", content=chunked(), headers={"content-type": "application/json"})
    assert_openai_error(streamed, 413, "body")


async def test_multipart_uploads_over_the_cap_are_413(http: httpx.AsyncClient) -> None:
    files = {"file": ("big.jsonl", b"x" * (BODY_CAP + 10), "application/jsonl")}
    resp = await http.post("/v1/files", files=files, data={"purpose": "batch"})
    assert_openai_error(resp, 413, "body")
    boundary = "gmboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
            f"Content-Type: application/jsonl\r\n\r\n").encode() + b"x" * (BODY_CAP + 10) + \
        f"\r\n--{boundary}--\r\n".encode()

    async def chunked() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    streamed = await http.post("/v1/files", content=chunked(),
                               headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert_openai_error(streamed, 413, "body")
    audio = await http.post("/v1/audio/transcriptions", files={"file": ("a.wav", b"x" * (BODY_CAP + 10))},
                            data={"model": "whisper-1"})
    assert_openai_error(audio, 413, "body")


# --- OpenAPI and models ---------------------------------------------------------------------------

async def test_openapi_describes_the_openai_request_bodies(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    chat = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert chat["$ref"].endswith("/ChatCompletionRequest")
    assert {"model", "messages", "tools", "response_format", "stream_options"} <= set(
        schemas["ChatCompletionRequest"]["properties"])
    for path in ("/v1/embeddings", "/v1/images/generations", "/v1/audio/speech", "/v1/batches"):
        assert "requestBody" in spec["paths"][path]["post"], path
    upload = spec["paths"]["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]
    assert "timestamp_granularities[]" in upload["multipart/form-data"]["schema"]["properties"]
    assert "/queue/{model_path}" in spec["paths"] and "/v1/models/pricing" in spec["paths"]


async def test_models_lists_the_catalog_and_its_aliases(http: httpx.AsyncClient) -> None:
    listed = (await http.get("/v1/models")).json()
    by_id = {m["id"]: m for m in listed["data"]}
    assert by_id["genmesh/echo"]["object"] == "model"
    assert by_id["gpt-4o-mini"]["root"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert by_id["whisper-1"]["task"] == "speech-to-text"
    alias = (await http.get("/v1/models/tts-1")).json()
    assert alias["id"] == "tts-1" and alias["root"] == "rhasspy/piper-en_US-joe-medium"
    # Every entry says whether it can run here; this mesh has an echo worker and nothing else.
    assert by_id["genmesh/echo"]["available"] is True
    assert by_id["whisper-1"]["available"] is False
    assert by_id["whisper-1"]["unavailable_reason"] == "no audio worker serving it is running"
    assert (await http.get("/v1/models/genmesh/echo")).json()["id"] == "genmesh/echo"
    assert_openai_error(await http.get("/v1/models/nobody/nothing"), 404)


# --- files ----------------------------------------------------------------------------------------

async def test_files_of_one_key_are_invisible_to_another(mesh: Mesh, http: httpx.AsyncClient, user_key: str) -> None:
    created = await http.post("/v1/files", files={"file": ("in.jsonl", b'{"a": 1}\n', "application/jsonl")},
                              data={"purpose": "batch"})
    assert created.status_code == 200, created.text
    file_id = created.json()["id"]
    assert created.json()["bytes"] == 9 and created.json()["purpose"] == "batch"
    assert (await http.get(f"/v1/files/{file_id}/content")).content == b'{"a": 1}\n'
    async with httpx.AsyncClient(base_url=mesh.edge_url, timeout=30,
                                 headers={"authorization": f"Bearer {user_key}"}) as other:
        for call in (other.get(f"/v1/files/{file_id}"), other.get(f"/v1/files/{file_id}/content"),
                     other.delete(f"/v1/files/{file_id}")):
            assert_openai_error(await call, 404)
        assert file_id not in {f["id"] for f in (await other.get("/v1/files")).json()["data"]}
        batch = await other.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/embeddings",
                                                      "completion_window": "24h"})
        assert_openai_error(batch, 400, "input_file_id")
    assert file_id in {f["id"] for f in (await http.get("/v1/files", params={"purpose": "batch"})).json()["data"]}
    deleted = await http.delete(f"/v1/files/{file_id}")
    assert deleted.json() == {"id": file_id, "object": "file", "deleted": True}
    assert_openai_error(await http.get(f"/v1/files/{file_id}"), 404)


async def test_file_upload_needs_a_known_purpose(http: httpx.AsyncClient) -> None:
    resp = await http.post("/v1/files", files={"file": ("a.txt", b"x")}, data={"purpose": "nonsense"})
    assert_openai_error(resp, 400, "purpose")
    resp = await http.post("/v1/files", data={"purpose": "batch"}, files={"other": ("a.txt", b"x")})
    assert_openai_error(resp, 400, "file")


async def test_signed_urls_serve_uploads_and_refuse_tampered_signatures(http: httpx.AsyncClient) -> None:
    init = await http.post("/storage/upload/initiate?storage_type=gcs",
                           json={"file_name": "note.txt", "content_type": "text/plain"})
    assert init.status_code == 200, init.text
    upload_url, file_url = init.json()["upload_url"], init.json()["file_url"]
    assert (await http.put(upload_url, content=b"hello", headers={"content-type": "text/plain"})).status_code == 200
    async with httpx.AsyncClient(timeout=30) as anon:  # a signed URL is the capability itself
        got = await anon.get(file_url)
        assert got.status_code == 200 and got.content == b"hello"
        assert got.headers["content-type"].startswith("text/plain")
        assert (await anon.get(file_url.replace("sig=", "sig=0"))).status_code == 404
        forged_put = await anon.put(upload_url.replace("sig=", "sig=0"), content=b"evil")
        assert forged_put.status_code == 401
    assert (await http.put(file_url, content=b"evil")).status_code in (404, 405)


# --- platform API ---------------------------------------------------------------------------------

async def test_pricing_lists_catalog_prices_in_fal_shape(http: httpx.AsyncClient) -> None:
    resp = await http.get("/v1/models/pricing", params=[("endpoint_id", "genmesh/tiny-llama")])
    assert resp.status_code == 200, resp.text
    prices = resp.json()["prices"]
    assert {p["unit"] for p in prices} == {"input_tokens", "output_tokens"}
    assert all(p["endpoint_id"] == "genmesh/tiny-llama" and p["currency"] == "USD" for p in prices)


async def test_one_request_id_is_returned_by_every_route_and_billed(http: httpx.AsyncClient) -> None:
    # The second run of a path takes the edge's run shortcut: both answer alike.
    runs = [await http.post("/genmesh/echo", json={"prompt": "id"}) for _ in range(2)]
    stream = await http.post("/genmesh/echo/stream", json={"prompt": "id"})
    submit = await http.post("/queue/genmesh/echo", json={"prompt": "id"})
    ids = []
    for resp in (*runs, stream, submit):
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-request-id"] == resp.headers["x-fal-request-id"]
        ids.append(resp.headers["x-request-id"])
    assert ids[-1] == submit.json()["request_id"]
    assert len(set(ids)) == len(ids)
    deadline = time.monotonic() + 30
    while True:  # each id is the one billing's request log shows
        logs = (await http.get("/v1/requests", params={"model_id": "genmesh/echo", "limit": 100})).json()
        if set(ids) <= {entry["request_id"] for entry in logs["data"]}:
            break
        assert time.monotonic() < deadline, (ids, logs)
        await asyncio.sleep(0.1)


async def test_request_logs_usage_and_metrics_show_a_finished_run(http: httpx.AsyncClient) -> None:
    run = await http.post("/genmesh/echo", json={"prompt": "logged"})
    request_id = run.headers["x-fal-request-id"]
    deadline = time.monotonic() + 30
    while True:  # billing writes the ledger from JetStream, shortly after the run
        logs = (await http.get("/v1/requests", params={"model_id": "genmesh/echo", "limit": 100})).json()
        found = [entry for entry in logs["data"] if entry["request_id"] == request_id]
        if found:
            break
        assert time.monotonic() < deadline, logs
        await asyncio.sleep(0.1)
    assert found[0]["status"] == "COMPLETED" and found[0]["usage"] == [{"unit": "requests", "quantity": 1.0}]
    metrics = (await http.get("/v1/metrics", params={"model_id": "genmesh/echo"})).json()["data"]
    assert metrics and metrics[0]["model_id"] == "genmesh/echo" and metrics[0]["requests"] >= 1
    usage = (await http.get("/v1/models/usage", params={"endpoint_id": "genmesh/echo", "timeframe": "hour"}))
    assert usage.status_code == 200, usage.text
    assert set(usage.json()) >= {"time_series", "next_cursor", "has_more"}
    estimate = await http.post("/v1/cost/estimate", json={"planned": [
        {"model_id": "genmesh/tiny-llama", "items": [{"unit": "output_tokens", "quantity": 1_000_000}]}]})
    assert estimate.status_code == 200, estimate.text
    assert estimate.json()["total_cost"] == pytest.approx(0.02)
    fal = await http.post("/v1/models/pricing/estimate", json={
        "estimate_type": "unit_price", "endpoints": {"genmesh/tiny-sd": {"unit_quantity": 10}}})
    assert fal.json()["total_cost"] == pytest.approx(0.01) and fal.json()["currency"] == "USD"


async def test_keys_are_admin_only_and_revocation_takes_effect(mesh: Mesh, http: httpx.AsyncClient,
                                                               user_key: str) -> None:
    async with httpx.AsyncClient(base_url=mesh.edge_url, timeout=30,
                                 headers={"authorization": f"Bearer {user_key}"}) as user:
        assert_openai_error(await user.get("/v1/keys"), 403)
    made = (await http.post("/v1/keys", json={"name": "short-lived"})).json()
    listed = {k["id"] for k in (await http.get("/v1/keys")).json()["data"]}
    assert made["id"] in listed
    revoked = await http.delete(f"/v1/keys/{made['id']}")
    assert revoked.json()["revoked_at"]
    async with httpx.AsyncClient(base_url=mesh.edge_url, timeout=30,
                                 headers={"authorization": f"Bearer {made['secret']}"}) as gone:
        deadline = time.monotonic() + 10
        while (status := (await gone.get("/v1/models")).status_code) != 401:
            assert time.monotonic() < deadline, status  # caches hold a key for at most a second
            await asyncio.sleep(0.1)


async def test_without_billing_pricing_falls_back_and_the_rest_is_503(infra: Infra, tmp_path_factory) -> None:
    m = await start_mesh(infra, tmp_path_factory.mktemp("nobilling"), ["router", "echo", "edge"])
    try:
        async with httpx.AsyncClient(base_url=m.edge_url, timeout=30,
                                     headers={"authorization": f"Bearer {m.api_key}"}) as client:
            prices = (await client.get("/v1/models/pricing", params={"endpoint_id": "genmesh/echo"})).json()
            assert prices["prices"] == [{"endpoint_id": "genmesh/echo", "unit_price": 0.0, "unit": "requests",
                                         "per": 1.0, "currency": "USD"}]
            for call in (client.get("/v1/requests"), client.get("/v1/keys"), client.get("/v1/files")):
                error = assert_openai_error(await call, 503)
                assert "billing is not running" in error["message"]
            usage = await client.get("/v1/models/usage")
            assert usage.status_code == 503 and "billing is not running" in usage.json()["detail"]
            assert (await client.post("/genmesh/echo", json={"prompt": "still runs"})).json()["prompt"] == "still runs"
    finally:
        await m.supervisor.stop()
