"""Hostile inputs at the edge: each probe is a 4xx naming the field in the caller's error shape
(OpenAI's on /v1, FAL's elsewhere), and none of them closes the keep-alive connection: every probe
and the request after it travel on ONE connection."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator

import httpx
import pytest
import pytest_asyncio

from tests.conftest import Mesh

pytestmark = pytest.mark.asyncio(loop_scope="session")


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def nested_text(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@dataclass(frozen=True)
class Probe:
    name: str
    method: str
    path: str
    field: str
    shape: str  # "openai" or "fal"
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str | bytes] | None = None
    status: tuple[int, ...] = (400,)


CHAT = {"model": "genmesh/tiny-llama", "messages": [{"role": "user", "content": "hi"}]}
PROBES = [
    Probe("max_tokens beyond int32", "POST", "/v1/chat/completions", "max_tokens", "openai",
          json={**CHAT, "max_tokens": 2 ** 33}),
    Probe("max_completion_tokens beyond int32", "POST", "/v1/chat/completions", "max_completion_tokens",
          "openai", json={**CHAT, "max_completion_tokens": 10 ** 12}),
    Probe("top_k beyond int32", "POST", "/v1/chat/completions", "top_k", "openai",
          json={**CHAT, "top_k": 10 ** 10}),
    Probe("completions max_tokens beyond int32", "POST", "/v1/completions", "max_tokens", "openai",
          json={"model": "genmesh/tiny-llama/completions", "prompt": "hi", "max_tokens": 2 ** 40}),
    Probe("embeddings dimensions beyond int32", "POST", "/v1/embeddings", "dimensions", "openai",
          json={"model": "sentence-transformers/all-MiniLM-L6-v2", "input": "hi", "dimensions": 10 ** 10}),
    Probe("seed beyond int64", "POST", "/v1/chat/completions", "seed", "openai",
          json={**CHAT, "seed": 2 ** 70}),
    Probe("temperature not finite", "POST", "/v1/chat/completions", "temperature", "openai",
          content=b'{"model":"genmesh/tiny-llama","messages":[{"role":"user","content":"hi"}],"temperature":NaN}',
          headers={"content-type": "application/json"}),
    Probe("JSON 50 deep (protobuf's recursion limit)", "POST", "/v1/chat/completions", "body", "openai",
          json={**CHAT, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"x": nested(50)}}}]}),
    Probe("JSON 1000 deep (RecursionError)", "POST", "/v1/chat/completions", "body", "openai",
          content=('{"model":"genmesh/tiny-llama","messages":' + nested_text(1000) + "}").encode(),
          headers={"content-type": "application/json"}),
    Probe("FAL input 50 deep", "POST", "/genmesh/echo", "body", "fal",
          json={"prompt": "hi", "extra": nested(50)}),
    Probe("FAL input 1000 deep", "POST", "/genmesh/echo", "body", "fal",
          content=('{"prompt":' + nested_text(1000) + "}").encode(), headers={"content-type": "application/json"}),
    Probe("FAL queue input 1000 deep", "POST", "/queue/genmesh/echo", "body", "fal",
          content=('{"prompt":' + nested_text(1000) + "}").encode(), headers={"content-type": "application/json"}),
    Probe("non-ASCII Authorization on /v1", "GET", "/v1/models", "Authorization", "openai",
          headers={"authorization": "Bearer ключ".encode()}, status=(401,)),
    Probe("non-ASCII Authorization on FAL", "POST", "/genmesh/echo", "Authorization", "fal",
          json={"prompt": "hi"}, headers={"authorization": "Key \xe9t\xe9".encode("latin-1")}, status=(401,)),
    Probe("usage start=1e20", "GET", "/v1/models/usage?start=1e20", "start", "fal"),
    Probe("usage start=inf", "GET", "/v1/models/usage?start=inf", "start", "fal"),
    Probe("usage end=nan", "GET", "/v1/models/usage?end=nan", "end", "fal"),
    Probe("request logs start=1e20", "GET", "/v1/requests?start=1e20", "start", "openai"),
    Probe("request logs start=inf", "GET", "/v1/requests?start=inf", "start", "openai"),
    Probe("metrics start=-1e20", "GET", "/v1/metrics?start=-1e20", "start", "openai"),
    Probe("a 400-character file id", "GET", "/v1/files/" + "f" * 400, "file_id", "openai"),
    Probe("a 400-character file id's content", "GET", "/v1/files/file-" + "a" * 400 + "/content", "file_id",
          "openai"),
    Probe("X-Fal-Request-Timeout 1e10", "POST", "/genmesh/echo", "X-Fal-Request-Timeout", "fal",
          json={"prompt": "hi"}, headers={"x-fal-request-timeout": "1e10"}),
    Probe("X-Fal-Request-Timeout inf", "POST", "/queue/genmesh/echo", "X-Fal-Request-Timeout", "fal",
          json={"prompt": "hi"}, headers={"x-fal-request-timeout": "inf"}),
    Probe("an oversized Idempotency-Key", "POST", "/queue/genmesh/echo", "Idempotency-Key", "fal",
          json={"prompt": "hi"}, headers={"idempotency-key": "k" * 10000}),
    Probe("an image size beyond int32", "POST", "/v1/images/generations", "size", "openai",
          json={"prompt": "cat", "model": "genmesh/tiny-sd", "size": "99999999999x99999999999"}),
    Probe("a file list limit beyond int32", "GET", "/v1/files?limit=99999999999", "limit", "openai"),
    Probe("a realtime token lifetime of 1e300 s", "POST", "/tokens/", "token_expiration", "fal",
          json={"token_expiration": 1e300}),
    Probe("a number beyond double in FAL input", "POST", "/genmesh/echo", "body", "fal",
          content=b'{"prompt":"hi","n":1e400}', headers={"content-type": "application/json"}),
    Probe("an integer beyond double in FAL input", "POST", "/genmesh/echo", "body", "fal",
          content=b'{"prompt":"hi","n":' + b"9" * 400 + b"}", headers={"content-type": "application/json"}),
    Probe("request logs limit beyond int32", "GET", "/v1/requests?limit=99999999999", "limit", "openai"),
    Probe("cost estimate calls beyond int64", "POST", "/v1/cost/estimate", "planned[0].calls", "openai",
          json={"planned": [{"model_id": "genmesh/echo", "calls": 2 ** 64}]}),
    Probe("cost estimate quantity not finite", "POST", "/v1/cost/estimate", "planned[0].items[0].quantity",
          "openai", content=b'{"planned":[{"model_id":"genmesh/echo","items":[{"unit":"requests","quantity":Infinity}]}]}',
          headers={"content-type": "application/json"}),
]


def local_port(resp: httpx.Response) -> int:
    """The client-side port of the connection a response came on."""
    return resp.extensions["network_stream"].get_extra_info("socket").getsockname()[1]


def named_field(resp: httpx.Response, shape: str) -> str | None:
    body = resp.json()
    if shape == "openai":
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        return body["error"]["param"]
    assert {"detail", "error_type"} <= set(body), body
    return body.get("field")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def one_connection(echo_mesh: Mesh) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=echo_mesh.edge_url, timeout=30, limits=limits,
                                 headers={"authorization": f"Bearer {echo_mesh.api_key}"}) as client:
        yield client


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
async def test_bad_input_is_a_4xx_naming_the_field_and_keeps_the_connection(
        one_connection: httpx.AsyncClient, probe: Probe) -> None:
    before = await one_connection.get("/health")
    assert before.status_code == 200
    port = local_port(before)
    resp = await one_connection.request(probe.method, probe.path, json=probe.json, content=probe.content,
                                        headers=probe.headers)
    assert resp.status_code in probe.status, (resp.status_code, resp.text[:300])
    assert named_field(resp, probe.shape) == probe.field, resp.text[:300]
    assert "traceback" not in resp.text.lower()
    assert resp.headers.get("connection", "").lower() != "close"
    after = await one_connection.get("/v1/models")
    assert after.status_code == 200, after.text[:300]
    assert local_port(resp) == port and local_port(after) == port, "the connection was closed"


async def test_an_unexpected_error_keeps_the_connection(one_connection: httpx.AsyncClient) -> None:
    """A 5xx from the mesh (here: a worker's failure) is rendered, not raised through uvicorn."""
    first = await one_connection.get("/health")
    resp = await one_connection.post("/genmesh/echo", json={"fail_with": "internal"})
    assert resp.status_code == 500 and {"detail", "error_type"} <= set(resp.json())
    after = await one_connection.get("/health")
    assert after.status_code == 200 and local_port(after) == local_port(first)
