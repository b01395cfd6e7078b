"""gRPC plumbing shared by every service: error mapping for servicers, channels, metadata."""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from typing import Any, AsyncIterator, Callable

import grpc

from genmesh.errors import GenmeshError, Internal, abort

log = logging.getLogger("genmesh.rpc")

REQUEST_ID_KEY = "x-request-id"
# The caller's API key id, so workers file outputs under their owner in the blob store.
KEY_ID_KEY = "x-genmesh-key-id"
AUTH_KEY = "authorization"

# Keepalives notice a dead peer (a SIGKILLed worker, a cut link) within seconds.
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
]
SERVER_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
]


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v
    return None


def servicer_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Maps genmesh errors to status codes; anything unexpected is INTERNAL without a trace."""
    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def stream_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for item in fn(self, request, context):
                    yield item
            except GenmeshError as exc:
                await abort(context, exc)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception:  # noqa: BLE001 - the client gets a clean INTERNAL, the log the trace
                log.exception("unhandled error", extra={"method": fn.__name__})
                await abort(context, Internal("internal error"))
        return stream_wrapper

    @functools.wraps(fn)
    async def unary_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except GenmeshError as exc:
            await abort(context, exc)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:  # noqa: BLE001
            log.exception("unhandled error", extra={"method": fn.__name__})
            await abort(context, Internal("internal error"))
    return unary_wrapper


class Channels:
    """One cached channel per address (channels multiplex; dialing per call is slow)."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._channels[address] = channel
        return channel

    async def drop(self, address: str) -> None:
        channel = self._channels.pop(address, None)
        if channel is not None:
            await channel.close()

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
