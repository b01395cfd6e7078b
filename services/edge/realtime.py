"""FAL realtime: a WebSocket at `/{owner}/{alias}[/{path}]/realtime` taking msgpack input frames,
each run through Router.Stream, with every event (progress, partials, the final result) sent back
as a msgpack frame; plus `POST /tokens/`, the short-lived token the client puts in the URL.

Errors are `{"type":"x-fal-error","error","reason"}` sent as a JSON text frame: fal-client raises
`RealtimeError` for exactly that frame, whereas a binary frame would be handed to the caller as
data. A failed input does not end the connection; a missing or bad key does (close code 1008).
"""
from __future__ import annotations

import base64
import contextlib
import json
import logging
from typing import Any

import msgpack
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect

from genmesh import keys, tokens
from genmesh.errors import GenmeshError, InvalidArgument, Unauthenticated
from genmesh.v1 import router_pb2
from genmesh.services.edge.auth import bearer
from genmesh.services.edge.fal import input_struct, stream_event_json
from genmesh.services.edge.responses import JSON, json_body

log = logging.getLogger("genmesh.edge.realtime")
router = APIRouter()
MAX_TOKEN_TTL_S = 3600
POLICY_VIOLATION = 1008


@router.post("/tokens/", tags=["fal"], summary="A short-lived token for realtime connections")
@router.post("/tokens", include_in_schema=False)
async def realtime_token(request: Request) -> JSON:
    identity = await request.app.state.identities.identify(request)  # a bad key fails here, not at connect
    payload = await json_body(request) or {}
    if not isinstance(payload, dict):
        raise InvalidArgument("must be a JSON object", field="body")
    apps = payload.get("allowed_apps") or []
    ttl = payload.get("token_expiration", 120)
    if not isinstance(apps, list) or not all(isinstance(a, str) for a in apps):
        raise InvalidArgument("must be a list of app aliases", field="allowed_apps")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 1 <= ttl <= MAX_TOKEN_TTL_S:
        raise InvalidArgument(f"must be between 1 and {MAX_TOKEN_TTL_S} seconds", field="token_expiration")
    # The key's id, never its secret: the router opens the token and checks that key is live.
    token, _ = request.app.state.tokens.seal(tokens.REALTIME, {"kid": identity.key_id, "apps": apps}, ttl)
    return JSON(token)


def credentials(websocket: WebSocket, model_path: str) -> str:
    """`Bearer <key>` from the Authorization header or a token in the query string."""
    if keys.parse_authorization(websocket.headers.get("authorization")):
        return bearer(websocket.headers.get("authorization"))
    token = websocket.query_params.get("fal_jwt_token") or websocket.query_params.get("token")
    if not token:
        raise Unauthenticated("missing credentials: send 'Authorization: Key <key>' or ?fal_jwt_token=<token> "
                              "from POST /tokens/")
    # Only sealed, short-lived tokens travel in URLs (which end up in logs), never API keys.
    payload = websocket.app.state.tokens.open(tokens.REALTIME, token)
    if not tokens.allows_app(payload, model_path):
        raise Unauthenticated(f"this token is not valid for '{model_path}'")
    # The router accepts the token itself, for realtime streams only, while its key is live.
    return f"Bearer {token}"


def error_frame(error: GenmeshError) -> str:
    return json.dumps({"type": "x-fal-error", "error": error.error_type.upper(), "reason": error.message,
                       "field": error.field})


def _plain(value: Any) -> Any:
    """msgpack input as JSON: binary values become base64 (how JSON carries proto bytes)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def decode(message: dict[str, Any]) -> Any:
    if message.get("bytes") is not None:
        try:
            return msgpack.unpackb(message["bytes"], raw=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise InvalidArgument(f"frame is not valid msgpack: {exc}", field="input") from None
    try:
        return json.loads(message.get("text") or "")
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"frame is neither msgpack nor JSON: {exc.msg}", field="input") from None


@router.websocket("/{model_path:path}/realtime")
async def realtime(websocket: WebSocket, model_path: str) -> None:
    await websocket.accept()
    try:
        auth = credentials(websocket, model_path)
    except GenmeshError as exc:
        await websocket.send_text(error_frame(exc))
        await websocket.close(POLICY_VIOLATION, exc.message[:120])
        return
    client = websocket.app.state.mesh
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                payload = _plain(decode(message))
                request = router_pb2.StreamRequest(model_id=model_path, input=input_struct(payload))
                async for event in client.stream(client.router.Stream, request, auth):
                    data = stream_event_json(event)
                    if data is not None:
                        await websocket.send_bytes(msgpack.packb(data, use_bin_type=True))
            except GenmeshError as exc:
                await websocket.send_text(error_frame(exc))
                if exc.http_status == 401:
                    await websocket.close(POLICY_VIOLATION, "unauthenticated")
                    return
    except WebSocketDisconnect:
        return
    except Exception:  # noqa: BLE001 - never a trace to the client
        log.exception("realtime connection failed", extra={"model_id": model_path})
        with contextlib.suppress(Exception):
            await websocket.close(1011, "internal error")
