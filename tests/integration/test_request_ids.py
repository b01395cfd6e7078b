"""One request id from the edge to billing: the router names each request it runs; the worker
is told that id, the edge's OpenAI routes return it as `x-request-id`, and billing's request log
records the request under it. A scripted LLM worker (in this process, registered over NATS like
any worker) notes the id each call arrives with."""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, AsyncIterator

import grpc
import httpx
import pytest
import pytest_asyncio

from genmesh.rpc import servicer_errors
from genmesh.v1 import common_pb2, llm_pb2, llm_pb2_grpc
from genmesh.worker import WorkerComponent
from tests.conftest import Infra, Mesh, serve_in_mesh, start_mesh, wait_for_workers

pytestmark = pytest.mark.asyncio(loop_scope="session")
CHAT = "genmesh/tiny-llama"
EMBED = "sentence-transformers/all-MiniLM-L6-v2"


class NotingLLM(llm_pb2_grpc.LLMServicer):
    """Answers chat and embeddings, and keeps the request id each call came with."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.ids: list[str] = []

    @servicer_errors
    async def ChatComplete(self, request: llm_pb2.ChatCompleteRequest,
                           context: Any) -> AsyncIterator[llm_pb2.ChatCompleteEvent]:
        async with self.runtime.job(context, request.model_id) as job:
            self.ids.append(job.request_id)
            yield llm_pb2.ChatCompleteEvent(chunk=llm_pb2.ChatCompleteChunk(
                choices=[llm_pb2.ChoiceDelta(index=0, content="Hi")]))
            yield llm_pb2.ChatCompleteEvent(usage=common_pb2.Usage(items=[
                common_pb2.UsageItem(unit="input_tokens", quantity=3)]))
            result = llm_pb2.ChatCompleteResult(model=request.model_id, usage=llm_pb2.TokenUsage(
                prompt_tokens=3, completion_tokens=1, total_tokens=4))
            result.choices.add(index=0, message=llm_pb2.ChatMessage(content="Hi"))
            yield llm_pb2.ChatCompleteEvent(result=result)

    @servicer_errors
    async def Complete(self, request: llm_pb2.CompleteRequest,
                       context: Any) -> AsyncIterator[llm_pb2.CompleteEvent]:
        async with self.runtime.job(context, request.model_id) as job:
            self.ids.append(job.request_id)
            yield llm_pb2.CompleteEvent(chunk=llm_pb2.CompleteChunk(
                choices=[llm_pb2.CompletionDelta(index=0, text="Hi")]))
            result = llm_pb2.CompleteResult(id="cmpl-worker", model=request.model_id, usage=llm_pb2.TokenUsage(
                prompt_tokens=3, completion_tokens=1, total_tokens=4))
            result.choices.add(index=0, text="Hi", finish_reason=llm_pb2.FINISH_REASON_STOP)
            yield llm_pb2.CompleteEvent(result=result)

    @servicer_errors
    async def Embed(self, request: llm_pb2.EmbedRequest, context: Any) -> llm_pb2.EmbedResponse:
        async with self.runtime.job(context, request.model_id) as job:
            self.ids.append(job.request_id)
            return llm_pb2.EmbedResponse(model=request.model_id, usage=llm_pb2.TokenUsage(
                prompt_tokens=1, total_tokens=1), data=[llm_pb2.Embedding(index=0, embedding=[0.5] * 8)])


class NotingLLMComponent(WorkerComponent):
    service = "llm"
    grpc_services = ["genmesh.v1.LLM"]
    uses_torch = False
    loads_weights = False

    def add_servicers(self, server: grpc.aio.Server) -> None:
        self.servicer = NotingLLM(self.runtime)
        llm_pb2_grpc.add_LLMServicer_to_server(self.servicer, server)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mesh(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Mesh, NotingLLM]]:
    m = await start_mesh(infra, tmp_path_factory.mktemp("request-ids"), ["router", "billing", "edge"])
    component = NotingLLMComponent(m.worker_settings("llm"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(serve_in_mesh(component))
            await wait_for_workers(m.supervisor, ["llm"])
            yield m, component.servicer
    finally:
        await m.supervisor.stop()


async def test_openai_routes_return_the_id_the_worker_ran_and_billing_logged(
        mesh: tuple[Mesh, NotingLLM]) -> None:
    m, worker = mesh
    chat = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    async with httpx.AsyncClient(base_url=m.edge_url, timeout=30,
                                 headers={"authorization": f"Bearer {m.api_key}"}) as http:
        answers = [await http.post("/v1/chat/completions", json=chat),
                   await http.post("/v1/chat/completions", json={**chat, "stream": True}),
                   await http.post("/v1/embeddings", json={"model": EMBED, "input": "hi"})]
        for resp in answers:
            assert resp.status_code == 200, resp.text
        returned = [resp.headers["x-request-id"] for resp in answers]
        assert returned == worker.ids[-3:]
        assert len(set(returned)) == 3
        deadline = time.monotonic() + 30
        while True:  # billing writes its ledger from JetStream, shortly after each call
            logs = (await http.get("/v1/requests", params={"limit": 100})).json()
            if set(returned) <= {entry["request_id"] for entry in logs["data"]}:
                break
            assert time.monotonic() < deadline, (returned, logs)
            await asyncio.sleep(0.1)


def sse_ids(resp: httpx.Response) -> set[str]:
    """The ids every data event of a streamed body carries (Anthropic's nest it in `message`)."""
    ids = set()
    for line in resp.text.splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            event = json.loads(line[5:])
            if "id" in event or "message" in event:
                ids.add(event.get("id") or event["message"]["id"])
    return ids


async def test_response_bodies_carry_the_request_id_plain_and_streamed(mesh: tuple[Mesh, NotingLLM]) -> None:
    m, worker = mesh
    chat = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    completion = {"model": CHAT, "prompt": "hi", "max_tokens": 4}
    async with httpx.AsyncClient(base_url=m.edge_url, timeout=30,
                                 headers={"authorization": f"Bearer {m.api_key}"}) as http:
        calls = [("/v1/chat/completions", chat, "chatcmpl-"), ("/v1/completions", completion, "cmpl-"),
                 ("/v1/messages", chat, "msg_")]
        for path, body, prefix in calls:
            for stream in (False, True):
                resp = await http.post(path, json={**body, "stream": stream})
                assert resp.status_code == 200, (path, resp.text)
                request_id = resp.headers["x-request-id"]
                assert request_id == worker.ids[-1]
                ids = sse_ids(resp) if stream else {resp.json()["id"]}
                assert ids == {prefix + request_id}, (path, stream, ids)
