"""A webhook endpoint for tests: a real HTTP server on a free port that records every delivery."""
from __future__ import annotations

import asyncio
from typing import NamedTuple

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from genmesh.up import free_port

START_TIMEOUT_S = 10.0


class Delivery(NamedTuple):
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """POST /hook on `host` records the delivery and answers 200, or 500 for the first
    `failures` of them; POST /redirect answers a 307 to `redirect_to` (never followed by the
    mesh: a redirect's target was not checked)."""

    def __init__(self, host: str = "127.0.0.1", *, failures: int = 0, redirect_to: str = "") -> None:
        self.host = host
        self.port = free_port()
        self.failures = failures
        self.redirect_to = redirect_to
        self.received: list[Delivery] = []
        self._arrived = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    async def handle(self, request: Request) -> Response:
        self.received.append(Delivery(request.url.path, dict(request.headers), await request.body()))
        async with self._arrived:
            self._arrived.notify_all()
        if request.url.path == "/redirect":
            return RedirectResponse(self.redirect_to, status_code=307)
        return Response(status_code=500 if len(self.received) <= self.failures else 200)

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Delivery]:
        """The first `count` deliveries, once they have all arrived."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.received) >= count), timeout)
        return self.received[:count]

    async def __aenter__(self) -> WebhookReceiver:
        app = Starlette(routes=[Route("/hook", self.handle, methods=["POST"]),
                                Route("/redirect", self.handle, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host=self.host, port=self.port, log_level="error"))
        self.task = asyncio.create_task(self.server.serve())

        async def serving() -> None:
            while not self.server.started and not self.task.done():
                await asyncio.sleep(0.01)  # uvicorn has no start event, only this flag

        await asyncio.wait_for(serving(), START_TIMEOUT_S)
        if self.task.done():
            self.task.result()  # it failed to bind: raise why
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        await self.task
