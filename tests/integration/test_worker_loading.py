"""A worker stays alive to the router while a model loads for longer than the router's dead-after
interval, and requests that arrive during the load share that one load, even when the call that
started it goes away (the production bug: a stalled worker was declared dead, its call re-sent,
and each re-send started another engine)."""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
import pytest_asyncio

from genmesh import bus
from genmesh.catalog import ModelSpec
from genmesh.models import build
from genmesh.services.llm.server import LLMComponent
from genmesh.settings import Settings
from genmesh.v1 import llm_pb2, llm_pb2_grpc, router_pb2, router_pb2_grpc, worker_pb2
from genmesh.worker.runtime import LOADING_LABEL
from tests.conftest import Infra, Mesh, serve_in_mesh, start_mesh, wait_for_workers

pytestmark = pytest.mark.asyncio(loop_scope="session")

CHAT = "genmesh/tiny-llama"


class GatedLLM(LLMComponent):
    """The real llm worker, whose engine load waits for the test to open its gate."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.gate = threading.Event()
        self.loads = 0

    def build_engine(self, spec: ModelSpec, owner: ModelSpec) -> Any:
        self.loads += 1
        if not self.gate.wait(timeout=300):
            raise TimeoutError("the test never opened the load gate")
        return super().build_engine(spec, owner)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mesh(infra: Infra, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> AsyncIterator[tuple[Mesh, GatedLLM]]:
    build.build_missing(models_dir, [CHAT])
    m = await start_mesh(infra, tmp_path_factory.mktemp("worker-loading"), ["router"])
    component = GatedLLM(m.worker_settings("llm", models_dir=models_dir, torch_threads=1))
    try:
        async with serve_in_mesh(component):
            await wait_for_workers(m.supervisor, ["llm"])
            try:
                yield m, component
            finally:
                component.gate.set()  # never leave the loader thread waiting
    finally:
        await m.supervisor.stop()


async def chat(m: Mesh, content: str) -> list[llm_pb2.ChatCompleteEvent]:
    async with m.channel() as ch:
        call = llm_pb2_grpc.LLMStub(ch).ChatComplete(llm_pb2.ChatCompleteRequest(
            model_id=CHAT, messages=[llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content=content)],
            sampling=llm_pb2.Sampling(max_tokens=3)), metadata=m.metadata)
        return [event async for event in call]


async def test_a_load_longer_than_dead_after_keeps_the_worker_alive_and_runs_once(
        mesh: tuple[Mesh, GatedLLM]) -> None:
    m, worker = mesh
    dead_after = float(m.env["GENMESH_WORKER_DEAD_AFTER_S"])
    worker_id = worker.runtime.worker_id
    loading_beats: list[float] = []  # when each heartbeat saying "loading CHAT" arrived

    async def on_heartbeat(msg: Any) -> None:
        state = worker_pb2.WorkerState.FromString(msg.data)
        if state.worker_id == worker_id and f"{LOADING_LABEL}{CHAT}" in state.labels:
            loading_beats.append(time.monotonic())

    nc = await nats.connect(m.env["GENMESH_NATS_URL"])
    first = asyncio.create_task(chat(m, "one"))
    calls: list[asyncio.Task[list[llm_pb2.ChatCompleteEvent]]] = []
    try:
        await nc.subscribe(bus.HEARTBEAT_SUBJECT, cb=on_heartbeat)
        deadline = time.monotonic() + 120
        while worker.loads == 0:  # the first call started the load
            assert time.monotonic() < deadline and not first.done()
            await asyncio.sleep(0.01)
        calls.append(asyncio.create_task(chat(m, "two")))
        # The call that started the load goes away (as a router that gave up re-sends it): the
        # load carries on for the others, and a call arriving after joins it too.
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        calls.append(asyncio.create_task(chat(m, "three")))
        # Until the worker has said "loading" for twice the router's dead-after interval.
        while not (loading_beats and loading_beats[-1] - loading_beats[0] > 2 * dead_after):
            assert time.monotonic() < deadline, "no heartbeats while the model loads"
            assert not any(c.done() for c in calls), [c.result() for c in calls if c.done()]
            await asyncio.sleep(0.05)
        assert worker.loads == 1 and not any(c.done() for c in calls)
        async with m.channel() as ch:
            listed = (await router_pb2_grpc.RouterStub(ch).ListWorkers(
                router_pb2.ListWorkersRequest(service="llm"), metadata=m.metadata)).workers
        assert [w.worker_id for w in listed] == [worker_id]  # alive to the router
        assert f"{LOADING_LABEL}{CHAT}" in listed[0].labels
        worker.gate.set()
        answers = await asyncio.wait_for(asyncio.gather(*calls), timeout=120)
    finally:
        worker.gate.set()
        for c in [first, *calls]:
            c.cancel()
        with contextlib.suppress(Exception):
            await nc.close()
    for events in answers:
        assert events[-1].WhichOneof("event") == "result"
        assert events[-1].result.usage.completion_tokens > 0
    assert worker.loads == 1  # every request shared the one load
    assert worker.runtime.cache.loading == [] and CHAT in worker.runtime.cache.entries
