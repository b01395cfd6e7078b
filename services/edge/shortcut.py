"""The FAL run route without FastAPI's per-request layers: `POST /{owner}/{model}` is the edge's
hottest path, and on its way to the catch-all that serves it a request crosses eight ASGI layers
(Starlette's error and exception middlewares, FastAPI's telemetry, body-limit and exit-stack
middlewares, the edge's own three) and FastAPI's walk of every included router, and its body is
parsed as JSON twice (the depth check, then the handler). Measured with py-spy under load, those
layers and the routing walk were most of the edge's own Python time per request.

`RunShortcut` wraps the whole middleware stack (see `EdgeApp`). It learns from FastAPI itself:
the first request to a POST path goes through FastAPI as usual, and the route FastAPI picked (it
leaves it in `scope["route"]`) is remembered for that path. Routing depends only on the method
and the path, so once FastAPI has sent a path to `fal.run`, later requests to it go straight to
the same handler (`fal.run_payload`), with the same checks done once each: the body cap (413),
one JSON parse with the depth limit (400 naming `body`), errors rendered as the edge renders
them and anything unexpected as its 500. Every other path, and every path not yet seen, goes
through FastAPI unchanged.
"""
from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from genmesh.errors import GenmeshError, InvalidArgument
from genmesh.services.edge import errors, fal, jsonlimits

MAX_PATHS = 4096  # distinct model paths remembered; past that, learning stops (still correct)
FAL_RUN_PATH = "/{model_path:path}"


class RunShortcut:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.fal_run_paths: set[str] = set()
        self.other_paths: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in self.fal_run_paths:
            await self._run(path, scope, receive, send)
            return
        await self.app(scope, receive, send)
        if path not in self.other_paths:
            self._learn(path, scope.get("route"))

    def _learn(self, path: str, route: Any) -> None:
        if route is None or len(self.fal_run_paths) + len(self.other_paths) >= MAX_PATHS:
            return
        if getattr(route, "endpoint", None) is fal.run and getattr(route, "path", None) == FAL_RUN_PATH:
            self.fal_run_paths.add(path)
        else:
            self.other_paths.add(path)

    async def _run(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            payload = parse_body(await self._body(scope, receive))
            # The route's only parameter: everything after the leading slash.
            response = await fal.run_payload(path[1:], request, payload)
        except GenmeshError as exc:
            response = errors.render(request, exc)
        except Exception as exc:  # noqa: BLE001 - as CatchAll: the caller's 500, never a trace
            response = await errors.unexpected_error(request, exc)
        await response(scope, receive, send)

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body, refused (413) past the cap whether or not its length was announced."""
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                raise too_large(self.max_body_bytes)
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client left; the handler's answer goes nowhere
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body_bytes:
                raise too_large(self.max_body_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def too_large(max_bytes: int) -> InvalidArgument:
    error = InvalidArgument(f"request body larger than {max_bytes} bytes", field="body")
    error.http_status = 413
    return error


def parse_body(raw: bytes) -> Any:
    """The body as JSON, parsed once: None when empty; 400 naming `body` when it is not JSON or
    nests deeper than the edge takes (what JsonDepthLimit and the handler check on the long way)."""
    if not raw.strip():
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if jsonlimits.too_deep(raw):
            raise depth_error() from None
        raise InvalidArgument(f"the request body is not valid JSON: {exc}", field="body") from None
    if jsonlimits.depth_exceeds(doc):
        raise depth_error()
    return doc


def depth_error() -> InvalidArgument:
    return InvalidArgument(f"JSON nested deeper than {jsonlimits.MAX_JSON_DEPTH} levels", field="body")


class EdgeApp(FastAPI):
    """FastAPI with the run shortcut outside its whole middleware stack."""

    shortcut_max_body_bytes: int = 0

    def build_middleware_stack(self) -> ASGIApp:
        return RunShortcut(super().build_middleware_stack(), self.shortcut_max_body_bytes)
