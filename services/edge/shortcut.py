"""The FAL run route without FastAPI's per-request routing: `POST /{owner}/{model}` is the edge's
hottest path, and FastAPI 0.16x walks every included router (building route contexts and
dependency models on the way) before it reaches the catch-all that serves it. Measured with
py-spy under load, that walk was about half of the edge's CPU per request.

`RunShortcut` sits just outside FastAPI's exception middleware (inside the body cap, the JSON
depth limit and the catch-all renderer, which still apply). It learns from FastAPI itself: the
first request to a POST path is routed by FastAPI as usual, and the route FastAPI picked (it
leaves it in `scope["route"]`) is remembered for that path. Routing depends only on the method
and the path, so once FastAPI has sent a path to `fal.run`, later requests to it go straight to
`fal.run`, the same handler, with errors rendered by the same handler FastAPI would use. Every
other path, and every path not yet seen, goes through FastAPI unchanged.
"""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from genmesh.errors import GenmeshError
from genmesh.services.edge import errors, fal

MAX_PATHS = 4096  # distinct model paths remembered; past that, learning stops (still correct)
FAL_RUN_PATH = "/{model_path:path}"


class RunShortcut:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
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
            # The route's only parameter: everything after the leading slash.
            response = await fal.run(path[1:], request)
        except GenmeshError as exc:
            response = await errors.genmesh_error(request, exc)
        await response(scope, receive, send)
