"""The edge's view of the mesh: gRPC stubs for the router and billing, with the caller's key
forwarded and remote errors rebuilt as genmesh errors.

The edge reaches the router on its public port like any client: the router authenticates the
forwarded API key itself and trusts nothing else from the edge, so a certificate there would
authorize nothing (TLS there, when the router's port has it, keeps the key private on the wire).
Billing is internal: mutual TLS with the edge's certificate."""
from __future__ import annotations

from typing import Any, AsyncIterator

import grpc

from genmesh import meshtls
from genmesh.errors import from_rpc_error
from genmesh.rpc import AUTH_KEY, CHANNEL_OPTIONS
from genmesh.settings import Settings
from genmesh.v1 import (apps_pb2_grpc, audio_pb2_grpc, billing_pb2_grpc, imagegen_pb2_grpc,
                        llm_pb2_grpc, router_pb2_grpc, videogen_pb2_grpc)


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
            return await method(request, metadata=self.metadata(authorization), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def stream(self, method: Any, request: Any, authorization: str,
                     timeout: float | None = None) -> AsyncIterator[Any]:
        call = method(request, metadata=self.metadata(authorization), timeout=timeout)
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        await self.router_channel.close()
        await self.billing_channel.close()
