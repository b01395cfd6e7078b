"""`genmesh run file.py::MyApp`: the app served locally for development, no mesh needed. One
instance (setup once, teardown on exit), one call at a time like a runner; POST /{path} with a
JSON body runs an endpoint, POST /{path}/stream (or Accept: text/event-stream) streams it, and
GET / shows the manifest."""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from genmesh.apps.app import App, Endpoint
from genmesh.apps.invoke import AppFailure, Cancelled, InvalidInput, call


def _error(status: int, detail: str, error_type: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail, "error_type": error_type}
    if field:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers={"x-fal-error-type": error_type})


class LocalApp:
    """An app instance behind a lock, its calls run in a worker thread."""

    def __init__(self, cls: type[App], entrypoint: str = "") -> None:
        self.cls = cls
        self.entrypoint = entrypoint
        self.endpoints = cls.endpoints()
        self.instance: App | None = None
        self.loop = asyncio.new_event_loop()  # for async endpoints, driven from the worker thread
        self.lock = threading.Lock()

    def _maybe_await(self, value: Any) -> None:
        if inspect.isawaitable(value):
            self.loop.run_until_complete(value)

    def setup(self) -> None:
        self.instance = self.cls()
        self._maybe_await(self.instance.setup())

    def teardown(self) -> None:
        if self.instance is not None:
            self._maybe_await(self.instance.teardown())

    def run(self, ep: Endpoint, payload: Any, emit: Callable[[tuple[str, dict[str, Any]]], None],
            cancel: threading.Event) -> None:
        with self.lock:
            for item in call(self.instance, ep, payload, cancel=cancel, loop=self.loop):
                emit(item)


def create_app(cls: type[App], entrypoint: str = "") -> Starlette:
    local = LocalApp(cls, entrypoint)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(local.setup)
        yield
        await asyncio.to_thread(local.teardown)

    async def manifest(_request: Request) -> Response:
        return JSONResponse(cls.manifest(entrypoint).model_dump())

    async def invoke(request: Request) -> Response:
        path = "/" + request.path_params["path"].strip("/")
        streaming = "text/event-stream" in request.headers.get("accept", "")
        if path.endswith("/stream") or path == "/stream":
            path, streaming = path[: -len("/stream")] or "/", True
        ep = local.endpoints.get(path)
        if ep is None:
            return _error(404, f"no endpoint {path}; this app serves {', '.join(sorted(local.endpoints))}",
                          "not_found")
        raw = await request.body()
        try:
            payload = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            return _error(400, f"the request body is not valid JSON: {exc}", "invalid_argument", "body")
        if streaming:
            return EventSourceResponse(_stream(local, ep, payload))
        try:
            result = None
            async for kind, data in _events(local, ep, payload):
                if kind == "result":
                    result = data
        except InvalidInput as exc:
            return _error(400, str(exc), "invalid_argument", exc.field)
        except AppFailure as exc:
            return _error(500, str(exc), "app_error")
        return JSONResponse(result)

    return Starlette(routes=[Route("/", manifest, methods=["GET"]),
                             Route("/{path:path}", invoke, methods=["POST"])], lifespan=lifespan)


async def _events(local: LocalApp, ep: Endpoint, payload: Any) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    cancel = threading.Event()
    done = object()

    def body() -> None:
        try:
            local.run(ep, payload, lambda item: loop.call_soon_threadsafe(queue.put_nowait, item), cancel)
        except BaseException as exc:  # noqa: BLE001 - handed to the async side
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, done)

    future = loop.run_in_executor(None, body)
    try:
        while (item := await queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()
        with contextlib.suppress(Cancelled, Exception):
            await future


async def _stream(local: LocalApp, ep: Endpoint, payload: Any) -> AsyncIterator[dict[str, Any]]:
    try:
        async for kind, data in _events(local, ep, payload):
            if kind == "partial":
                yield {"data": json.dumps({"type": "partial", "partial": data})}
            else:
                yield {"data": json.dumps(data)}
    except InvalidInput as exc:
        yield {"event": "error", "data": json.dumps({"detail": str(exc), "error_type": "invalid_argument",
                                                    "field": exc.field, "status_code": 400})}
    except AppFailure as exc:
        yield {"event": "error", "data": json.dumps({"detail": str(exc), "error_type": "app_error",
                                                    "status_code": 500})}


def serve(cls: type[App], *, entrypoint: str = "", host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(create_app(cls, entrypoint), host=host, port=port, log_level="info")
