"""The runner protocol: length-prefixed msgpack frames over a unix socket between an app worker
and each of its runner processes.

runner -> worker: hello {runner, pid}; ready {setup_s} | failed {error}; then per call
                  log {id?, message, level}*, partial {id, data}*, and exactly one of
                  result {id, output, seconds} | error {id, kind, message, field} | cancelled {id}
worker -> runner: invoke {id, path, input}; cancel {id}; stop {}

A runner serves one call at a time. Logs printed outside a call (setup, teardown) carry no id.
"""
from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import msgpack

MAX_FRAME_BYTES = 256 * 1024 * 1024
_HEADER = struct.Struct(">I")

# Frame types.
HELLO, READY, FAILED = "hello", "ready", "failed"
INVOKE, CANCEL, STOP = "invoke", "cancel", "stop"
LOG, PARTIAL, RESULT, ERROR, CANCELLED = "log", "partial", "result", "error", "cancelled"
TERMINAL = frozenset({RESULT, ERROR, CANCELLED})
# Error kinds.
INVALID_INPUT, APP_ERROR = "invalid_input", "app_error"


class ProtocolError(Exception):
    """The peer sent something that is not a frame."""


def pack(frame: dict[str, Any]) -> bytes:
    body = msgpack.packb(frame, use_bin_type=True)
    if len(body) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(body)) + body


def _unpack(body: bytes) -> dict[str, Any]:
    frame = msgpack.unpackb(body, raw=False)
    if not isinstance(frame, dict) or "t" not in frame:
        raise ProtocolError("a frame must be a map with a 't' key")
    return frame


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next frame, or None at a clean end of stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("stream ended inside a frame header") from None
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise ProtocolError("stream ended inside a frame") from None
    return _unpack(body)


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            if remaining == size:
                return None
            raise ProtocolError("stream ended inside a frame")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket) -> dict[str, Any] | None:
    """Blocking read of the next frame (runner side); None at end of stream."""
    header = _recv_exactly(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    body = _recv_exactly(sock, size)
    if body is None:
        raise ProtocolError("stream ended inside a frame")
    return _unpack(body)
