"""The edge's ASGI application: routes, error rendering, body-size cap, JSON depth limit, and the
mesh client."""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

import uvicorn

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from genmesh.services.edge.responses import JSON
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genmesh import blobstore
from genmesh.errors import GenmeshError
from genmesh.settings import Settings
from genmesh.services.edge import errors, fal, jsonlimits, mesh_client
from genmesh.services.edge.auth import IdentityCache
from genmesh.services.edge.catalog_view import CatalogView
from genmesh.tokens import TokenSealer
from genmesh.services.edge.mesh_client import MeshClient
from genmesh.services.edge.shortcut import EdgeApp, depth_error, too_large


class BodyLimit:
    """413 for bodies over the cap, whether or not they announce their length."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._too_large(scope, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._too_large(scope, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        from starlette.requests import Request

        response = errors.render(Request(scope), too_large(self.max_bytes))
        await response(scope, None, send)  # type: ignore[arg-type]


class JsonDepthLimit:
    """400 naming `body` for JSON bodies nested deeper than MAX_JSON_DEPTH, before any handler
    parses them: deeper documents hit protobuf's recursion limit (~50) or Python's (~1000) on
    their way to the mesh. Inside BodyLimit, so what it buffers is already capped."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH") \
                or not _json_like(scope):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = bytearray()
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if jsonlimits.too_deep(bytes(body)):
            from starlette.requests import Request

            await errors.render(Request(scope), depth_error())(scope, receive, send)
            return
        replay = iter(messages)

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)


# Raw uploads (any bytes, whatever their content type says) are files, not requests to parse.
_RAW_UPLOAD_PATHS = ("/files/upload", "/storage/upload/")


def _json_like(scope: Scope) -> bool:
    if scope["path"].startswith(_RAW_UPLOAD_PATHS):
        return False
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            # FAL routes parse the body as JSON whatever it says (curl -d sends a form type).
            return not value.lower().startswith((b"multipart/", b"application/octet-stream"))
    return True


class CatchAll:
    """Renders any exception a handler lets escape as the caller's 500 before the response starts.
    Starlette's own handler for `Exception` re-raises after answering, and uvicorn then closes
    the keep-alive connection, failing the client's next request too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:  # noqa: BLE001 - answered in the caller's shape, never a trace
            if started:
                raise  # a half-sent response cannot be repaired; the connection must go
            from starlette.requests import Request

            response = await errors.unexpected_error(Request(scope), exc)
            await response(scope, receive, send)


class RequestIdHeader:
    """`x-request-id` on every response that concerns a request the router ran: the router's
    own id (the one its logs, the worker's and billing's request log use), as the router's
    typed calls named it. FAL routes know their id from the router's answer and send the header
    themselves (`fal.id_headers`; the run shortcut bypasses this middleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        noted: list[str] = []
        token = mesh_client.REQUEST_IDS.set(noted)

        async def with_id(message: Message) -> None:
            if noted and message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if all(name.lower() != b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", noted[0].encode()))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, with_id)
        finally:
            mesh_client.REQUEST_IDS.reset(token)


class _TooLarge(HTTPException):
    """Raised while reading the body; an HTTPException so that FastAPI's body parsing (which turns
    other errors into 400) lets it through to be answered 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body larger than {max_bytes} bytes")


class QuietServer(uvicorn.Server):
    """uvicorn ticking once a second instead of ten times: its tick only refreshes the Date
    header (to the second) and looks for a shutdown request, and ten wake-ups a second were
    most of an idle edge's CPU. SIGTERM is noticed within a second."""

    async def main_loop(self) -> None:
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000  # on_tick refreshes the Date header every 10th
            await asyncio.sleep(1.0)
            should_exit = await self.on_tick(counter)


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.mesh = MeshClient(settings)
        app.state.identities = IdentityCache(app.state.mesh)
        app.state.blobs = blobstore.open_store(settings)
        app.state.catalog = CatalogView(app.state.mesh, settings)
        app.state.tokens = TokenSealer(blobstore.signing_secret(settings))
        yield
        await app.state.mesh.close()

    app = EdgeApp(title="genmesh", version="0.1.0", openapi_url="/openapi.json", docs_url=None,
                  redoc_url=None, lifespan=lifespan, default_response_class=JSON,
                  description="Self-hosted generative inference: OpenAI- and FAL-compatible APIs.")
    app.state.settings = settings
    app.shortcut_max_body_bytes = settings.max_body_bytes
    app.add_exception_handler(GenmeshError, errors.genmesh_error)
    app.add_exception_handler(RequestValidationError, errors.validation_error)
    app.add_exception_handler(HTTPException, errors.http_error)
    app.add_exception_handler(Exception, errors.unexpected_error)

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    for module in _route_modules():
        app.include_router(module.router)
    # The FAL catch-all (POST /{owner}/{model}) comes last so it never shadows other routes.
    app.include_router(fal.router)
    # Added last = outermost: CatchAll, then the body cap, then the JSON depth limit. The FAL run
    # shortcut wraps all of them (EdgeApp) and does the same checks itself on the paths it takes.
    app.add_middleware(JsonDepthLimit)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(CatchAll)
    app.add_middleware(RequestIdHeader)
    return app


def _route_modules() -> list[Any]:
    """Route modules mounted before the FAL catch-all, in order (present ones only)."""
    import importlib

    out = []
    # platform before openai_api: /v1/models/pricing must not be read as a model id.
    for name in ("files", "platform", "openai_api", "batches", "realtime", "apps_api", "anthropic_api",
                 "responses_api", "tokenize_api", "deferred", "rerank", "vector_stores"):
        try:
            out.append(importlib.import_module(f"genmesh.services.edge.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"genmesh.services.edge.{name}":
                raise
    return out
