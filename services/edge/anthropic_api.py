"""Anthropic Messages routes (`/v1/messages`, `/v1/messages/count_tokens`) for the official
`anthropic` SDK: `x-api-key` auth, Anthropic's error shape, SSE with `event:` lines. Requests map
onto the LLM chat proto and run through the router like every chat (billed, logged, per key)."""
from __future__ import annotations

import functools
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError
from sse_starlette import ServerSentEvent
from starlette.responses import Response

from genmesh import keys
from genmesh.errors import GenmeshError, Internal, Unauthenticated
from genmesh.services.edge import anthropic_convert as convert
from genmesh.services.edge.anthropic_protocol import CountTokensRequest, MessagesRequest
from genmesh.services.edge.errors import invalid_argument
from genmesh.services.edge.openai_api import (SSE_SEP, accepted_url, catalog, event_stream, final_result, folded,
                                              mesh, prime, replay)
from genmesh.services.edge.responses import JSON, json_body

log = logging.getLogger("genmesh.edge.anthropic")
router = APIRouter(prefix="/v1", tags=["anthropic"])


def api_key(request: Request) -> str:
    """`x-api-key` (Anthropic's header) or `Authorization: Bearer`, as the mesh's `Bearer <key>`."""
    secret = request.headers.get("x-api-key") or keys.parse_authorization(request.headers.get("authorization"))
    if not secret:
        raise Unauthenticated("missing API key: send 'x-api-key: <key>'")
    return f"Bearer {secret.strip()}"


def error_response(error: GenmeshError) -> JSON:
    headers = {}
    if error.retry_after is not None:
        headers["retry-after"] = str(max(1, int(error.retry_after + 0.999)))
    if error.http_status in (400, 401, 402, 403, 404, 413):
        headers["x-should-retry"] = "false"
    return JSON(convert.error_body(error), status_code=error.http_status, headers=headers)


def anthropic_errors(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Every failure of these routes in Anthropic's error shape (the app's handlers answer OpenAI's)."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except GenmeshError as exc:
            return error_response(exc)
        except Exception:  # noqa: BLE001 - never a stack trace to the client
            log.exception("anthropic route failed", extra={"path": request.url.path})
            return error_response(Internal("internal error"))

    return wrapped


async def parse(request: Request, model: type[Any]) -> Any:
    try:
        return model.model_validate(await json_body(request) or {})
    except ValidationError as exc:
        raise invalid_argument(exc.errors()) from None


def sse(event: str, data: dict[str, Any]) -> ServerSentEvent:
    """One named event (`event:` then `data:` lines, as Anthropic's SDKs parse them)."""
    return ServerSentEvent(orjson.dumps(data).decode(), event=event, sep=SSE_SEP)


@router.post("/messages", summary="Create a message (Anthropic Messages API; streamed with stream: true)")
@anthropic_errors
async def messages(request: Request) -> Response:
    auth = api_key(request)
    body: MessagesRequest = await parse(request, MessagesRequest)
    found = await catalog(request).for_task(body.model, ("chat",), auth, route="/v1/messages")
    req = convert.chat_request(body, found.model.id, accepted_url(request))
    client = mesh(request)
    events = client.stream(client.llm.ChatComplete, req, auth)
    if not body.stream:
        result = await final_result(events)
        return JSON(convert.message_json(result, model=body.model, message_id=convert.message_id()))
    first = await prime(events, ("chunk", "result"))
    state = convert.MessageStream(model=body.model, message_id=convert.message_id())

    async def chunks() -> AsyncIterator[ServerSentEvent]:
        try:
            for name, data in state.start():
                yield sse(name, data)
            async for name, data in folded(replay(first, events), state):
                yield sse(name, data)
        except Exception as exc:  # noqa: BLE001 - the status line is sent: report in-band
            error = exc if isinstance(exc, GenmeshError) else Internal("internal error")
            if not isinstance(exc, GenmeshError):
                log.error("stream failed", exc_info=exc)
            yield sse("error", convert.error_body(error))
        finally:
            await events.aclose()  # a client that went away cancels the model's run

    return event_stream(chunks())


@router.post("/messages/count_tokens", summary="Count a message's input tokens (Anthropic)")
@anthropic_errors
async def count_tokens(request: Request) -> Response:
    auth = api_key(request)
    body: CountTokensRequest = await parse(request, CountTokensRequest)
    found = await catalog(request).for_task(body.model, ("chat",), auth, route="/v1/messages/count_tokens")
    client = mesh(request)
    resp = await client.unary(client.llm.CountTokens, convert.count_request(body, found.model.id,
                                                                            accepted_url(request)), auth)
    return JSON({"input_tokens": resp.tokens})

