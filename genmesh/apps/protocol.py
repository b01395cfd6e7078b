"""The apps REST protocol (`/v1/apps`), shared by the edge and `genmesh.Client`: request bodies as
Pydantic models, and apps and log lines rendered as JSON."""
from __future__ import annotations

import base64
import binascii
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genmesh import jsonpb
from genmesh.errors import InvalidArgument
from genmesh.v1 import apps_pb2, common_pb2


class EndpointBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = "/"
    input_schema: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any] = Field(default_factory=dict)
    streaming: bool = False


class DeployBody(BaseModel):
    """POST /v1/apps: an app manifest plus its code (base64 in JSON, or a multipart file)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    entrypoint: str
    code: str = ""  # base64 of the zip; empty when the code travels as a multipart file
    description: str = ""
    machine_type: str = "CPU"
    num_gpus: int = Field(default=0, ge=0)
    requirements: list[str] = Field(default_factory=list)
    keep_alive: float = Field(default=60.0, ge=0)
    min_concurrency: int = Field(default=0, ge=0)
    max_concurrency: int = Field(default=2, ge=1)
    endpoints: list[EndpointBody]

    def to_request(self, code: bytes | None = None) -> apps_pb2.DeployAppRequest:
        if code is None:
            try:
                code = base64.b64decode(self.code, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidArgument("must be the base64 of a zip archive", field="code") from None
        req = apps_pb2.DeployAppRequest(
            name=self.name, entrypoint=self.entrypoint, code=code, description=self.description,
            machine_type=self.machine_type, num_gpus=self.num_gpus, requirements=self.requirements,
            keep_alive_seconds=self.keep_alive, min_concurrency=self.min_concurrency,
            max_concurrency=self.max_concurrency)
        for ep in self.endpoints:
            out = req.endpoints.add(path=ep.path, streaming=ep.streaming)
            out.input_schema.update(ep.input_schema)
            out.output_schema.update(ep.output_schema)
        return req


class ScaleBody(BaseModel):
    """POST /v1/apps/{owner}/{alias}/scale: any of the three; the others stay as they are."""

    model_config = ConfigDict(extra="forbid")

    min_concurrency: int | None = Field(default=None, ge=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    keep_alive: float | None = Field(default=None, ge=0)

    def to_request(self, app_id: str) -> apps_pb2.ScaleAppRequest:
        req = apps_pb2.ScaleAppRequest(id=app_id)
        if self.min_concurrency is not None:
            req.min_concurrency = self.min_concurrency
        if self.max_concurrency is not None:
            req.max_concurrency = self.max_concurrency
        if self.keep_alive is not None:
            req.keep_alive_seconds = self.keep_alive
        return req


def parse(model: type[BaseModel], data: Any) -> Any:
    """The body as `model`; InvalidArgument names the first bad field."""
    if not isinstance(data, dict):
        raise InvalidArgument("the request body must be a JSON object", field="body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "body"
        message = "unknown field" if first.get("type") == "extra_forbidden" else first.get("msg", "invalid")
        raise InvalidArgument(message, field=field) from None


def _time(ts: Any) -> str | None:
    return ts.ToJsonString() if ts.seconds or ts.nanos else None


def app_json(app: apps_pb2.App, base_url: str = "") -> dict[str, Any]:
    base = base_url.rstrip("/")
    return {
        "id": app.id, "version": app.version, "description": app.description,
        "entrypoint": app.entrypoint, "machine_type": app.machine_type, "num_gpus": app.num_gpus,
        "requirements": list(app.requirements), "keep_alive": app.keep_alive_seconds,
        "min_concurrency": app.min_concurrency, "max_concurrency": app.max_concurrency,
        "runners": app.runners, "busy_runners": app.busy_runners,
        "endpoints": [{"path": e.path, "streaming": e.streaming,
                       "url": f"{base}/{app.id}{'' if e.path == '/' else e.path}" if base else None,
                       "input_schema": jsonpb.struct_to_json(e.input_schema),
                       "output_schema": jsonpb.struct_to_json(e.output_schema)} for e in app.endpoints],
        "created_at": _time(app.created_at), "updated_at": _time(app.updated_at),
    }


def log_json(line: apps_pb2.StreamAppLogsResponse) -> dict[str, Any]:
    level = common_pb2.LogLevel.Name(line.entry.level).removeprefix("LOG_LEVEL_").lower()
    return {"timestamp": _time(line.entry.timestamp), "level": "info" if level == "unspecified" else level,
            "message": line.entry.message, "source": line.entry.source, "runner_id": line.runner_id,
            "request_id": line.request_id, "version": line.version, "worker_id": line.worker_id}


__all__ = ["DeployBody", "EndpointBody", "ScaleBody", "app_json", "log_json", "parse"]
