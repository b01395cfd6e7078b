"""gRPC plumbing shared by every service: error mapping for servicers, channels, metadata."""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from typing import Any, AsyncIterator, Callable

import grpc

from genmesh import meshtls
from genmesh.errors import GenmeshError, Internal, InvalidArgument, Unavailable, abort
from genmesh.meshtls import MeshCredentials

log = logging.getLogger("genmesh.rpc")

REQUEST_ID_KEY = "x-request-id"
# The caller's API key id, so workers file outputs under their owner in the blob store. Set by
# the router alone: a worker trusts it only from a caller whose certificate names the router.
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


def use_fast_event_loop() -> None:
    """uvloop for the process's asyncio loop when it is installed. Measured on the router and
    the echo worker (grpc.aio): less CPU per proxied call than the default selector loop."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v
    return None


def _dependency_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning Postgres or NATS is unreachable right now (restarting, cut off).
    Not a bare TimeoutError: from a worker, UNAVAILABLE tells the router the worker is lost."""
    types: list[type[BaseException]] = [ConnectionError]
    try:
        import asyncpg

        # InternalClientError: a connection cut mid-statement can leave asyncpg's protocol
        # half-way ("cannot switch to state ..."), seen when Postgres restarts under load.
        types += [asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                  asyncpg.OperatorInterventionError, asyncpg.TooManyConnectionsError,
                  asyncpg.InternalClientError]
    except ImportError:
        pass
    try:
        import nats.errors

        types += [nats.errors.ConnectionClosedError, nats.errors.NoServersError,
                  nats.errors.OutboundBufferLimitError, nats.errors.TimeoutError,
                  nats.errors.NoRespondersError]
    except ImportError:
        pass
    return tuple(types)


# A call failing on one of these is UNAVAILABLE (retry later), not INTERNAL.
DEPENDENCY_ERRORS = _dependency_errors()


def _data_errors() -> tuple[type[BaseException], ...]:
    try:
        import asyncpg
    except ImportError:
        return ()
    return (asyncpg.DataError,)


# Postgres refusing a value the caller sent (a NUL in a string, a number out of range): the
# request is at fault, not the service.
DATA_ERRORS = _data_errors()


def _metadata_safe(error: GenmeshError) -> GenmeshError:
    """The error with a field name fit for trailing metadata (printable ASCII only): a caller's
    JSON key such as "prompté" or "\\x1f" would otherwise turn the answer into INTERNAL."""
    if error.field and not (error.field.isascii() and error.field.isprintable()):
        error.field = error.field.encode("unicode_escape").decode("ascii")
    return error


def _unavailable(exc: BaseException) -> Unavailable:
    log.warning("a dependency is unavailable", extra={"error": repr(exc)})
    return Unavailable(f"temporarily unavailable ({type(exc).__name__}); retry shortly")


def servicer_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Maps genmesh errors to status codes, an unreachable Postgres or NATS to UNAVAILABLE;
    anything else unexpected is INTERNAL without a trace."""
    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def stream_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for item in fn(self, request, context):
                    yield item
            except GenmeshError as exc:
                await abort(context, _metadata_safe(exc))
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except DEPENDENCY_ERRORS as exc:
                await abort(context, _unavailable(exc))
            except DATA_ERRORS as exc:
                await abort(context, InvalidArgument(f"a value cannot be used: {exc}"))
            except Exception:  # noqa: BLE001 - the client gets a clean INTERNAL, the log the trace
                log.exception("unhandled error", extra={"method": fn.__name__})
                await abort(context, Internal("internal error"))
        return stream_wrapper

    @functools.wraps(fn)
    async def unary_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except GenmeshError as exc:
            await abort(context, _metadata_safe(exc))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except DEPENDENCY_ERRORS as exc:
            await abort(context, _unavailable(exc))
        except DATA_ERRORS as exc:
            await abort(context, InvalidArgument(f"a value cannot be used: {exc}"))
        except Exception:  # noqa: BLE001
            log.exception("unhandled error", extra={"method": fn.__name__})
            await abort(context, Internal("internal error"))
    return unary_wrapper


class Channels:
    """One cached channel per worker address (channels multiplex; dialing per call is slow), and
    one cached multicallable per (address, method): building one per call is a measurable share
    of a proxied call's CPU. Channels are mutual TLS with `credentials` and accept only a server
    whose certificate names the service the caller expects there (None: a plaintext mesh)."""

    def __init__(self, credentials: "MeshCredentials | None" = None) -> None:
        self.credentials = credentials
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}
        self._methods: dict[tuple[str, str, str], Any] = {}

    def get(self, address: str, service: str) -> grpc.aio.Channel:
        key = (address, service)
        channel = self._channels.get(key)
        if channel is None:
            channel = meshtls.channel(address, self.credentials, service, CHANNEL_OPTIONS)
            self._channels[key] = channel
        return channel

    def method(self, address: str, service: str, path: str, *, streaming: bool,
               request_serializer: Callable[[Any], bytes],
               response_deserializer: Callable[[bytes], Any]) -> Any:
        """The cached unary-stream (or unary-unary) multicallable for `path` on `address`."""
        key = (address, service, path)
        method = self._methods.get(key)
        if method is None:
            channel = self.get(address, service)
            make = channel.unary_stream if streaming else channel.unary_unary
            method = make(path, request_serializer=request_serializer,
                          response_deserializer=response_deserializer)
            self._methods[key] = method
        return method

    async def drop(self, address: str) -> None:
        for key in [k for k in self._methods if k[0] == address]:
            del self._methods[key]
        for key in [k for k in self._channels if k[0] == address]:
            await self._channels.pop(key).close()

    async def close(self) -> None:
        self._methods.clear()
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
