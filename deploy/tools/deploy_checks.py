"""Checks genmesh's deployment files: rendered Kubernetes overlays, compose files, the Dockerfile.

Every check returns a list of problems, each naming the file or object and what is wrong; an
empty list means valid. Schemas first (kubernetes-validate for built-in kinds, our KEDA schema
for ScaledObjects, the Compose Specification for compose files), then what schemas cannot see:
the mesh's own rules (one image, known services, probes, ports, references, autoscaling,
network isolation, GPU placement).

    python deploy/tools/deploy_checks.py        # all checks, exit status 1 on any problem

CI runs the same checks through tests/unit/test_deploy_manifests.py.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator

import dockerfile
import jsonschema
import kubernetes_validate
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kustomize_lite  # noqa: E402  (a sibling script, not an installed package)

DEPLOY_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = DEPLOY_DIR.parent
KEDA_SCHEMA_PATH = DEPLOY_DIR / "schemas" / "keda-scaledobject.schema.json"

# The Kubernetes version the manifests are validated against: the oldest we support.
KUBERNETES_VERSION = "1.31.0"


@dataclass(frozen=True)
class Overlay:
    path: Path
    gpu: bool
    variant: str  # the Dockerfile VARIANT its image is built with


OVERLAYS = {
    "cpu": Overlay(DEPLOY_DIR / "k8s" / "overlays" / "cpu", gpu=False, variant="cpu"),
    "gpu": Overlay(DEPLOY_DIR / "k8s" / "overlays" / "gpu", gpu=True, variant="cuda"),
}
COMPOSE_FILE = DEPLOY_DIR / "compose.yaml"
COMPOSE_GPU_FILE = DEPLOY_DIR / "compose.gpu.yaml"
DOCKERFILE = DEPLOY_DIR / "Dockerfile"

# ------------------------------------------------------------------ facts about the mesh

# Every service is `python -m genmesh.services.<name>`, listening on this port.
SERVICE_PORTS = {
    "router": 50051, "billing": 50052, "edge": 8080,
    "echo": 50060, "imagegen": 50061, "videogen": 50062, "audio": 50063, "llm": 50064, "apps": 50065,
}
HTTP_SERVICES = {"edge"}
WORKERS = {"echo", "imagegen", "videogen", "audio", "llm", "apps"}
SCALE_TO_ZERO = {"imagegen", "videogen", "audio", "apps"}
GPU_WORKERS = {"imagegen", "videogen", "llm", "apps"}
METRICS_PORT = 9090
NATS_MONITOR_PORT = 8222
QUEUE_STREAM = "JOBS"
PRIORITIES = ("normal", "low")
MIN_ROUTER_REPLICAS = 2
# `genmesh <subcommand>` one-shots that may run from the image (the model cache).
CLI_COMMANDS = {("genmesh", "models", "build"), ("genmesh", "models", "pull")}

# The GENMESH_* variables the services read; anything else is a typo.
GENMESH_ENV = frozenset({
    "GENMESH_NATS_URL", "GENMESH_DATABASE_URL", "GENMESH_S3_BUCKET", "GENMESH_S3_ENDPOINT_URL",
    "GENMESH_S3_REGION", "GENMESH_S3_ACCESS_KEY_ID", "GENMESH_S3_SECRET_ACCESS_KEY",
    "GENMESH_API_KEY", "GENMESH_SIGNING_SECRET", "GENMESH_HOST", "GENMESH_PORT",
    "GENMESH_ROUTER_ADDR", "GENMESH_BILLING_ADDR", "GENMESH_PUBLIC_URL", "GENMESH_DATA_DIR",
    "GENMESH_MODELS_DIR", "GENMESH_DEVICE", "GENMESH_ZONE", "GENMESH_WORKER_CAPACITY",
    "GENMESH_LOG_LEVEL", "GENMESH_METRICS_PORT", "GENMESH_ADVERTISE_ADDR",
})
# What every long-running genmesh container must be given.
REQUIRED_ENV = frozenset({
    "GENMESH_NATS_URL", "GENMESH_DATABASE_URL", "GENMESH_HOST", "GENMESH_PORT",
    "GENMESH_ROUTER_ADDR", "GENMESH_BILLING_ADDR", "GENMESH_METRICS_PORT", "GENMESH_MODELS_DIR",
    "GENMESH_S3_BUCKET", "GENMESH_S3_ACCESS_KEY_ID", "GENMESH_S3_SECRET_ACCESS_KEY",
    "GENMESH_API_KEY", "GENMESH_SIGNING_SECRET",
})
WORKER_ENV = frozenset({"GENMESH_ADVERTISE_ADDR"})

PART_OF_LABEL = ("app.kubernetes.io/part-of", "genmesh")
# Kubernetes' resource.Quantity syntax; the OpenAPI schemas only say "string or number".
QUANTITY = re.compile(
    r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


# ------------------------------------------------------------------ rendering and schemas


def render_overlay(name: str) -> list[dict[str, Any]]:
    return kustomize_lite.render(OVERLAYS[name].path)


def schema_problems(objects: Iterable[dict[str, Any]], version: str = KUBERNETES_VERSION) -> list[str]:
    """Strict kubernetes-validate for built-in kinds; the KEDA schema for ScaledObjects."""
    keda = _keda_validator()
    problems = []
    for obj in objects:
        where = _where(obj)
        if obj.get("kind") == "ScaledObject":
            problems += [f"{where}: {_json_path(e.absolute_path)}: {e.message}" for e in keda.iter_errors(obj)]
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{where}: no schema for {obj.get('apiVersion')} {obj.get('kind')} in Kubernetes {version}")
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{where}: {_json_path(error.path)}: {error.message}")
    return problems


def _keda_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(KEDA_SCHEMA_PATH.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


# ------------------------------------------------------------------ the mesh on Kubernetes


def mesh_problems(objects: list[dict[str, Any]], *, gpu: bool, variant: str) -> list[str]:
    """What a schema cannot see: the rules genmesh's manifests must keep."""
    index = _Index(objects)
    problems: list[str] = []
    problems += _image_problems(index, variant)
    problems += _service_deployment_problems(index)
    problems += _reference_problems(index)
    problems += _quantity_problems(index)
    problems += _selector_problems(index)
    problems += _disruption_budget_problems(index)
    problems += _autoscaling_problems(index)
    problems += _network_policy_problems(index)
    problems += _gpu_problems(index, gpu)
    return problems


class _Index:
    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") in kinds]

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((o for o in self.of_kind(kind) if o["metadata"]["name"] == name), None)

    def workloads(self) -> list[dict[str, Any]]:
        return self.of_kind(*kustomize_lite.POD_SPEC_PATHS)

    def deployments_by_service(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for deployment in self.of_kind("Deployment"):
            service = _deployment_service(deployment)
            if service:
                grouped.setdefault(service, []).append(deployment)
        return grouped


def _as_int(value: Any) -> int | None:
    """An integer field's value, or None when it is mistyped (the schema check reports that)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _where(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"


def _json_path(path: Iterable[Any]) -> str:
    return "/".join(str(p) for p in path) or "(root)"


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: Any = obj
    for key in kustomize_lite.POD_SPEC_PATHS.get(obj.get("kind", ""), ()):
        spec = (spec or {}).get(key)
    return spec or {}


def _pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    path = {"CronJob": ("spec", "jobTemplate", "spec", "template")}.get(obj["kind"], ("spec", "template"))
    node: Any = obj
    for key in path:
        node = (node or {}).get(key)
    return ((node or {}).get("metadata") or {}).get("labels") or {}


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _pod_spec(obj)
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def _argv(container: dict[str, Any]) -> list[str]:
    return [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]


def service_module(argv: list[str]) -> str | None:
    """`python -m genmesh.services.<name>` -> name (None for anything else)."""
    if len(argv) == 3 and argv[:2] == ["python", "-m"] and argv[2].startswith("genmesh.services."):
        return argv[2].removeprefix("genmesh.services.")
    return None


def _is_genmesh(argv: list[str]) -> bool:
    return service_module(argv) is not None or (bool(argv) and argv[0] == "genmesh")


def _argv_problem(argv: list[str]) -> str | None:
    module = service_module(argv)
    if module is not None:
        return None if module in SERVICE_PORTS else f"unknown service module genmesh.services.{module}"
    if tuple(argv) in CLI_COMMANDS:
        return None
    return f"runs {' '.join(argv)!r}, not `python -m genmesh.services.<name>` or a known `genmesh` command"


def _genmesh_container(deployment: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in _containers(deployment) if _is_genmesh(_argv(c))), None)


def _deployment_service(deployment: dict[str, Any]) -> str | None:
    container = _genmesh_container(deployment)
    return service_module(_argv(container)) if container else None


def _image_problems(index: _Index, variant: str) -> list[str]:
    problems = []
    images: dict[str, list[str]] = {}
    for workload in index.workloads():
        for container in _containers(workload):
            argv = _argv(container)
            if not _is_genmesh(argv):
                continue
            where = f"{_where(workload)} container {container.get('name')}"
            images.setdefault(container.get("image", ""), []).append(where)
            if container.get("command"):
                problems.append(f"{where}: sets `command`, replacing the image's tini entrypoint; use `args`")
            if (problem := _argv_problem(argv)) is not None:
                problems.append(f"{where}: {problem}")
    if len(images) > 1:
        listing = "; ".join(f"{image}: {', '.join(users)}" for image, users in sorted(images.items()))
        problems.append(f"genmesh containers use {len(images)} images, not one: {listing}")
    for image in images:
        tag = kustomize_lite._split_image(image)[1] or ""
        if variant not in tag:
            problems.append(f"image {image!r}: tag does not name the {variant!r} build variant")
    return problems


def _env_list(container: dict[str, Any]) -> list[dict[str, Any]]:
    return list(container.get("env") or [])


def _env_value(container: dict[str, Any], name: str) -> str | None:
    for env in _env_list(container):
        if env.get("name") == name:
            return env.get("value")
    return None


def _effective_env(index: _Index, container: dict[str, Any]) -> set[str]:
    names = {e["name"] for e in _env_list(container)}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef") or source.get("secretRef") or {}
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        obj = index.get(kind, ref.get("name", ""))
        if obj:
            names |= {source.get("prefix", "") + key for key in (obj.get("data") or {})}
    return names


def _service_deployment_problems(index: _Index) -> list[str]:
    problems = []
    by_service = index.deployments_by_service()
    for service in sorted(set(SERVICE_PORTS) - set(by_service)):
        problems.append(f"no Deployment runs genmesh.services.{service}")
    for deployment in index.of_kind("Deployment"):
        where = _where(deployment)
        container = _genmesh_container(deployment)
        if container is None:
            problems.append(f"{where}: runs no genmesh service")
            continue
        service = service_module(_argv(container))
        if service not in SERVICE_PORTS:
            continue  # reported by _image_problems
        port = SERVICE_PORTS[service]
        port_name = "http" if service in HTTP_SERVICES else "grpc"
        ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
        if ports.get(port_name) != port:
            problems.append(f"{where}: needs container port {port_name!r} = {port} for {service}")
        if ports.get("metrics") != METRICS_PORT:
            problems.append(f"{where}: needs container port 'metrics' = {METRICS_PORT}")
        if _env_value(container, "GENMESH_PORT") != str(port):
            problems.append(f"{where}: GENMESH_PORT must be {port}")
        problems += _probe_problems(where, container, service, port_name, port)
        problems += _env_problems(index, where, container, service, port)
        requests = (container.get("resources") or {}).get("requests") or {}
        if not {"cpu", "memory"} <= set(requests):
            problems.append(f"{where}: set cpu and memory requests so the scheduler can place it")
        security = _pod_spec(deployment).get("securityContext") or {}
        if security.get("runAsNonRoot") is not True:
            problems.append(f"{where}: pod securityContext.runAsNonRoot must be true")
        replicas = _as_int(deployment["spec"].get("replicas", 1))
        if service == "router" and replicas is not None and replicas < MIN_ROUTER_REPLICAS:
            problems.append(f"{where}: the router needs at least {MIN_ROUTER_REPLICAS} replicas")
    for workload in index.of_kind("Deployment", "StatefulSet"):
        for container in _pod_spec(workload).get("containers", []):
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    problems.append(f"{_where(workload)} container {container.get('name')}: no {probe}")
    return problems


def _probe_problems(where: str, container: dict[str, Any], service: str, port_name: str, port: int) -> list[str]:
    problems = []
    for name in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(name)
        if probe is None:
            continue  # a missing readiness/liveness probe is reported for every workload
        if service in HTTP_SERVICES:
            http = probe.get("httpGet") or {}
            if http.get("path") != "/health" or http.get("port") not in (port_name, port):
                problems.append(f"{where}: {name} must GET /health on port {port_name}")
        elif (probe.get("grpc") or {}).get("port") != port:
            problems.append(f"{where}: {name} must be a gRPC health probe on port {port}")
    return problems


def _env_problems(index: _Index, where: str, container: dict[str, Any], service: str, port: int) -> list[str]:
    problems = []
    env = _effective_env(index, container)
    for name in sorted(n for n in env if n.startswith("GENMESH_") and n not in GENMESH_ENV):
        problems.append(f"{where}: unknown setting {name}")
    required = REQUIRED_ENV | (WORKER_ENV if service in WORKERS else frozenset())
    for name in sorted(required - env):
        problems.append(f"{where}: {name} is not set")
    if service in WORKERS:
        names = [e.get("name") for e in _env_list(container)]
        advertise = _env_value(container, "GENMESH_ADVERTISE_ADDR")
        if advertise != f"$(POD_IP):{port}":
            problems.append(f"{where}: GENMESH_ADVERTISE_ADDR must be $(POD_IP):{port}, got {advertise!r}")
        pod_ip = next((e for e in _env_list(container) if e.get("name") == "POD_IP"), None)
        field = (((pod_ip or {}).get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field != "status.podIP":
            problems.append(f"{where}: POD_IP must come from the downward API (status.podIP)")
        elif "GENMESH_ADVERTISE_ADDR" in names and names.index("POD_IP") > names.index("GENMESH_ADVERTISE_ADDR"):
            problems.append(f"{where}: POD_IP must be defined before GENMESH_ADVERTISE_ADDR to expand")
    return problems


def _reference_problems(index: _Index) -> list[str]:
    """Every ConfigMap, Secret, key and claim a pod refers to exists."""
    problems = []
    for obj in index.of_kind("ConfigMap", "Secret"):
        for key in obj.get("data") or {}:
            if key.startswith("GENMESH_") and key not in GENMESH_ENV:
                problems.append(f"{_where(obj)}: unknown setting {key}")
    claims = {o["metadata"]["name"] for o in index.of_kind("PersistentVolumeClaim")}
    for workload in index.workloads():
        where = _where(workload)
        spec = _pod_spec(workload)
        volume_names = {v.get("name") for v in spec.get("volumes") or []}
        volume_names |= {c["metadata"]["name"] for c in workload.get("spec", {}).get("volumeClaimTemplates") or []}

        def need(kind: str, name: str | None, key: str | None, optional: bool, what: str) -> None:
            obj = index.get(kind, name or "")
            if obj is None:
                if not optional:
                    problems.append(f"{where}: {what} refers to missing {kind} {name!r}")
            elif key is not None and key not in (obj.get("data") or {}):
                problems.append(f"{where}: {what} refers to missing key {key!r} of {kind} {name!r}")

        for container in _containers(workload) + list(spec.get("ephemeralContainers") or []):
            cname = container.get("name")
            for source in container.get("envFrom") or []:
                for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if field in source:
                        ref = source[field]
                        need(kind, ref.get("name"), None, ref.get("optional", False), f"container {cname} envFrom")
            for env in container.get("env") or []:
                value_from = env.get("valueFrom") or {}
                for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    if field in value_from:
                        ref = value_from[field]
                        need(kind, ref.get("name"), ref.get("key"), ref.get("optional", False),
                             f"container {cname} env {env.get('name')}")
            for mount in container.get("volumeMounts") or []:
                if mount.get("name") not in volume_names:
                    problems.append(f"{where}: container {cname} mounts undeclared volume {mount.get('name')!r}")
        for volume in spec.get("volumes") or []:
            if "configMap" in volume:
                ref = volume["configMap"]
                for item in ref.get("items") or [None]:
                    need("ConfigMap", ref.get("name"), item and item.get("key"), ref.get("optional", False),
                         f"volume {volume['name']}")
            if "secret" in volume:
                ref = volume["secret"]
                for item in ref.get("items") or [None]:
                    need("Secret", ref.get("secretName"), item and item.get("key"), ref.get("optional", False),
                         f"volume {volume['name']}")
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim is not None and claim not in claims:
                problems.append(f"{where}: volume {volume['name']} claims missing PersistentVolumeClaim {claim!r}")
    return problems


def _quantity_problems(index: _Index) -> list[str]:
    problems = []
    for workload in index.workloads():
        for container in _containers(workload):
            for section, amounts in (container.get("resources") or {}).items():
                for resource, amount in (amounts or {}).items():
                    if not QUANTITY.match(str(amount)):
                        problems.append(f"{_where(workload)} container {container.get('name')}: "
                                        f"resources.{section}.{resource} {amount!r} is not a quantity")
    return problems


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _selector_problems(index: _Index) -> list[str]:
    problems = []
    controllers = index.of_kind("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")
    for controller in controllers:
        selector = (controller["spec"].get("selector") or {}).get("matchLabels") or {}
        if not _matches(selector, _pod_labels(controller)):
            problems.append(f"{_where(controller)}: selector {selector} does not match its own pod template")
        for other in controllers:
            if other is not controller and _matches(selector, _pod_labels(other)):
                problems.append(f"{_where(controller)}: selector {selector} also selects the pods of {_where(other)}")
    for service in index.of_kind("Service"):
        selector = service["spec"].get("selector") or {}
        targets = [w for w in index.workloads() if _matches(selector, _pod_labels(w))]
        if not targets:
            problems.append(f"{_where(service)}: selector {selector} matches no pod template")
            continue
        for port in service["spec"].get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            exposed = [
                p for w in targets for c in _containers(w) for p in c.get("ports") or []
                if target in (p.get("name"), p.get("containerPort"))
            ]
            if not exposed:
                problems.append(f"{_where(service)}: targetPort {target!r} is not a port of the pods it selects")
    return problems


def _disruption_budget_problems(index: _Index) -> list[str]:
    problems = []
    budgets = index.of_kind("PodDisruptionBudget")
    for budget in budgets:
        selector = (budget["spec"].get("selector") or {}).get("matchLabels") or {}
        if not any(_matches(selector, _pod_labels(w)) for w in index.of_kind("Deployment", "StatefulSet")):
            problems.append(f"{_where(budget)}: selects no pods")
    for deployment in index.of_kind("Deployment"):
        labels = _pod_labels(deployment)
        covering = [b for b in budgets if _matches((b["spec"].get("selector") or {}).get("matchLabels") or {}, labels)]
        if len(covering) != 1:
            problems.append(f"{_where(deployment)}: covered by {len(covering)} PodDisruptionBudgets, needs exactly 1")
    return problems


def _autoscaling_problems(index: _Index) -> list[str]:
    problems = []
    nats_services = {
        s["metadata"]["name"]: s for s in index.of_kind("Service")
        if any(p.get("port") == NATS_MONITOR_PORT for p in s["spec"].get("ports") or [])
    }
    scaled: dict[str, list[dict[str, Any]]] = {}
    for scaled_object in index.of_kind("ScaledObject"):
        where = _where(scaled_object)
        spec = scaled_object.get("spec") or {}
        target_name = (spec.get("scaleTargetRef") or {}).get("name", "")
        target_kind = (spec.get("scaleTargetRef") or {}).get("kind", "Deployment")
        target = index.get(target_kind, target_name)
        if target is None:
            problems.append(f"{where}: scales missing {target_kind} {target_name!r}")
            continue
        scaled.setdefault(target_name, []).append(scaled_object)
        service = _deployment_service(target)
        if service not in WORKERS:
            problems.append(f"{where}: scales {_where(target)}, which is not a queue-fed worker")
            continue
        if "replicas" in target["spec"]:
            problems.append(f"{_where(target)}: sets spec.replicas, which fights {where}; leave it to KEDA")
        low, high = _as_int(spec.get("minReplicaCount", 0)), _as_int(spec.get("maxReplicaCount", 100))
        if low is not None and high is not None and low > high:
            problems.append(f"{where}: minReplicaCount {low} > maxReplicaCount {high}")
        if service not in SCALE_TO_ZERO and target_name == service and low is not None and low < 1:
            problems.append(f"{where}: {service} must keep at least one replica (minReplicaCount >= 1)")
        consumers = set()
        for trigger in spec.get("triggers") or []:
            meta = trigger.get("metadata") or {}
            if trigger.get("type") != "nats-jetstream":
                problems.append(f"{where}: trigger {trigger.get('type')!r}; workers scale on nats-jetstream lag")
                continue
            if meta.get("stream") != QUEUE_STREAM:
                problems.append(f"{where}: stream {meta.get('stream')!r}, the job queue is {QUEUE_STREAM}")
            consumers.add(meta.get("consumer"))
            host, _, port = meta.get("natsServerMonitoringEndpoint", "").partition(":")
            name, _, rest = host.partition(".")
            namespace = rest.split(".")[0] if rest else None
            if port != str(NATS_MONITOR_PORT) or name not in nats_services:
                problems.append(f"{where}: natsServerMonitoringEndpoint {host}:{port} is not a Service "
                                f"exposing NATS monitoring on {NATS_MONITOR_PORT}")
            elif namespace and namespace != scaled_object["metadata"].get("namespace"):
                problems.append(f"{where}: natsServerMonitoringEndpoint names namespace {namespace!r}, "
                                f"the mesh is in {scaled_object['metadata'].get('namespace')!r}")
        wanted = {f"queue-{service}-{priority}" for priority in PRIORITIES}
        if consumers != wanted:
            problems.append(f"{where}: consumers {sorted(c for c in consumers if c)}, expected {sorted(wanted)}")
    for service, deployments in index.deployments_by_service().items():
        if service not in WORKERS:
            continue
        for deployment in deployments:
            count = len(scaled.get(deployment["metadata"]["name"], []))
            if count != 1:
                problems.append(f"{_where(deployment)}: scaled by {count} ScaledObjects, needs exactly 1")
    return problems


def _network_policy_problems(index: _Index) -> list[str]:
    problems = []
    policies = index.of_kind("NetworkPolicy")
    if not any(
        p["spec"].get("podSelector") == {} and "Ingress" in (p["spec"].get("policyTypes") or [])
        and not p["spec"].get("ingress")
        for p in policies
    ):
        problems.append("no default-deny ingress NetworkPolicy (podSelector {}, policyTypes [Ingress], no rules)")
    edge_reachable = False
    for policy in policies:
        where = _where(policy)
        selector = (policy["spec"].get("podSelector") or {}).get("matchLabels") or {}
        selects_only_edge = selector.get("app.kubernetes.io/name") == "edge"
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from") or []
            ports = {p.get("port") for p in rule.get("ports") or []}
            from_anywhere = not peers or any("ipBlock" in peer for peer in peers)
            from_namespaces = any("namespaceSelector" in peer for peer in peers)
            if from_anywhere:
                if not selects_only_edge:
                    problems.append(f"{where}: admits traffic from outside the mesh to pods other than the edge")
                elif ports and ports <= {SERVICE_PORTS["edge"], "http"}:
                    edge_reachable = True
                else:
                    problems.append(f"{where}: opens edge ports {sorted(map(str, ports))} beyond its HTTP port")
            elif from_namespaces and not (ports and ports <= {NATS_MONITOR_PORT, METRICS_PORT}):
                problems.append(f"{where}: admits other namespaces on ports {sorted(map(str, ports)) or 'all'}; "
                                f"only NATS monitoring ({NATS_MONITOR_PORT}) and metrics ({METRICS_PORT}) may be")
    if not edge_reachable:
        problems.append("no NetworkPolicy admits outside traffic to the edge's HTTP port")
    for workload in index.workloads():
        key, value = PART_OF_LABEL
        if _pod_labels(workload).get(key) != value:
            problems.append(f"{_where(workload)}: pods lack {key}={value}, so the mesh's policies shut them out")
    return problems


def _gpu_problems(index: _Index, gpu: bool) -> list[str]:
    problems = []
    for deployment in index.of_kind("Deployment"):
        where = _where(deployment)
        container = _genmesh_container(deployment) or {}
        resources_ = container.get("resources") or {}
        limit = (resources_.get("limits") or {}).get(GPU_RESOURCE)
        request = (resources_.get("requests") or {}).get(GPU_RESOURCE)
        service = _deployment_service(deployment)
        if not (gpu and service in GPU_WORKERS):
            if limit or request:
                problems.append(f"{where}: requests {GPU_RESOURCE} but is not a GPU worker of a GPU overlay")
            continue
        spec = _pod_spec(deployment)
        if (_as_int(limit) or 0) < 1:
            problems.append(f"{where}: GPU worker without a {GPU_RESOURCE} limit")
        if request is not None and request != limit:
            problems.append(f"{where}: {GPU_RESOURCE} request {request} differs from its limit {limit}")
        if not (spec.get("nodeSelector") or {}).get(GPU_PRODUCT_LABEL):
            problems.append(f"{where}: GPU worker without a {GPU_PRODUCT_LABEL} nodeSelector (its GPU class)")
        if not any(t.get("key") == GPU_RESOURCE for t in spec.get("tolerations") or []):
            problems.append(f"{where}: GPU worker does not tolerate the {GPU_RESOURCE} node taint")
        if _env_value(container, "GENMESH_DEVICE") != "cuda":
            problems.append(f"{where}: GPU worker must set GENMESH_DEVICE=cuda")
    if not gpu:
        config = index.get("ConfigMap", _configmap_name(index))
        if config is None or (config.get("data") or {}).get("GENMESH_DEVICE") != "cpu":
            problems.append("CPU overlay: the shared ConfigMap must set GENMESH_DEVICE=cpu")
    return problems


def _configmap_name(index: _Index) -> str:
    """The ConfigMap every genmesh container loads with envFrom."""
    for deployment in index.of_kind("Deployment"):
        for source in (_genmesh_container(deployment) or {}).get("envFrom") or []:
            if "configMapRef" in source:
                return source["configMapRef"]["name"]
    return ""


# ------------------------------------------------------------------ compose


def compose_schema() -> dict[str, Any]:
    """The Compose Specification's JSON schema, as vendored by the check-jsonschema package."""
    text = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    return json.loads(text)


def compose_schema_problems(document: dict[str, Any], source: str) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    # Each error's most specific cause: a bad depends_on condition reads as "not one of
    # [...]", not as "not valid under any of the given schemas" of the enclosing oneOf.
    errors = [jsonschema.exceptions.best_match([e]) for e in validator.iter_errors(document)]
    errors.sort(key=lambda e: list(map(str, e.absolute_path)))
    return [f"{source}: {_json_path(e.absolute_path)}: {e.message}" for e in errors]


def load_compose(path: Path) -> dict[str, Any]:
    # PyYAML resolves anchors and `<<` merge keys the way Compose does.
    return yaml.safe_load(path.read_text())


def _compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _compose_argv(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def compose_problems(document: dict[str, Any], source: str = "compose.yaml") -> list[str]:
    problems = compose_schema_problems(document, source)
    services: dict[str, dict[str, Any]] = document.get("services") or {}
    volumes = set(document.get("volumes") or {})
    images = {}
    seen_modules = set()
    for name, service in services.items():
        where = f"{source}: service {name}"
        argv = _compose_argv(service)
        if _is_genmesh(argv):
            images.setdefault(str(service.get("image")), []).append(name)
            if service.get("entrypoint"):
                problems.append(f"{where}: overrides the image's tini entrypoint")
            if (problem := _argv_problem(argv)) is not None:
                problems.append(f"{where}: {problem}")
            module = service_module(argv)
            if module in SERVICE_PORTS:
                seen_modules.add(module)
                problems += _compose_service_problems(where, name, module, service)
        restart = str(service.get("restart", "no"))
        if restart != "no" and "healthcheck" not in service:
            problems.append(f"{where}: long-running service without a healthcheck")
        depends = service.get("depends_on") or {}
        for target, condition in (depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)):
            other = services.get(target)
            condition = (condition or {}).get("condition", "service_started")
            if other is None:
                problems.append(f"{where}: depends on missing service {target!r}")
            elif condition == "service_healthy" and "healthcheck" not in other:
                problems.append(f"{where}: waits for {target} to be healthy, but {target} has no healthcheck")
            elif condition == "service_completed_successfully" and str(other.get("restart", "no")) != "no":
                problems.append(f"{where}: waits for {target} to complete, but {target} restarts")
        for mount in service.get("volumes") or []:
            source_name = mount.split(":")[0] if isinstance(mount, str) else mount.get("source", "")
            if source_name and not source_name.startswith((".", "/", "~", "$")) and source_name not in volumes:
                problems.append(f"{where}: named volume {source_name!r} is not declared under volumes")
    if len(images) > 1:
        problems.append(f"{source}: genmesh services use {len(images)} images, not one: {images}")
    for module in sorted(set(SERVICE_PORTS) - seen_modules):
        problems.append(f"{source}: no service runs genmesh.services.{module}")
    return problems


def _compose_service_problems(where: str, name: str, module: str, service: dict[str, Any]) -> list[str]:
    problems = []
    port = SERVICE_PORTS[module]
    env = _compose_env(service)
    if name != module:
        problems.append(f"{where}: runs genmesh.services.{module}; name the service {module!r}")
    if env.get("GENMESH_PORT") != str(port):
        problems.append(f"{where}: GENMESH_PORT must be {port}")
    for key in sorted(k for k in env if k.startswith("GENMESH_") and k not in GENMESH_ENV):
        problems.append(f"{where}: unknown setting {key}")
    required = REQUIRED_ENV | (WORKER_ENV if module in WORKERS else frozenset())
    for key in sorted(required - set(env)):
        problems.append(f"{where}: {key} is not set")
    if module in WORKERS and env.get("GENMESH_ADVERTISE_ADDR") != f"{name}:{port}":
        problems.append(f"{where}: GENMESH_ADVERTISE_ADDR must be {name}:{port}")
    test = " ".join(map(str, (service.get("healthcheck") or {}).get("test") or []))
    if f":{port}" not in test:
        problems.append(f"{where}: healthcheck does not probe port {port}")
    replicas = _as_int((service.get("deploy") or {}).get("replicas", 1))
    if module == "router" and replicas is not None and replicas < MIN_ROUTER_REPLICAS:
        problems.append(f"{where}: the router needs at least {MIN_ROUTER_REPLICAS} replicas")
    return problems


def compose_gpu_override_problems(document: dict[str, Any], source: str = "compose.gpu.yaml") -> list[str]:
    problems = compose_schema_problems(document, source)
    services = document.get("services") or {}
    images = {str(s.get("image")) for s in services.values()}
    if len(images) != 1:
        problems.append(f"{source}: the override must give every genmesh service one image, got {sorted(images)}")
    for name in sorted(GPU_WORKERS):
        service = services.get(name) or {}
        devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
        if not any("gpu" in (d.get("capabilities") or []) for d in devices):
            problems.append(f"{source}: service {name}: reserves no GPU device")
        if _compose_env(service).get("GENMESH_DEVICE") != "cuda":
            problems.append(f"{source}: service {name}: must set GENMESH_DEVICE=cuda")
    return problems


# ------------------------------------------------------------------ Dockerfile

VARIANTS = ("cpu", "cuda")
# The BuildKit Dockerfile frontend's instructions; its parser accepts any word, the build does not.
INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}


def dockerfile_problems(text: str, source: str = "Dockerfile") -> list[str]:
    try:
        commands = dockerfile.parse_string(text)
    except dockerfile.GoParseError as error:
        return [f"{source}: does not parse: {error}"]
    problems = []
    for command in commands:
        if command.cmd not in INSTRUCTIONS:
            problems.append(f"{source}: line {command.start_line}: unknown instruction {command.cmd}")
        elif not command.value and command.cmd not in ("CMD", "ENTRYPOINT"):
            problems.append(f"{source}: line {command.start_line}: {command.cmd} without arguments")
    if problems:
        return problems
    stages: list[tuple[str, list[dockerfile.Command]]] = []
    global_args: dict[str, str] = {}
    for command in commands:
        if command.cmd == "FROM":
            value = list(command.value)
            alias = value[2] if len(value) == 3 and value[1].upper() == "AS" else ""
            stages.append((alias, [command]))
        elif stages:
            stages[-1][1].append(command)
        elif command.cmd == "ARG":
            name, _, default = command.value[0].partition("=")
            global_args[name] = default.strip('"')
    if global_args.get("VARIANT") not in VARIANTS:
        problems.append(f"{source}: needs `ARG VARIANT=cpu` (one of {VARIANTS}) before the first FROM")
    names = [alias for alias, _ in stages]
    for alias, body in stages:
        base = body[0].value[0]
        for variant in VARIANTS:
            resolved = base.replace("${VARIANT}", variant).replace("$VARIANT", variant)
            if "$" not in resolved and resolved not in names and "/" not in resolved and ":" not in resolved:
                problems.append(f"{source}: stage {alias or '?'} builds FROM {resolved!r}, no such stage "
                                f"(VARIANT={variant})")
        for command in body:
            source_flag = next((f for f in command.flags if f.startswith("--from=")), None)
            if command.cmd == "COPY" and source_flag and source_flag.removeprefix("--from=") not in names:
                problems.append(f"{source}: line {command.start_line}: {source_flag} names no stage")
            if command.cmd == "COPY" and not source_flag:
                for src in command.value[:-1]:
                    if not (REPO_ROOT / src).exists():
                        problems.append(f"{source}: line {command.start_line}: COPY source {src!r} is not in the build context")
    if not stages:
        return problems + [f"{source}: no FROM"]
    final = {c.cmd: c for c in stages[-1][1]}  # the last instruction of each kind wins
    user = final.get("USER")
    if user is None or user.value[0].split(":")[0] in ("root", "0"):
        problems.append(f"{source}: the final stage must run as a non-root USER")
    cmd = final.get("CMD")
    if cmd is None or not cmd.json or service_module(list(cmd.value)) not in SERVICE_PORTS:
        problems.append(f"{source}: CMD must be the JSON form of `python -m genmesh.services.<known service>`")
    entrypoint = final.get("ENTRYPOINT")
    if entrypoint is None or not entrypoint.json or "tini" not in entrypoint.value[0]:
        problems.append(f"{source}: ENTRYPOINT must be tini (JSON form), so signals reach the service")
    exposed = {int(p.split("/")[0]) for c in stages[-1][1] if c.cmd == "EXPOSE" for p in c.value}
    missing = sorted((set(SERVICE_PORTS.values()) | {METRICS_PORT}) - exposed)
    if missing:
        problems.append(f"{source}: EXPOSE misses ports {missing}")
    env = {}
    for command in stages[-1][1]:
        if command.cmd == "ENV":
            values = list(command.value)
            env.update(zip(values[::2], values[1::2]))
    for key, value in (("GENMESH_HOST", "0.0.0.0"), ("GENMESH_METRICS_PORT", str(METRICS_PORT))):
        if env.get(key) != value:
            problems.append(f"{source}: the final stage must set ENV {key}={value}")
    return problems


# ------------------------------------------------------------------ everything


def all_problems() -> dict[str, list[str]]:
    report: dict[str, list[str]] = {}
    for name, overlay in OVERLAYS.items():
        objects = render_overlay(name)
        report[f"k8s overlay {name}"] = schema_problems(objects) + mesh_problems(
            objects, gpu=overlay.gpu, variant=overlay.variant)
    report["compose.yaml"] = compose_problems(load_compose(COMPOSE_FILE))
    report["compose.gpu.yaml"] = compose_gpu_override_problems(load_compose(COMPOSE_GPU_FILE))
    report["Dockerfile"] = dockerfile_problems(DOCKERFILE.read_text())
    return report


def main() -> int:
    report = all_problems()
    for subject, problems in report.items():
        print(f"{subject}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            print(f"  - {problem}")
    return 1 if any(report.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
