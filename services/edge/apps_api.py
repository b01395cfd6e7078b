"""Apps over REST (`/v1/apps`): deploy (JSON with base64 code, or multipart), list, get, scale,
logs (JSON, or SSE with ?follow=true) and delete, forwarded to the router's Apps service with the
caller's key. Deployed apps are then called through the FAL routes like any model."""
from __future__ import annotations

import json
from typing import Any, AsyncIterator

from fastapi import APIRouter, Request
from sse_starlette.sse import EventSourceResponse

from genmesh.apps.protocol import DeployBody, ScaleBody, app_json, log_json, parse
from genmesh.errors import GenmeshError, InvalidArgument, PermissionDenied
from genmesh.v1 import apps_pb2
from genmesh.services.edge.auth import authorization
from genmesh.services.edge.responses import JSON, json_body

router = APIRouter(prefix="/v1/apps", tags=["apps"])


def _mesh(request: Request) -> Any:
    return request.app.state.mesh


def _base_url(request: Request) -> str:
    return (request.app.state.settings.public_url or str(request.base_url)).rstrip("/")


async def _deploy_request(request: Request) -> apps_pb2.DeployAppRequest:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        manifest, upload = form.get("manifest"), form.get("code")
        if not isinstance(manifest, str):
            raise InvalidArgument("is required: the app manifest as JSON text", field="manifest")
        if upload is None or isinstance(upload, str):
            raise InvalidArgument("is required: the zip of the app's code as a file", field="code")
        try:
            data = json.loads(manifest)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"is not valid JSON: {exc}", field="manifest") from None
        return parse(DeployBody, data).to_request(await upload.read())
    return parse(DeployBody, await json_body(request)).to_request()


@router.post("", summary="Deploy an app (a new version when it exists)", status_code=201)
async def deploy(request: Request) -> JSON:
    auth = authorization(request)
    req = await _deploy_request(request)
    resp = await _mesh(request).unary(_mesh(request).apps.DeployApp, req, auth)
    return JSON(app_json(resp.app, _base_url(request)), status_code=201)


@router.get("", summary="The caller's apps (every app for an admin key)")
async def list_apps(request: Request) -> JSON:
    auth = authorization(request)
    resp = await _mesh(request).unary(_mesh(request).apps.ListApps, apps_pb2.ListAppsRequest(), auth)
    base = _base_url(request)
    return JSON({"apps": [app_json(a, base) for a in resp.apps]})


@router.get("/{owner}/{alias}", summary="One app")
async def get_app(owner: str, alias: str, request: Request) -> JSON:
    auth = authorization(request)
    resp = await _mesh(request).unary(_mesh(request).apps.GetApp,
                                      apps_pb2.GetAppRequest(id=f"{owner}/{alias}"), auth)
    return JSON(app_json(resp.app, _base_url(request)))


@router.post("/{owner}/{alias}/scale", summary="Change min/max concurrency and keep-alive")
async def scale(owner: str, alias: str, request: Request) -> JSON:
    auth = authorization(request)
    body = parse(ScaleBody, await json_body(request) or {})
    resp = await _mesh(request).unary(_mesh(request).apps.ScaleApp, body.to_request(f"{owner}/{alias}"), auth)
    return JSON(app_json(resp.app, _base_url(request)))


@router.get("/{owner}/{alias}/logs", summary="Retained log lines; ?follow=true streams new ones (SSE)")
async def logs(owner: str, alias: str, request: Request) -> Any:
    auth = authorization(request)
    follow = request.query_params.get("follow", "").lower() in ("1", "true", "yes")
    client = _mesh(request)
    req = apps_pb2.StreamAppLogsRequest(id=f"{owner}/{alias}", follow=follow)
    if not follow:
        lines = [log_json(line) async for line in client.stream(client.apps.StreamAppLogs, req, auth)]
        return JSON({"logs": lines})
    call = client.stream(client.apps.StreamAppLogs, req, auth)
    # Check access before answering 200, so a wrong key or app gets its real status code
    # (GetApp answers anyone, but names the owner only to the owner or an admin).
    app = (await client.unary(client.apps.GetApp, apps_pb2.GetAppRequest(id=req.id), auth)).app
    if not app.owner_key_id:
        raise PermissionDenied(f"only the key that deployed '{req.id}' (or an admin) may read its logs")

    async def events() -> AsyncIterator[dict[str, Any]]:
        try:
            async for line in call:
                yield {"data": json.dumps(log_json(line))}
        except GenmeshError as exc:
            yield {"event": "error", "data": json.dumps({**exc.fal_body(), "status_code": exc.http_status})}

    return EventSourceResponse(events())


@router.delete("/{owner}/{alias}", summary="Delete an app (its runners stop once idle)")
async def delete(owner: str, alias: str, request: Request) -> JSON:
    auth = authorization(request)
    await _mesh(request).unary(_mesh(request).apps.DeleteApp, apps_pb2.DeleteAppRequest(id=f"{owner}/{alias}"), auth)
    return JSON({"id": f"{owner}/{alias}", "deleted": True})
