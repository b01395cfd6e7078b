"""A worker's capacity refusal is "slot not free yet", not the client's error.

When a client goes away the router stops counting its call at once, while the worker may still be
winding it down; a call placed right then is refused (RESOURCE_EXHAUSTED) by the worker. The
router re-places it: on another worker, or on the same one once it has room, within the call's
wait bound. Two scripted LLM workers of capacity 1 (in this process, registered over NATS like any
worker) hold a cancelled call's slot until the test lets go. Their heartbeats do not count that
slot (as a heartbeat sent before the wind-down began would not), so the router learns of it only
from the refusal."""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

import grpc
import pytest
import pytest_asyncio

from genmesh.errors import RateLimited
from genmesh.rpc import servicer_errors
from genmesh.v1 import llm_pb2, llm_pb2_grpc, router_pb2, router_pb2_grpc
from genmesh.worker import WorkerComponent
from tests.conftest import Infra, Mesh, serve_in_mesh, start_mesh, wait_for_workers

pytestmark = pytest.mark.asyncio(loop_scope="session")
CHAT = "genmesh/tiny-llama"
WAIT_S = 30  # bound on every wait for a condition below; none is expected to take long


class OneSlotLLM(llm_pb2_grpc.LLMServicer):
    """Capacity 1. A "hold" call streams one chunk and then runs until cancelled; after the cancel
    it keeps its slot until `release` is set. A call that finds the slot taken is refused."""

    def __init__(self) -> None:
        self.slot = asyncio.Lock()
        self.holding = asyncio.Event()    # a hold call was cancelled and is winding down
        self.release = asyncio.Event()
        self.refused = asyncio.Event()
        self.refusals = 0
        self.answered = 0

    @servicer_errors
    async def ChatComplete(self, request: llm_pb2.ChatCompleteRequest,
                           context: Any) -> AsyncIterator[llm_pb2.ChatCompleteEvent]:
        if self.slot.locked():
            self.refusals += 1
            self.refused.set()
            raise RateLimited("this llm worker is running 1 calls, its capacity; retry shortly", retry_after=1.0)
        async with self.slot:
            yield llm_pb2.ChatCompleteEvent(chunk=llm_pb2.ChatCompleteChunk(
                choices=[llm_pb2.ChoiceDelta(index=0, content="Hi")]))
            if request.messages[-1].content == "hold":
                try:
                    await asyncio.Event().wait()  # until the router cancels it
                except asyncio.CancelledError:
                    self.holding.set()
                    await self.release.wait()
                    raise
            self.answered += 1
            result = llm_pb2.ChatCompleteResult(model=request.model_id)
            result.choices.add(index=0, message=llm_pb2.ChatMessage(content="Hi"),
                               finish_reason=llm_pb2.FINISH_REASON_STOP)
            yield llm_pb2.ChatCompleteEvent(result=result)


class OneSlotComponent(WorkerComponent):
    service = "llm"
    grpc_services = ["genmesh.v1.LLM"]
    uses_torch = False
    loads_weights = False

    def add_servicers(self, server: grpc.aio.Server) -> None:
        self.servicer = OneSlotLLM()
        llm_pb2_grpc.add_LLMServicer_to_server(self.servicer, server)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mesh(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Mesh, list[OneSlotLLM]]]:
    m = await start_mesh(infra, tmp_path_factory.mktemp("capacity-race"), ["router"])
    components = [OneSlotComponent(m.worker_settings("llm", worker_capacity=1)) for _ in range(2)]
    try:
        async with contextlib.AsyncExitStack() as stack:
            for component in components:
                await stack.enter_async_context(serve_in_mesh(component))
            await wait_for_workers(m.supervisor, ["llm"])
            async with m.channel() as ch:  # until the router knows both workers
                stub = router_pb2_grpc.RouterStub(ch)
                async with asyncio.timeout(WAIT_S):
                    while len((await stub.ListWorkers(router_pb2.ListWorkersRequest(),
                                                      metadata=m.metadata)).workers) < 2:
                        await asyncio.sleep(0.05)
            yield m, [c.servicer for c in components]
    finally:
        await m.supervisor.stop()


def chat(text: str) -> llm_pb2.ChatCompleteRequest:
    return llm_pb2.ChatCompleteRequest(model_id=CHAT, messages=[llm_pb2.ChatMessage(
        role=llm_pb2.ROLE_USER, content=text)], sampling=llm_pb2.Sampling(max_tokens=4))


def reset(workers: list[OneSlotLLM]) -> None:
    for w in workers:
        for event in (w.holding, w.release, w.refused):
            event.clear()
        w.refusals = 0


async def hold(stub: llm_pb2_grpc.LLMStub, m: Mesh, workers: list[OneSlotLLM]) -> OneSlotLLM:
    """A client starts a call, reads its first chunk and goes away; the worker keeps the slot."""
    busy_before = {id(w) for w in workers if w.slot.locked()}
    call = stub.ChatComplete(chat("hold"), metadata=m.metadata)
    async with asyncio.timeout(WAIT_S):
        async for event in call:
            assert event.WhichOneof("event") == "chunk"
            break
        call.cancel()
        worker = next(w for w in workers if w.slot.locked() and id(w) not in busy_before)
        await worker.holding.wait()
    return worker


async def answer(stub: llm_pb2_grpc.LLMStub, m: Mesh) -> list[str]:
    return [e.WhichOneof("event") async for e in stub.ChatComplete(chat("hi"), metadata=m.metadata)]


async def test_a_call_refused_by_every_winding_down_worker_waits_for_a_slot(
        mesh: tuple[Mesh, list[OneSlotLLM]]) -> None:
    m, workers = mesh
    reset(workers)
    async with m.channel() as ch:
        stub = llm_pb2_grpc.LLMStub(ch)
        held = [await hold(stub, m, workers), await hold(stub, m, workers)]
        assert set(map(id, held)) == set(map(id, workers))
        pending = asyncio.create_task(answer(stub, m))
        try:
            async with asyncio.timeout(WAIT_S):
                await asyncio.gather(*(w.refused.wait() for w in workers))
            assert not pending.done()  # refused everywhere: waiting, not failed with RESOURCE_EXHAUSTED
            held[0].release.set()
            async with asyncio.timeout(WAIT_S):
                events = await pending
        finally:
            for w in workers:
                w.release.set()
            pending.cancel()
    assert events == ["chunk", "result"]


async def test_a_call_refused_by_a_winding_down_worker_goes_to_another(
        mesh: tuple[Mesh, list[OneSlotLLM]]) -> None:
    m, workers = mesh
    reset(workers)
    async with m.channel() as ch:
        stub = llm_pb2_grpc.LLMStub(ch)
        try:
            held = await hold(stub, m, workers)
            other = next(w for w in workers if w is not held)
            answered = other.answered
            async with asyncio.timeout(WAIT_S):
                events = await answer(stub, m)  # while `held` still keeps its slot
            assert not held.release.is_set() and held.slot.locked()
        finally:
            for w in workers:
                w.release.set()
    assert events == ["chunk", "result"] and other.answered == answered + 1
