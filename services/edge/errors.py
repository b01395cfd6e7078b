"""Rendering errors for HTTP clients: the OpenAI shape under /v1/, FAL's elsewhere. No stack
trace ever reaches a client."""
from __future__ import annotations

import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from genmesh.services.edge.mesh_client import current_request_id
from genmesh.services.edge.responses import JSON
from starlette.exceptions import HTTPException

from genmesh.errors import GenmeshError, Internal, InvalidArgument, NotFound, Unauthenticated

log = logging.getLogger("genmesh.edge")
OPENAI_PREFIX = "/v1/"
# FAL platform API paths under /v1/ keep FAL's error shape.
FAL_PLATFORM_PATHS = ("/v1/models/pricing", "/v1/models/usage")


def is_openai(request: Request) -> bool:
    path = request.url.path
    return path.startswith(OPENAI_PREFIX) and not path.startswith(FAL_PLATFORM_PATHS)


def render(request: Request, error: GenmeshError) -> JSON:
    headers = {"x-fal-error-type": error.error_type}
    if error.retry_after is not None:
        headers["retry-after"] = str(max(1, int(error.retry_after + 0.999)))
    if error.http_status in (400, 401, 402, 403, 404, 413):
        headers["x-should-retry"] = "false"
    body = error.openai_body() if is_openai(request) else error.fal_body()
    if not is_openai(request) and error.field:
        body["field"] = error.field
    return JSON(body, status_code=error.http_status, headers=headers)


async def genmesh_error(request: Request, exc: Exception) -> JSON:
    assert isinstance(exc, GenmeshError)
    return render(request, exc)


def field_path(loc: tuple | list) -> str | None:
    """A validation error's location as genmesh names fields: `messages[0].content`."""
    out = ""
    skip_tag = False
    for i, part in enumerate(loc):
        if part in ("body", "query", "path", "header", "form"):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
            # In a list of a tagged union, pydantic puts the member's tag after the index.
            skip_tag = i > 0 and "tagged-union" in str(loc[i - 1])
            continue
        if skip_tag:
            skip_tag = False
            continue
        if not _is_union_tag(part):
            out += f".{part}" if out else str(part)
    return out or None


def _is_union_tag(part: object) -> bool:
    # pydantic names union members in locations (`str`, `list[...]`, `function-after[...]`).
    text = str(part)
    marker = "[" in text and not text.endswith("[]")  # `timestamp_granularities[]` is a form field
    return text in ("str", "int", "float", "bool", "dict", "list") or marker or text.startswith(
        ("function-", "literal", "tagged-union"))


def invalid_argument(errors: list[dict]) -> InvalidArgument:
    """A pydantic validation error as InvalidArgument naming the field. Of a union's alternatives
    the deepest error is the telling one (content given as a list fails inside the list, not as
    a string)."""
    first = max(errors, key=lambda e: len(e.get("loc", ())), default={})
    msg = first.get("msg", "invalid request")
    if first.get("type") == "extra_forbidden":
        msg = "unknown parameter"
    elif first.get("type") == "json_invalid":
        return InvalidArgument("the request body is not valid JSON", field="body")
    return InvalidArgument(msg, field=field_path(first.get("loc", ())))


async def validation_error(request: Request, exc: Exception) -> JSON:
    assert isinstance(exc, RequestValidationError)
    return render(request, invalid_argument(list(exc.errors())))


async def http_error(request: Request, exc: Exception) -> JSON:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: GenmeshError = NotFound(f"no route {request.method} {request.url.path}")
    elif exc.status_code == 401:
        error = Unauthenticated(str(exc.detail))
    elif exc.status_code == 413:
        error = InvalidArgument(str(exc.detail), field="body")
        error.http_status = 413
    elif exc.status_code == 405:
        error = InvalidArgument(f"method {request.method} not allowed on {request.url.path}")
        error.http_status = 405
    else:
        error = InvalidArgument(str(exc.detail))
        error.http_status = exc.status_code
    return render(request, error)


async def unexpected_error(request: Request, exc: Exception) -> JSON:
    # The router's id for the request when a mesh call named it: the one its logs and billing use.
    log.exception("unhandled edge error", extra={"path": request.url.path,
                                                 "request_id": current_request_id()})
    return render(request, Internal("internal error"))
