"""`genmesh.Client`: a small synchronous HTTP client for a genmesh edge. Runs any model or app
(sync, queued, streamed) through the FAL-compatible routes and manages apps through `/v1/apps`.

    client = genmesh.Client()        # GENMESH_URL and GENMESH_API_KEY, or pass url= and key=
    client.run("alice/text-stats", {"text": "hello world"})
    for event in client.stream("alice/text-stats/transform", {"text": "a b c"}): ...
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict

from genmesh.apps import bundle
from genmesh.apps.loader import AppRef, load_class

DEFAULT_URL = "http://127.0.0.1:8080"


class ClientSettings(BaseSettings):
    """Where the mesh is and who is calling: GENMESH_URL (the edge) and GENMESH_API_KEY."""

    model_config = SettingsConfigDict(env_prefix="GENMESH_", extra="ignore")

    url: str = DEFAULT_URL
    api_key: str | None = None


class ClientError(Exception):
    """A non-2xx answer, with the status, the mesh's error type and its message."""

    def __init__(self, status_code: int, message: str, error_type: str = "", field: str | None = None) -> None:
        super().__init__(f"{status_code} {error_type}: {message}" if error_type else f"{status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.error_type = error_type
        self.field = field


def _error(response: httpx.Response) -> ClientError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if isinstance(body, dict) and isinstance(body.get("error"), dict):  # OpenAI shape (/v1/...)
        err = body["error"]
        return ClientError(response.status_code, str(err.get("message", "")),
                           str(err.get("code") or err.get("type") or ""), err.get("param"))
    if isinstance(body, dict) and "detail" in body:  # FAL shape
        return ClientError(response.status_code, str(body["detail"]),
                           str(body.get("error_type") or response.headers.get("x-fal-error-type", "")),
                           body.get("field"))
    return ClientError(response.status_code, response.text[:500] or response.reason_phrase)


def _handle(app_id: str) -> str:
    """owner/alias of owner/alias/sub: queue handles drop the endpoint path (as FAL's do)."""
    return "/".join(app_id.strip("/").split("/")[:2])


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) of a text/event-stream."""
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
    if data:
        yield event, "\n".join(data)


class Client:
    def __init__(self, url: str | None = None, key: str | None = None, *, timeout: float = 300.0) -> None:
        settings = ClientSettings()
        self.url = (url or settings.url).rstrip("/")
        self.key = key if key is not None else settings.api_key
        headers = {"Authorization": f"Key {self.key}"} if self.key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 300:
            raise _error(response)
        return response.json()

    # --- running models and apps ----------------------------------------------------------------

    def run(self, app_id: str, arguments: dict[str, Any] | None = None, *,
            timeout: float | None = None) -> dict[str, Any]:
        """Runs and waits for the result."""
        kwargs: dict[str, Any] = {"json": arguments or {}}
        if timeout is not None:
            kwargs["timeout"] = timeout
        return self._json("POST", f"/{app_id.strip('/')}", **kwargs)

    def submit(self, app_id: str, arguments: dict[str, Any] | None = None, *,
               webhook_url: str | None = None) -> dict[str, Any]:
        """Queues a request; the answer has `request_id` and the status/response/cancel URLs."""
        params = {"fal_webhook": webhook_url} if webhook_url else None
        return self._json("POST", f"/queue/{app_id.strip('/')}", json=arguments or {}, params=params)

    def status(self, app_id: str, request_id: str, *, logs: bool = False) -> dict[str, Any]:
        return self._json("GET", f"/queue/{_handle(app_id)}/requests/{request_id}/status",
                          params={"logs": "true" if logs else "false"})

    def result(self, app_id: str, request_id: str) -> dict[str, Any]:
        return self._json("GET", f"/queue/{_handle(app_id)}/requests/{request_id}")

    def cancel(self, app_id: str, request_id: str) -> dict[str, Any]:
        response = self.http.put(f"/queue/{_handle(app_id)}/requests/{request_id}/cancel")
        return response.json()

    def wait(self, app_id: str, request_id: str, *, timeout: float = 300.0,
             poll_s: float = 0.1) -> dict[str, Any]:
        """Polls a queued request until it completes; its result (ClientError if it failed)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.status(app_id, request_id)["status"] == "COMPLETED":
                return self.result(app_id, request_id)
            if time.monotonic() > deadline:
                raise TimeoutError(f"request {request_id} not completed within {timeout:g}s")
            time.sleep(poll_s)

    def stream(self, app_id: str, arguments: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """The request's events as they come; the last one is the final output."""
        with self.http.stream("POST", f"/{app_id.strip('/')}/stream", json=arguments or {},
                              headers={"Accept": "text/event-stream"}) as response:
            if response.status_code >= 300:
                response.read()
                raise _error(response)
            for event, data in sse_events(response.iter_lines()):
                payload = json.loads(data)
                if event == "error":
                    raise ClientError(int(payload.get("status_code", 500)), str(payload.get("detail", "")),
                                      str(payload.get("error_type", "")))
                yield payload

    # --- apps -----------------------------------------------------------------------------------

    def deploy(self, ref: str, *, name: str | None = None, root: Path | None = None) -> dict[str, Any]:
        """Deploys `path/to/file.py::ClassName`: the class is imported here for its manifest, its
        directory (or `root`) is zipped as the code; answers the deployed app."""
        app_ref = AppRef.parse(ref)
        root = (root or app_ref.file.parent).resolve()
        entrypoint = app_ref.entrypoint(root)
        manifest = load_class(app_ref).manifest(entrypoint)
        body = manifest.model_dump()
        body["name"] = name or manifest.name
        code = bundle.build(root)
        return self._json("POST", "/v1/apps", data={"manifest": json.dumps(body)},
                          files={"code": ("code.zip", code, "application/zip")})

    def list_apps(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/apps")["apps"]

    def get_app(self, app_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/apps/{app_id}")

    def scale_app(self, app_id: str, *, min_concurrency: int | None = None, max_concurrency: int | None = None,
                  keep_alive: float | None = None) -> dict[str, Any]:
        body = {k: v for k, v in (("min_concurrency", min_concurrency), ("max_concurrency", max_concurrency),
                                  ("keep_alive", keep_alive)) if v is not None}
        return self._json("POST", f"/v1/apps/{app_id}/scale", json=body)

    def app_logs(self, app_id: str, *, follow: bool = False) -> Iterator[dict[str, Any]]:
        if not follow:
            yield from self._json("GET", f"/v1/apps/{app_id}/logs")["logs"]
            return
        with self.http.stream("GET", f"/v1/apps/{app_id}/logs", params={"follow": "true"},
                              timeout=httpx.Timeout(None, connect=10)) as response:
            if response.status_code >= 300:
                response.read()
                raise _error(response)
            for event, data in sse_events(response.iter_lines()):
                payload = json.loads(data)
                if event == "error":
                    raise ClientError(int(payload.get("status_code", 500)), str(payload.get("detail", "")),
                                      str(payload.get("error_type", "")))
                yield payload

    def delete_app(self, app_id: str) -> dict[str, Any]:
        return self._json("DELETE", f"/v1/apps/{app_id}")
