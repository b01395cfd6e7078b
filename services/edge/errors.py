"""Rendering errors for HTTP clients: the OpenAI shape under /v1/, FAL's elsewhere. No stack
trace ever reaches a client."""
from __future__ import annotations

import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from genmesh.services.edge.responses import JSON
from starlette.exceptions import HTTPException

from genmesh.errors import GenmeshError, Internal, InvalidArgument, NotFound, Unauthenticated

log = logging.getLogger("genmesh.edge")
OPENAI_PREFIX = "/v1/"


def is_openai(request: Request) -> bool:
    return request.url.path.startswith(OPENAI_PREFIX) and not request.url.path.startswith("/v1/models/")


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


async def validation_error(request: Request, exc: Exception) -> JSON:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = ".".join(loc) or None
    return render(request, InvalidArgument(first.get("msg", "invalid request"), field=field))


async def http_error(request: Request, exc: Exception) -> JSON:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: GenmeshError = NotFound(f"no route {request.method} {request.url.path}")
    elif exc.status_code == 401:
        error = Unauthenticated(str(exc.detail))
    elif exc.status_code == 405:
        error = InvalidArgument(f"method {request.method} not allowed on {request.url.path}")
        error.http_status = 405
    else:
        error = InvalidArgument(str(exc.detail))
        error.http_status = exc.status_code
    return render(request, error)


async def unexpected_error(request: Request, exc: Exception) -> JSON:
    log.exception("unhandled edge error", extra={"path": request.url.path})
    return render(request, Internal("internal error"))
