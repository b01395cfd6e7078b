"""Deployed apps as the router sees them: deploy requests checked field by field, apps turned into
catalog entries (task "app", hardware from the machine type, runner-second prices), and a call's
JSON body checked against the endpoint's exported input schema before it is queued or run."""
from __future__ import annotations

import re
from typing import Any

import jsonschema
from google.protobuf import struct_pb2
from packaging.requirements import InvalidRequirement, Requirement
from pydantic import PrivateAttr

from genmesh import jsonpb
from genmesh.apps import bundle
from genmesh.apps.app import AppDefinitionError, check_path
from genmesh.apps.loader import check_entrypoint
from genmesh.apps.machines import MACHINES, MAX_GPUS, machine
from genmesh.catalog import ModelSpec, PriceSpec
from genmesh.errors import InvalidArgument, NotFound
from genmesh.v1 import apps_pb2, router_pb2

APP_TASK = "app"
APP_SERVICE = "apps"
_PART = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MAX_KEEP_ALIVE_S = 7 * 86400.0
MAX_CONCURRENCY = 64
MAX_ENDPOINTS = 64


def check_app_id(app_id: str, field: str = "name") -> str:
    parts = app_id.split("/")
    if len(parts) != 2 or not all(_PART.fullmatch(p) for p in parts):
        raise InvalidArgument("must be owner/alias: lower-case letters, digits, '-' and '_', "
                              "each part starting with a letter or digit", field=field)
    return app_id


def is_owner_name(name: str) -> bool:
    """Whether `name` can be the owner part of an app id."""
    return bool(_PART.fullmatch(name))


def default_owner(key_id: str) -> str:
    owner = re.sub(r"[^a-z0-9_-]", "-", key_id.lower()).strip("-_") or "apps"
    return owner[:63]


def endpoint_path(app_id: str, model_id: str) -> str:
    """'/' for `owner/alias`, '/sub/x' for `owner/alias/sub/x`."""
    rest = model_id[len(app_id):] if model_id.startswith(app_id) else ""
    return rest if rest.startswith("/") else "/"


def check_deploy(req: apps_pb2.DeployAppRequest, key_id: str) -> apps_pb2.App:
    """The app a deploy request describes (no version or code location yet); InvalidArgument
    names the first bad field."""
    name = req.name.strip()
    if not name:
        raise InvalidArgument("is required (owner/alias, or alias to deploy under your key)", field="name")
    if "/" not in name:
        name = f"{default_owner(key_id)}/{name}"
    check_app_id(name)
    try:
        check_entrypoint(req.entrypoint)
    except AppDefinitionError as exc:
        raise InvalidArgument(str(exc), field="entrypoint") from None
    if not req.code:
        raise InvalidArgument("is required: a zip of the app's directory", field="code")
    if len(req.code) > bundle.MAX_BUNDLE_BYTES:
        raise InvalidArgument(f"is {len(req.code)} bytes; the limit is {bundle.MAX_BUNDLE_BYTES}", field="code")
    try:
        files = bundle.names(req.code)
    except bundle.BundleError as exc:
        raise InvalidArgument(str(exc), field="code") from None
    entry_file = req.entrypoint.rpartition("::")[0]
    if entry_file not in files:
        raise InvalidArgument(f"the bundle has no {entry_file}", field="entrypoint")
    m = machine(req.machine_type or "CPU")
    if m is None:
        raise InvalidArgument(f"must be one of {', '.join(MACHINES)}", field="machine_type")
    num_gpus = req.num_gpus or (1 if m.gpu_required else 0)
    if m.gpu_required and not 1 <= num_gpus <= MAX_GPUS:
        raise InvalidArgument(f"must be between 1 and {MAX_GPUS} on {m.name}", field="num_gpus")
    if not m.gpu_required and num_gpus:
        raise InvalidArgument("must be 0 on a CPU machine", field="num_gpus")
    for i, requirement in enumerate(req.requirements):
        try:
            parsed = Requirement(requirement)
        except InvalidRequirement as exc:
            raise InvalidArgument(f"not a pip requirement: {exc}", field=f"requirements[{i}]") from None
        if parsed.url:
            # The worker fetches requirements itself: a URL (file://, an internal host) would
            # make it read or request what the tenant names.
            raise InvalidArgument("must name a package from the index (name and version), not a URL",
                                  field=f"requirements[{i}]")
    app = apps_pb2.App(
        id=name, entrypoint=req.entrypoint, machine_type=m.name, num_gpus=num_gpus,
        requirements=list(req.requirements), keep_alive_seconds=req.keep_alive_seconds,
        min_concurrency=req.min_concurrency, max_concurrency=req.max_concurrency or 1,
        description=req.description[:2000])
    check_scaling(app)
    if not req.endpoints:
        raise InvalidArgument("at least one endpoint is required", field="endpoints")
    if len(req.endpoints) > MAX_ENDPOINTS:
        raise InvalidArgument(f"at most {MAX_ENDPOINTS} endpoints", field="endpoints")
    seen: set[str] = set()
    for i, ep in enumerate(req.endpoints):
        try:
            check_path(ep.path)
        except AppDefinitionError as exc:
            raise InvalidArgument(str(exc), field=f"endpoints[{i}].path") from None
        if ep.path in seen:
            raise InvalidArgument(f"duplicate endpoint {ep.path}", field=f"endpoints[{i}].path")
        seen.add(ep.path)
        try:
            jsonschema.Draft202012Validator.check_schema(jsonpb.struct_to_dict(ep.input_schema))
        except jsonschema.SchemaError as exc:
            raise InvalidArgument(f"not a JSON schema: {exc.message}",
                                  field=f"endpoints[{i}].input_schema") from None
        app.endpoints.append(ep)
    return app


def check_scaling(app: apps_pb2.App) -> None:
    if not 0 <= app.keep_alive_seconds <= MAX_KEEP_ALIVE_S:
        raise InvalidArgument(f"must be between 0 and {MAX_KEEP_ALIVE_S:g} seconds", field="keep_alive_seconds")
    if not 1 <= app.max_concurrency <= MAX_CONCURRENCY:
        raise InvalidArgument(f"must be between 1 and {MAX_CONCURRENCY}", field="max_concurrency")
    if not 0 <= app.min_concurrency <= app.max_concurrency:
        raise InvalidArgument(f"must be between 0 and max_concurrency ({app.max_concurrency})",
                              field="min_concurrency")


def _closed(schema: Any) -> Any:
    """The schema with objects closed unless they say otherwise: unknown fields are errors."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def _field_of(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set((error.schema or {}).get("properties", {}))
        extra = sorted(k for k in error.instance if k not in known)
        if extra:
            return f"{path}.{extra[0]}" if path else extra[0]
    if error.validator == "required" and error.message.startswith("'"):
        missing = error.message.split("'")[1]
        return f"{path}.{missing}" if path else missing
    return path or "input"


class AppSpec(ModelSpec):
    """A deployed app in the router's catalog: a model with task "app" and its endpoints."""

    version: int = 0
    endpoints: list[dict[str, Any]] = []
    _app: apps_pb2.App = PrivateAttr(default_factory=apps_pb2.App)
    _validators: dict[str, jsonschema.Draft202012Validator] = PrivateAttr(default_factory=dict)

    @property
    def app(self) -> apps_pb2.App:
        return self._app

    def endpoint(self, path: str) -> dict[str, Any]:
        for ep in self.endpoints:
            if ep["path"] == path:
                return ep
        paths = ", ".join(self.id + (e["path"] if e["path"] != "/" else "") for e in self.endpoints)
        raise NotFound(f"app '{self.id}' has no endpoint '{path}'; it serves {paths}")

    def check_input(self, path: str, data: dict[str, Any]) -> None:
        validator = self._validators.get(path)
        if validator is None:
            schema = _closed(self.endpoint(path)["input_schema"])
            validator = self._validators[path] = jsonschema.Draft202012Validator(schema)
        errors = list(validator.iter_errors(data))
        # An unknown field is usually a misspelt one: naming it beats "x is required".
        unknown = [e for e in errors if e.validator == "additionalProperties"]
        error = unknown[0] if unknown else jsonschema.exceptions.best_match(errors)
        if error is not None:
            raise InvalidArgument(error.message, field=_field_of(error))

    def to_proto(self, available: bool = True) -> router_pb2.Model:
        m = super().to_proto(available)
        m.ClearField("input_schema")
        root = next((e for e in self.endpoints if e["path"] == "/"), self.endpoints[0] if self.endpoints else None)
        if root is not None:
            m.input_schema.update(root["input_schema"])
        m.endpoints.extend(self._app.endpoints)
        return m


def spec_of(app: apps_pb2.App) -> AppSpec:
    m = machine(app.machine_type) or MACHINES["CPU"]
    spec = AppSpec(
        id=app.id, task=APP_TASK, service=APP_SERVICE, description=app.description,
        weights=f"app:v{app.version}", machine_type=m.name, num_gpus=app.num_gpus,
        gpu_required=m.gpu_required, gpu_classes=[m.gpu_class] if m.gpu_class else [],
        prices=[PriceSpec(unit=m.unit, unit_price=m.price_per_second, currency=m.currency)],
        version=app.version,
        endpoints=[{"path": e.path, "input_schema": jsonpb.struct_to_dict(e.input_schema),
                    "output_schema": jsonpb.struct_to_dict(e.output_schema), "streaming": e.streaming}
                   for e in app.endpoints])
    spec._app.CopyFrom(app)
    return spec


def app_request(spec: ModelSpec, model_id: str, data: dict[str, Any] | struct_pb2.Struct) -> apps_pb2.InvokeRequest:
    """The worker request for a JSON call of an app endpoint: the body is the endpoint's own
    input, checked against the schema the app exported."""
    payload = jsonpb.struct_to_dict(data) if isinstance(data, struct_pb2.Struct) else (data or {})
    if not isinstance(payload, dict):
        raise InvalidArgument("the input must be a JSON object", field="input")
    payload = jsonpb.plain_json(payload)
    request = apps_pb2.InvokeRequest(model_id=model_id)
    if isinstance(spec, AppSpec):
        path = endpoint_path(spec.id, model_id)
        spec.check_input(path, payload)
        request.version = spec.version
    try:
        request.input.update(payload)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"unsupported JSON value: {exc}", field="input") from None
    return request


def stored_input(request: apps_pb2.InvokeRequest) -> dict[str, Any]:
    """What a queued app job keeps as its input: the body as sent (app_request rebuilds it)."""
    return jsonpb.plain_json(jsonpb.struct_to_dict(request.input))
