"""Echo's gRPC surface: validates, streams `num_events` partials, then returns the input."""
from __future__ import annotations

import asyncio
from typing import AsyncIterator

import grpc

from genmesh.errors import Internal, InvalidArgument
from genmesh.services.echo.params import validate
from genmesh.rpc import servicer_errors
from genmesh.v1 import common_pb2, echo_pb2, echo_pb2_grpc
from genmesh.worker import WorkerComponent, WorkerRuntime

class EchoServicer(echo_pb2_grpc.EchoServicer):
    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime

    @servicer_errors
    async def Echo(self, request: echo_pb2.EchoRequest,
                   context: grpc.aio.ServicerContext) -> AsyncIterator[echo_pb2.EchoEvent]:
        validate(request)
        async with self.runtime.job(context, request.model_id or "genmesh/echo"):
            n = request.num_events
            for i in range(n):
                yield echo_pb2.EchoEvent(progress=common_pb2.Progress(
                    step=i + 1, total_steps=n, fraction=(i + 1) / n, stage="echoing"))
                yield echo_pb2.EchoEvent(partial=echo_pb2.EchoPartial(index=i, prompt=request.prompt))
                if request.delay_ms:
                    await asyncio.sleep(request.delay_ms / 1000)
            if request.fail_with == "invalid_argument":
                raise InvalidArgument("failing on purpose", field="fail_with")
            if request.fail_with == "internal":
                raise Internal("failing on purpose")
            yield echo_pb2.EchoEvent(usage=common_pb2.Usage(
                items=[common_pb2.UsageItem(unit="requests", quantity=1)]))
            yield echo_pb2.EchoEvent(result=echo_pb2.EchoResult(
                prompt=request.prompt, data=request.data, num_events=n))


class EchoComponent(WorkerComponent):
    service = "echo"
    grpc_services = ["genmesh.v1.Echo"]
    uses_torch = False

    def add_servicers(self, server: grpc.aio.Server) -> None:
        echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer(self.runtime), server)
