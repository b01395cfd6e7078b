"""The edge's view of the mesh: gRPC stubs for the router and billing, with the caller's key
forwarded and remote errors rebuilt as genmesh errors.

The edge reaches the router on its public port like any client: the router authenticates the
forwarded API key itself and trusts nothing else from the edge, so a certificate there would
authorize nothing (TLS there, when the router's port has it, keeps the key private on the wire).
Billing is internal: mutual TLS with the edge's certificate.

The router names every request it runs (the id billing records it under); typed calls carry it
in their initial metadata. The client notes it for the HTTP request being served, so the edge
can return it (`x-request-id`) from any route."""
from __future__ import annotations

import contextvars
from typing import Any, AsyncIterator

import grpc

from genmesh import meshtls
from genmesh.errors import from_rpc_error
from genmesh.rpc import AUTH_KEY, CHANNEL_OPTIONS, REQUEST_ID_KEY
from genmesh.settings import Settings
from genmesh.v1 import (apps_pb2_grpc, audio_pb2_grpc, billing_pb2_grpc, imagegen_pb2_grpc,
                        llm_pb2_grpc, router_pb2_grpc, videogen_pb2_grpc)


# The router's request ids seen while serving one HTTP request (set per request by the edge's
# RequestIdHeader middleware; None outside one, where nothing is noted).
REQUEST_IDS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("genmesh_request_ids",
                                                                              default=None)


def note_request_id(request_id: str) -> None:
    """Records the router's id for the HTTP request being served (the latest call's wins)."""
    noted = REQUEST_IDS.get()
    if noted is not None and request_id:
        noted[:] = [request_id]


def current_request_id() -> str:
    """The router's id for the HTTP request being served, once a mesh call has named it."""
    noted = REQUEST_IDS.get()
    return noted[0] if noted else ""


async def _note_initial_metadata(call: Any) -> None:
    if REQUEST_IDS.get() is None:
        return
    for key, value in await call.initial_metadata() or ():
        if key == REQUEST_ID_KEY:
            note_request_id(value)


class MeshClient:
    def __init__(self, settings: Settings) -> None:
        self.router_channel = meshtls.router_channel(settings.router_addr, settings.router_tls_ca_file,
                                                     CHANNEL_OPTIONS)
        self.billing_channel = meshtls.channel(settings.billing_addr, meshtls.load(settings, "edge"),
                                               "billing", CHANNEL_OPTIONS)
        self.router = router_pb2_grpc.RouterStub(self.router_channel)
        self.apps = apps_pb2_grpc.AppsStub(self.router_channel)
        self.llm = llm_pb2_grpc.LLMStub(self.router_channel)
        self.audio = audio_pb2_grpc.AudioStub(self.router_channel)
        self.imagegen = imagegen_pb2_grpc.ImageGenStub(self.router_channel)
        self.videogen = videogen_pb2_grpc.VideoGenStub(self.router_channel)
        self.billing = billing_pb2_grpc.BillingStub(self.billing_channel)

    @staticmethod
    def metadata(authorization: str) -> tuple[tuple[str, str], ...]:
        return ((AUTH_KEY, authorization),)

    async def unary(self, method: Any, request: Any, authorization: str, timeout: float | None = None) -> Any:
        try:
            call = method(request, metadata=self.metadata(authorization), timeout=timeout)
            response = await call
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        await _note_initial_metadata(call)
        return response

    async def stream(self, method: Any, request: Any, authorization: str,
                     timeout: float | None = None) -> AsyncIterator[Any]:
        call = method(request, metadata=self.metadata(authorization), timeout=timeout)
        try:
            await _note_initial_metadata(call)
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        await self.router_channel.close()
        await self.billing_channel.close()
