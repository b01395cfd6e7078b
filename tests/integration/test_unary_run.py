"""Router.Run goes to the worker as one unary Worker.RunTask, and answers as the stream did.

A sync run's caller reads only the result and usage, so the router asks the worker for just
those. The echo workers here run in this process (the real echo servicer, under the real worker
runtime), joined to a mesh of real router and billing processes; an interceptor on each sees which
RPCs the router called. Output, billed usage, error codes, capacity re-placing, a lost worker and
a client that leaves behave as over the stream; a worker without RunTask is sent the stream."""
from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, AsyncIterator, Callable

import asyncpg
import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2

from genmesh.errors import FIELD_KEY, RateLimited, Unavailable
from genmesh.rpc import servicer_errors
from genmesh.services.echo.server import EchoComponent, EchoServicer
from genmesh.tasks import RUN_TASK_PATH
from genmesh.v1 import echo_pb2, echo_pb2_grpc, router_pb2, router_pb2_grpc, worker_pb2_grpc
from genmesh.worker.runtime import WorkerServicer
from tests.conftest import Infra, Mesh, serve_in_mesh, start_mesh

pytestmark = pytest.mark.asyncio(loop_scope="session")
ECHO = "genmesh/echo"
ECHO_STREAM = "/genmesh.v1.Echo/Echo"
WAIT_S = 30  # bound on every wait for a condition below; none is expected to take long


class SeenCalls(grpc.aio.ServerInterceptor):
    """The RPC paths a worker was called on, in order."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        self.paths.append(details.method)
        return await continuation(details)

    def work(self) -> list[str]:
        return [p for p in self.paths if p in (RUN_TASK_PATH, ECHO_STREAM)]


class ScriptedEcho(EchoServicer):
    """The echo servicer, which fails the first call of a prompt named "refuse-once..." with the
    worker's capacity refusal and of one named "unavailable-once..." with UNAVAILABLE."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.failed: set[str] = set()
        self.calls = 0

    @servicer_errors
    async def Echo(self, request: echo_pb2.EchoRequest, context: Any) -> AsyncIterator[echo_pb2.EchoEvent]:
        self.calls += 1
        if request.prompt not in self.failed:
            if request.prompt.startswith("refuse-once"):
                self.failed.add(request.prompt)
                raise RateLimited("this echo worker is running 4 calls, its capacity; retry shortly",
                                  retry_after=1.0)
            if request.prompt.startswith("unavailable-once"):
                self.failed.add(request.prompt)
                raise Unavailable("cut off")
        async for event in super().Echo(request, context):
            yield event


class ScriptedEchoComponent(EchoComponent):
    def add_servicers(self, server: grpc.aio.Server) -> None:
        self.servicer = ScriptedEcho(self.runtime)
        echo_pb2_grpc.add_EchoServicer_to_server(self.servicer, server)


class StreamOnlyEchoComponent(EchoComponent):
    """A worker from before RunTask: its Worker service has no tasks to run (UNIMPLEMENTED)."""

    def register(self, server: grpc.aio.Server) -> None:
        worker_pb2_grpc.add_WorkerServicer_to_server(WorkerServicer(self.runtime), server)
        self.add_servicers(server)


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


async def wait_registered(m: Mesh, count: int) -> None:
    async with m.channel() as ch, asyncio.timeout(WAIT_S):
        stub = router_pb2_grpc.RouterStub(ch)
        while len((await stub.ListWorkers(router_pb2.ListWorkersRequest(service="echo"),
                                          metadata=m.metadata)).workers) < count:
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mesh(infra: Infra, tmp_path_factory: pytest.TempPathFactory
               ) -> AsyncIterator[tuple[Mesh, ScriptedEchoComponent, SeenCalls]]:
    m = await start_mesh(infra, tmp_path_factory.mktemp("unary-run"), ["router", "billing"])
    component = ScriptedEchoComponent(m.worker_settings("echo"))
    seen = SeenCalls()
    try:
        async with serve_in_mesh(component, [seen]):
            await wait_registered(m, 1)
            yield m, component, seen
    finally:
        await m.supervisor.stop()


async def ledger_row(m: Mesh, request_id: str) -> asyncpg.Record:
    """The request's ledger row, once billing has written it."""
    conn = await asyncpg.connect(m.env["GENMESH_DATABASE_URL"])
    try:
        async with asyncio.timeout(WAIT_S):
            while True:
                row = await conn.fetchrow("SELECT status, usage, mode, error_type FROM ledger "
                                          "WHERE request_id=$1", request_id)
                if row is not None:
                    return row
                await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def run(m: Mesh, data: dict[str, Any]) -> router_pb2.RunResponse:
    async with m.channel() as ch:
        return await router_pb2_grpc.RouterStub(ch).Run(
            router_pb2.RunRequest(model_id=ECHO, input=struct(data)), metadata=m.metadata, timeout=WAIT_S)


async def test_run_is_one_unary_call_with_the_streams_output_and_billed_usage(mesh) -> None:
    m, _component, seen = mesh
    data = {"prompt": "hello", "num_events": 3, "data": {"k": [1, "two", None]}}
    seen.paths.clear()
    response = await run(m, data)
    assert seen.work() == [RUN_TASK_PATH]
    async with m.channel() as ch:
        events = [e async for e in router_pb2_grpc.RouterStub(ch).Stream(
            router_pb2.StreamRequest(model_id=ECHO, input=struct(data)), metadata=m.metadata)]
    assert seen.work() == [RUN_TASK_PATH, ECHO_STREAM]
    streamed = next(e for e in events if e.WhichOneof("event") == "result")
    assert response.output == streamed.result.output
    assert dict(response.output) == {"prompt": "hello", "data": {"k": [1, "two", None]}, "num_events": 3}
    assert [(i.unit, i.quantity) for i in response.usage.items] == [("requests", 1.0)]
    row = await ledger_row(m, response.request_id)
    assert (row["status"], row["mode"]) == ("COMPLETED", "sync")
    assert json.loads(row["usage"]) == [{"unit": "requests", "quantity": 1.0}]


@pytest.mark.parametrize("fail_with,code", [("invalid_argument", grpc.StatusCode.INVALID_ARGUMENT),
                                            ("internal", grpc.StatusCode.INTERNAL)])
async def test_a_worker_error_keeps_its_code_and_is_billed_failed(mesh, fail_with: str,
                                                                  code: grpc.StatusCode) -> None:
    m, component, seen = mesh
    seen.paths.clear()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await run(m, {"prompt": "x", "num_events": 1, "fail_with": fail_with})
    assert err.value.code() == code, err.value.details()
    assert seen.work() == [RUN_TASK_PATH], (err.value.details(), seen.paths)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert dict(err.value.trailing_metadata() or ()).get(FIELD_KEY) == "fail_with"
    assert not component.runtime.running  # the worker's slot is free again
    conn = await asyncpg.connect(m.env["GENMESH_DATABASE_URL"])
    try:
        async with asyncio.timeout(WAIT_S):
            while not await conn.fetchval("SELECT count(*) FROM ledger WHERE status='FAILED' AND "
                                          "error_type=$1", "invalid_argument" if fail_with == "invalid_argument"
                                          else "internal_error"):
                await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def test_a_capacity_refusal_is_placed_again_not_returned(mesh) -> None:
    m, component, seen = mesh
    seen.paths.clear()
    response = await run(m, {"prompt": "refuse-once-1"})
    assert dict(response.output)["prompt"] == "refuse-once-1"
    assert seen.work() == [RUN_TASK_PATH, RUN_TASK_PATH]  # refused, then run
    row = await ledger_row(m, response.request_id)
    assert row["status"] == "COMPLETED"
    assert json.loads(row["usage"]) == [{"unit": "requests", "quantity": 1.0}]


async def test_an_unavailable_worker_is_lost_and_the_run_is_placed_again(mesh) -> None:
    m, _component, seen = mesh
    seen.paths.clear()
    response = await run(m, {"prompt": "unavailable-once-1"})
    assert dict(response.output)["prompt"] == "unavailable-once-1"
    assert seen.work() == [RUN_TASK_PATH, RUN_TASK_PATH]  # lost, then (once it heartbeats) run
    row = await ledger_row(m, response.request_id)
    assert row["status"] == "COMPLETED"
    assert json.loads(row["usage"]) == [{"unit": "requests", "quantity": 1.0}]


async def test_a_client_that_leaves_cancels_the_workers_call(mesh) -> None:
    m, component, _seen = mesh
    async with m.channel() as ch:
        call = router_pb2_grpc.RouterStub(ch).Run(router_pb2.RunRequest(
            model_id=ECHO, input=struct({"prompt": "long", "num_events": 1, "delay_ms": 60_000})),
            metadata=m.metadata)
        async with asyncio.timeout(WAIT_S):
            while not component.runtime.running:
                await asyncio.sleep(0.02)
        request_id = next(iter(component.runtime.running))
        call.cancel()
        async with asyncio.timeout(WAIT_S):  # far less than the 60 s the call would have run
            while component.runtime.running:
                await asyncio.sleep(0.02)
    row = await ledger_row(m, request_id)
    assert row["status"] == "CANCELLED"


async def test_a_worker_without_run_task_is_sent_the_stream(infra: Infra,
                                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    m = await start_mesh(infra, tmp_path_factory.mktemp("unary-fallback"), ["router"])
    seen = SeenCalls()
    try:
        async with serve_in_mesh(StreamOnlyEchoComponent(m.worker_settings("echo")), [seen]):
            await wait_registered(m, 1)
            first = await run(m, {"prompt": "a", "num_events": 2})
            second = await run(m, {"prompt": "b"})
    finally:
        await m.supervisor.stop()
    assert (dict(first.output)["prompt"], dict(second.output)["prompt"]) == ("a", "b")
    assert [(i.unit, i.quantity) for i in first.usage.items] == [("requests", 1.0)]
    # Refused once, then streamed; the router remembers, so the next run streams at once.
    assert seen.work() == [RUN_TASK_PATH, ECHO_STREAM, ECHO_STREAM]
