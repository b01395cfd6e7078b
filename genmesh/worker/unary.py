"""Worker.RunTask: one modality call answered once, with its result and usage, for a caller that
reads nothing else (the router's sync runs). It runs the modality's own streaming handler, so the
job, capacity check, cancellation and errors are that RPC's, and keeps its progress, logs and
partial outputs here: no servicer writes a unary twin of its RPC, and a unary call costs the
router and the worker about half of a stream's CPU (bench/grpc_transport.py).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, AsyncGenerator, Callable, Mapping

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, OneofDescriptor
from google.protobuf.message import Message

from genmesh.tasks import without_partials
from genmesh.v1 import worker_pb2

StreamHandler = Callable[[Message, grpc.aio.ServicerContext], AsyncGenerator[Message, None]]


class HandlerTap:
    """Stands in for the server while a component adds its servicers: every call goes on to the
    server, and each service's method handlers are kept for `TaskRoutes`."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        self.handlers: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_registered_method_handlers(self, service: str,
                                       handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        self.handlers[service] = dict(handlers)
        self._server.add_registered_method_handlers(service, handlers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


@dataclass(frozen=True)
class _Route:
    handler: StreamHandler
    result_case: str  # the RunTaskResponse case of the stream's result


def _case_for(oneof: OneofDescriptor, message_type: Descriptor) -> str | None:
    return next((f.name for f in oneof.fields if f.message_type is message_type), None)


class TaskRoutes:
    """Which streaming handler runs each RunTaskRequest case, found from the protos: the
    server-streaming method of a served service that takes that case's request type."""

    def __init__(self, handlers: Mapping[str, Mapping[str, grpc.RpcMethodHandler]] | None = None) -> None:
        self._routes: dict[str, _Route] = {}
        requests = worker_pb2.RunTaskRequest.DESCRIPTOR.oneofs_by_name["request"]
        results = worker_pb2.RunTaskResponse.DESCRIPTOR.oneofs_by_name["result"]
        pool = descriptor_pool.Default()
        for service_name, methods in (handlers or {}).items():
            for method in pool.FindServiceByName(service_name).methods:
                handler = methods.get(method.name)
                result = method.output_type.fields_by_name.get("result")
                if handler is None or handler.unary_stream is None or result is None:
                    continue
                request_case = _case_for(requests, method.input_type)
                result_case = _case_for(results, result.message_type)
                if request_case and result_case:
                    self._routes[request_case] = _Route(handler.unary_stream, result_case)

    @property
    def cases(self) -> list[str]:
        return sorted(self._routes)

    async def run(self, request: worker_pb2.RunTaskRequest,
                  context: grpc.aio.ServicerContext) -> worker_pb2.RunTaskResponse:
        case = request.WhichOneof("request")
        route = self._routes.get(case) if case else None
        if route is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                                f"this worker runs no '{case or 'empty'}' task through RunTask")
        assert case is not None and route is not None
        inner = getattr(request, case)
        without_partials(inner)  # its previews would be rendered only to be dropped here
        response = worker_pb2.RunTaskResponse()
        result = getattr(response, route.result_case)
        # Closed on any way out, so the job's clean-up (its slot, held models) runs at once, as
        # when grpc drives the stream itself.
        async with contextlib.aclosing(route.handler(inner, context)) as events:
            async for event in events:
                kind = event.WhichOneof("event")
                if kind == "usage":
                    response.usage.MergeFrom(event.usage)
                elif kind == "result":
                    result.CopyFrom(event.result)
        return response
