"""Checks compose files: the Compose Specification's JSON schema, then the mesh's rules.

The schema is the one the check-jsonschema package vendors from the compose-spec project.
Files are loaded with PyYAML, which resolves anchors and `<<` merge keys as Compose does;
`${VAR}` interpolation is left as text (the schema accepts it wherever a string goes).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from mesh_facts import (
    CONTROL_PLANE_SECRETS,
    GPU_WORKERS,
    HEALTH_PORT,
    MIN_ROUTER_REPLICAS,
    MTLS_SERVERS,
    REQUIRED_ENV,
    SERVICE_PORTS,
    TLS_DIR,
    WORKERS,
    argv_problem,
    as_int,
    is_genmesh,
    known_settings,
    service_module,
    tls_files,
)

Document = dict[str, Any]


def load_compose(path: Path) -> Document:
    return yaml.safe_load(path.read_text())


def compose_schema() -> Document:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def compose_schema_problems(document: Document, source: str) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    # Each error's most specific cause: a bad depends_on condition reads as "not one of [...]",
    # not as "not valid under any of the given schemas" of the enclosing oneOf.
    errors = [jsonschema.exceptions.best_match([e]) for e in validator.iter_errors(document)]
    errors.sort(key=lambda e: [str(p) for p in e.absolute_path])
    return [
        f"{source}: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors
    ]


def _environment(service: Document) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _argv(service: Document) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def compose_problems(document: Document, source: str = "compose.yaml") -> list[str]:
    """The single-host compose file: every service, one image, sound start-up ordering."""
    problems = compose_schema_problems(document, source)
    services: dict[str, Document] = document.get("services") or {}
    volumes = set(document.get("volumes") or {})
    images: dict[str, list[str]] = {}
    modules = set()
    for name, service in services.items():
        where = f"{source}: service {name}"
        argv = _argv(service)
        if is_genmesh(argv):
            images.setdefault(str(service.get("image")), []).append(name)
            if service.get("entrypoint"):
                problems.append(f"{where}: overrides the image's tini entrypoint")
            if (problem := argv_problem(argv)) is not None:
                problems.append(f"{where}: {problem}")
            module = service_module(argv)
            if module in SERVICE_PORTS:
                modules.add(module)
                problems += _service_problems(where, name, module, service)
        if str(service.get("restart", "no")) != "no" and "healthcheck" not in service:
            problems.append(f"{where}: long-running service without a healthcheck")
        problems += _dependency_problems(where, service, services)
        for mount in service.get("volumes") or []:
            volume = mount.split(":")[0] if isinstance(mount, str) else mount.get("source", "")
            is_path = volume.startswith((".", "/", "~", "$"))
            if volume and not is_path and volume not in volumes:
                problems.append(f"{where}: named volume {volume!r} is not declared under volumes")
    if len(images) > 1:
        problems.append(f"{source}: genmesh services use {len(images)} images, not one: {images}")
    for module in sorted(set(SERVICE_PORTS) - modules):
        problems.append(f"{source}: no service runs genmesh.services.{module}")
    return problems


def _dependency_problems(where: str, service: Document, services: dict[str, Document]) -> list[str]:
    problems = []
    depends = service.get("depends_on") or {}
    pairs = depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)
    for target, options in pairs:
        other = services.get(target)
        condition = (options or {}).get("condition", "service_started")
        if other is None:
            problems.append(f"{where}: depends on missing service {target!r}")
        elif condition == "service_healthy" and "healthcheck" not in other:
            problems.append(
                f"{where}: waits for {target} to be healthy, but {target} has no healthcheck"
            )
        elif (
            condition == "service_completed_successfully"
            and str(other.get("restart", "no")) != "no"
        ):
            problems.append(f"{where}: waits for {target} to complete, but {target} restarts")
    return problems


def _service_problems(where: str, name: str, module: str, service: Document) -> list[str]:
    """genmesh's rules for one of its services: name, port, real and required settings, no
    control-plane secrets in a worker, mesh TLS files from the shared certificate volume, an
    unprivileged read-only container, and a healthcheck where it answers without a certificate."""
    problems = []
    port = SERVICE_PORTS[module]
    env = _environment(service)
    if name != module:
        problems.append(f"{where}: runs genmesh.services.{module}; name the service {module!r}")
    if env.get("GENMESH_PORT") != str(port):
        problems.append(f"{where}: GENMESH_PORT must be {port}")
    known = known_settings()
    for key in sorted(k for k in env if k.startswith("GENMESH_") and k not in known):
        problems.append(f"{where}: unknown setting {key}")
    for key in sorted(REQUIRED_ENV[module] - set(env)):
        problems.append(f"{where}: {key} is not set")
    if module in WORKERS:
        for key in sorted(CONTROL_PLANE_SECRETS & set(env)):
            problems.append(f"{where}: a worker must not be given {key}")
        if env.get("GENMESH_ADVERTISE_ADDR") != f"{name}:{port}":
            problems.append(f"{where}: GENMESH_ADVERTISE_ADDR must be {name}:{port}")
    for setting, key in tls_files(module).items():
        if env.get(setting) != f"{TLS_DIR}/{key}":
            problems.append(f"{where}: {setting} must be {TLS_DIR}/{key}")
    if not any(_mount_target(m) == TLS_DIR for m in service.get("volumes") or []):
        problems.append(f"{where}: does not mount the mesh certificates at {TLS_DIR}")
    user = str(service.get("user", "")).split(":")[0]
    if user in ("", "0", "root"):
        problems.append(f"{where}: set a non-root `user:`")
    if service.get("read_only") is not True:
        problems.append(f"{where}: set `read_only: true` (tmpfs and volumes for what it writes)")
    if "ALL" not in (service.get("cap_drop") or []):
        problems.append(f"{where}: drop every capability (`cap_drop: [ALL]`)")
    probe_port = HEALTH_PORT if module in MTLS_SERVERS else port
    test = " ".join(map(str, (service.get("healthcheck") or {}).get("test") or []))
    if f":{probe_port}" not in test:
        problems.append(f"{where}: healthcheck does not probe port {probe_port}")
    replicas = as_int((service.get("deploy") or {}).get("replicas", 1))
    if module == "router" and replicas is not None and replicas < MIN_ROUTER_REPLICAS:
        problems.append(f"{where}: the router needs at least {MIN_ROUTER_REPLICAS} replicas")
    return problems


def _mount_target(mount: str | Document) -> str:
    if isinstance(mount, str):
        parts = mount.split(":")
        return parts[1] if len(parts) > 1 else parts[0]
    return str(mount.get("target", ""))


def compose_gpu_override_problems(
    document: Document, source: str = "compose.gpu.yaml"
) -> list[str]:
    """The GPU override: one CUDA image for all, and a GPU for every GPU worker."""
    problems = compose_schema_problems(document, source)
    services = document.get("services") or {}
    images = {str(s.get("image")) for s in services.values()}
    if len(images) != 1:
        problems.append(
            f"{source}: the override must give every genmesh service one image, "
            f"got {sorted(images)}"
        )
    for name in sorted(GPU_WORKERS):
        service = services.get(name) or {}
        reservations = ((service.get("deploy") or {}).get("resources") or {}).get(
            "reservations"
        ) or {}
        if not any(
            "gpu" in (d.get("capabilities") or []) for d in reservations.get("devices") or []
        ):
            problems.append(f"{source}: service {name}: reserves no GPU device")
        if _environment(service).get("GENMESH_DEVICE") != "cuda":
            problems.append(f"{source}: service {name}: must set GENMESH_DEVICE=cuda")
    return problems
