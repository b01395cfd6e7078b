"""Checks rendered Kubernetes objects: schemas, then the rules genmesh's manifests must keep.

Schemas: kubernetes-validate (strict, pinned Kubernetes version) for built-in kinds and
deploy/schemas/keda-scaledobject.schema.json for KEDA ScaledObjects. Rules: one image, known
services, ports and settings, probes, references, selectors, disruption budgets, autoscaling
on the job queue, network isolation and GPU placement. Each check returns a list of problems.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import kustomize_lite
from mesh_facts import (
    GENMESH_ENV,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    GPU_WORKERS,
    HTTP_SERVICES,
    METRICS_PORT,
    MIN_ROUTER_REPLICAS,
    NATS_MONITOR_PORT,
    PART_OF_LABEL,
    PRIORITIES,
    QUANTITY,
    QUEUE_STREAM,
    REQUIRED_ENV,
    SCALE_TO_ZERO,
    SERVICE_PORTS,
    WORKER_ENV,
    WORKERS,
    argv_problem,
    as_int,
    is_genmesh,
    service_module,
)

KEDA_SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "keda-scaledobject.schema.json"
# The Kubernetes version the manifests are validated against: the oldest we support.
KUBERNETES_VERSION = "1.31.0"

Object = dict[str, Any]


# ------------------------------------------------------------------ schemas


def schema_problems(objects: Iterable[Object], version: str = KUBERNETES_VERSION) -> list[str]:
    """Strict kubernetes-validate for built-in kinds; the KEDA schema for ScaledObjects."""
    keda = _keda_validator()
    problems = []
    for obj in objects:
        where = _where(obj)
        if obj.get("kind") == "ScaledObject":
            problems += [
                f"{where}: {_json_path(e.absolute_path)}: {e.message}"
                for e in keda.iter_errors(obj)
            ]
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(
                f"{where}: no schema for {obj.get('apiVersion')} {obj.get('kind')} "
                f"in Kubernetes {version}"
            )
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{where}: {_json_path(error.path)}: {error.message}")
    return problems


def _keda_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(KEDA_SCHEMA_PATH.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


# ------------------------------------------------------------------ the mesh's rules


def mesh_problems(objects: list[Object], *, gpu: bool, variant: str) -> list[str]:
    """What a schema cannot see. `gpu`: a GPU overlay; `variant`: its image's build variant."""
    index = _Index(objects)
    return [
        *_image_problems(index, variant),
        *_service_deployment_problems(index),
        *_reference_problems(index),
        *_quantity_problems(index),
        *_selector_problems(index),
        *_disruption_budget_problems(index),
        *_autoscaling_problems(index),
        *_network_policy_problems(index),
        *_gpu_problems(index, gpu),
    ]


class _Index:
    def __init__(self, objects: list[Object]) -> None:
        self.objects = objects

    def of_kind(self, *kinds: str) -> list[Object]:
        return [o for o in self.objects if o.get("kind") in kinds]

    def get(self, kind: str, name: str) -> Object | None:
        return next((o for o in self.of_kind(kind) if o["metadata"]["name"] == name), None)

    def workloads(self) -> list[Object]:
        return self.of_kind(*kustomize_lite.POD_SPEC_PATHS)

    def deployments_by_service(self) -> dict[str, list[Object]]:
        grouped: dict[str, list[Object]] = {}
        for deployment in self.of_kind("Deployment"):
            service = _deployment_service(deployment)
            if service:
                grouped.setdefault(service, []).append(deployment)
        return grouped


def _where(obj: Object) -> str:
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"


def _json_path(path: Iterable[Any]) -> str:
    return "/".join(str(p) for p in path) or "(root)"


def _pod_spec(obj: Object) -> Object:
    spec: Any = obj
    for key in kustomize_lite.POD_SPEC_PATHS.get(obj.get("kind", ""), ()):
        spec = (spec or {}).get(key)
    return spec or {}


def _pod_labels(obj: Object) -> dict[str, str]:
    node: Any = obj
    path = (
        ("spec", "jobTemplate", "spec", "template")
        if obj["kind"] == "CronJob"
        else ("spec", "template")
    )
    for key in path:
        node = (node or {}).get(key)
    return ((node or {}).get("metadata") or {}).get("labels") or {}


def _containers(obj: Object) -> list[Object]:
    spec = _pod_spec(obj)
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def _argv(container: Object) -> list[str]:
    return [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]


def _genmesh_container(deployment: Object) -> Object | None:
    return next((c for c in _containers(deployment) if is_genmesh(_argv(c))), None)


def _deployment_service(deployment: Object) -> str | None:
    container = _genmesh_container(deployment)
    return service_module(_argv(container)) if container else None


def _env_value(container: Object, name: str) -> str | None:
    return next((e.get("value") for e in container.get("env") or [] if e.get("name") == name), None)


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _match_labels(obj: Object) -> dict[str, str]:
    return ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}


def _image_problems(index: _Index, variant: str) -> list[str]:
    problems = []
    images: dict[str, list[str]] = {}
    for workload in index.workloads():
        for container in _containers(workload):
            argv = _argv(container)
            if not is_genmesh(argv):
                continue
            where = f"{_where(workload)} container {container.get('name')}"
            images.setdefault(container.get("image", ""), []).append(where)
            if container.get("command"):
                problems.append(
                    f"{where}: sets `command`, replacing the image's tini entrypoint; use `args`"
                )
            if (problem := argv_problem(argv)) is not None:
                problems.append(f"{where}: {problem}")
    if len(images) > 1:
        listing = "; ".join(
            f"{image}: {', '.join(users)}" for image, users in sorted(images.items())
        )
        problems.append(f"genmesh containers use {len(images)} images, not one: {listing}")
    for image in images:
        if variant not in (kustomize_lite.split_image(image)[1] or ""):
            problems.append(f"image {image!r}: tag does not name the {variant!r} build variant")
    return problems


def _service_deployment_problems(index: _Index) -> list[str]:
    problems = []
    for service in sorted(set(SERVICE_PORTS) - set(index.deployments_by_service())):
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
        if not {"cpu", "memory"} <= set((container.get("resources") or {}).get("requests") or {}):
            problems.append(f"{where}: set cpu and memory requests so the scheduler can place it")
        if (_pod_spec(deployment).get("securityContext") or {}).get("runAsNonRoot") is not True:
            problems.append(f"{where}: pod securityContext.runAsNonRoot must be true")
        replicas = as_int(deployment["spec"].get("replicas", 1))
        if service == "router" and replicas is not None and replicas < MIN_ROUTER_REPLICAS:
            problems.append(f"{where}: the router needs at least {MIN_ROUTER_REPLICAS} replicas")
    for workload in index.of_kind("Deployment", "StatefulSet"):
        for container in _pod_spec(workload).get("containers", []):
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    problems.append(
                        f"{_where(workload)} container {container.get('name')}: no {probe}"
                    )
    return problems


def _probe_problems(
    where: str, container: Object, service: str, port_name: str, port: int
) -> list[str]:
    problems = []
    for name in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(name)
        if probe is None:
            continue  # a missing readiness or liveness probe is reported for every workload
        if service in HTTP_SERVICES:
            http = probe.get("httpGet") or {}
            if http.get("path") != "/health" or http.get("port") not in (port_name, port):
                problems.append(f"{where}: {name} must GET /health on port {port_name}")
        elif (probe.get("grpc") or {}).get("port") != port:
            problems.append(f"{where}: {name} must be a gRPC health probe on port {port}")
    return problems


def _effective_env(index: _Index, container: Object) -> set[str]:
    names = {e["name"] for e in container.get("env") or []}
    for source in container.get("envFrom") or []:
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        ref = source.get("configMapRef") or source.get("secretRef") or {}
        obj = index.get(kind, ref.get("name", ""))
        if obj:
            names |= {source.get("prefix", "") + key for key in obj.get("data") or {}}
    return names


def _env_problems(
    index: _Index, where: str, container: Object, service: str, port: int
) -> list[str]:
    problems = []
    env = _effective_env(index, container)
    for name in sorted(n for n in env if n.startswith("GENMESH_") and n not in GENMESH_ENV):
        problems.append(f"{where}: unknown setting {name}")
    required = REQUIRED_ENV | (WORKER_ENV if service in WORKERS else frozenset())
    for name in sorted(required - env):
        problems.append(f"{where}: {name} is not set")
    if service not in WORKERS:
        return problems
    advertise = _env_value(container, "GENMESH_ADVERTISE_ADDR")
    if advertise != f"$(POD_IP):{port}":
        problems.append(
            f"{where}: GENMESH_ADVERTISE_ADDR must be $(POD_IP):{port}, got {advertise!r}"
        )
    names = [e.get("name") for e in container.get("env") or []]
    pod_ip = next((e for e in container.get("env") or [] if e.get("name") == "POD_IP"), {})
    if ((pod_ip.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") != "status.podIP":
        problems.append(f"{where}: POD_IP must come from the downward API (status.podIP)")
    elif "GENMESH_ADVERTISE_ADDR" in names and names.index("POD_IP") > names.index(
        "GENMESH_ADVERTISE_ADDR"
    ):
        problems.append(f"{where}: POD_IP must be defined before GENMESH_ADVERTISE_ADDR to expand")
    return problems


def _reference_problems(index: _Index) -> list[str]:
    """Every ConfigMap, Secret, key, volume and claim a pod refers to exists."""
    problems = []
    for obj in index.of_kind("ConfigMap", "Secret"):
        for key in obj.get("data") or {}:
            if key.startswith("GENMESH_") and key not in GENMESH_ENV:
                problems.append(f"{_where(obj)}: unknown setting {key}")
    claims = {o["metadata"]["name"] for o in index.of_kind("PersistentVolumeClaim")}
    for workload in index.workloads():
        where = _where(workload)
        spec = _pod_spec(workload)
        for kind, ref, name_field, key, what in _references(workload):
            name = ref.get(name_field)
            obj = index.get(kind, name or "")
            if obj is None:
                if not ref.get("optional", False):
                    problems.append(f"{where}: {what} refers to missing {kind} {name!r}")
            elif key is not None and key not in (obj.get("data") or {}):
                problems.append(f"{where}: {what} refers to missing key {key!r} of {kind} {name!r}")
        templates = (workload.get("spec") or {}).get("volumeClaimTemplates") or []
        volume_names = {v.get("name") for v in spec.get("volumes") or []}
        volume_names |= {t["metadata"]["name"] for t in templates}
        for container in _containers(workload):
            for mount in container.get("volumeMounts") or []:
                if mount.get("name") not in volume_names:
                    problems.append(
                        f"{where}: container {container.get('name')} mounts undeclared volume "
                        f"{mount.get('name')!r}"
                    )
        for volume in spec.get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim is not None and claim not in claims:
                problems.append(
                    f"{where}: volume {volume.get('name')} claims missing "
                    f"PersistentVolumeClaim {claim!r}"
                )
    return problems


def _references(workload: Object) -> Iterator[tuple[str, Object, str, str | None, str]]:
    """(kind, reference, its name field, key or None, where) for each ConfigMap/Secret use."""
    for container in _containers(workload):
        cname = container.get("name")
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                yield (
                    "ConfigMap",
                    source["configMapRef"],
                    "name",
                    None,
                    f"container {cname} envFrom",
                )
            if "secretRef" in source:
                yield "Secret", source["secretRef"], "name", None, f"container {cname} envFrom"
        for env in container.get("env") or []:
            value_from = env.get("valueFrom") or {}
            what = f"container {cname} env {env.get('name')}"
            if "configMapKeyRef" in value_from:
                ref = value_from["configMapKeyRef"]
                yield "ConfigMap", ref, "name", ref.get("key"), what
            if "secretKeyRef" in value_from:
                ref = value_from["secretKeyRef"]
                yield "Secret", ref, "name", ref.get("key"), what
    for volume in _pod_spec(workload).get("volumes") or []:
        what = f"volume {volume.get('name')}"
        if "configMap" in volume:
            for item in volume["configMap"].get("items") or [{}]:
                yield "ConfigMap", volume["configMap"], "name", item.get("key"), what
        if "secret" in volume:
            for item in volume["secret"].get("items") or [{}]:
                yield "Secret", volume["secret"], "secretName", item.get("key"), what


def _quantity_problems(index: _Index) -> list[str]:
    problems = []
    for workload in index.workloads():
        for container in _containers(workload):
            for section, amounts in (container.get("resources") or {}).items():
                for resource, amount in (amounts or {}).items():
                    if not QUANTITY.match(str(amount)):
                        problems.append(
                            f"{_where(workload)} container {container.get('name')}: "
                            f"resources.{section}.{resource} {amount!r} is not a quantity"
                        )
    return problems


def _selector_problems(index: _Index) -> list[str]:
    problems = []
    controllers = index.of_kind("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")
    for controller in controllers:
        selector = _match_labels(controller)
        if not _matches(selector, _pod_labels(controller)):
            problems.append(
                f"{_where(controller)}: selector {selector} does not match its own pod template"
            )
        for other in controllers:
            if other is not controller and _matches(selector, _pod_labels(other)):
                problems.append(
                    f"{_where(controller)}: selector {selector} also selects the pods "
                    f"of {_where(other)}"
                )
    for service in index.of_kind("Service"):
        selector = service["spec"].get("selector") or {}
        targets = [w for w in index.workloads() if _matches(selector, _pod_labels(w))]
        if not targets:
            problems.append(f"{_where(service)}: selector {selector} matches no pod template")
            continue
        container_ports = [p for w in targets for c in _containers(w) for p in c.get("ports") or []]
        for port in service["spec"].get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            if not any(target in (p.get("name"), p.get("containerPort")) for p in container_ports):
                problems.append(
                    f"{_where(service)}: targetPort {target!r} is not a port of the pods it selects"
                )
    return problems


def _disruption_budget_problems(index: _Index) -> list[str]:
    problems = []
    budgets = index.of_kind("PodDisruptionBudget")
    controllers = index.of_kind("Deployment", "StatefulSet")
    for budget in budgets:
        if not any(_matches(_match_labels(budget), _pod_labels(c)) for c in controllers):
            problems.append(f"{_where(budget)}: selects no pods")
    for deployment in index.of_kind("Deployment"):
        covering = [b for b in budgets if _matches(_match_labels(b), _pod_labels(deployment))]
        if len(covering) != 1:
            problems.append(
                f"{_where(deployment)}: covered by {len(covering)} PodDisruptionBudgets, "
                "needs exactly 1"
            )
    return problems


def _autoscaling_problems(index: _Index) -> list[str]:
    """Every worker Deployment scales with KEDA on its service's two queue consumers."""
    problems = []
    nats_services = {
        s["metadata"]["name"]
        for s in index.of_kind("Service")
        if any(p.get("port") == NATS_MONITOR_PORT for p in s["spec"].get("ports") or [])
    }
    scalers: dict[str, int] = {}
    for scaled_object in index.of_kind("ScaledObject"):
        where = _where(scaled_object)
        spec = scaled_object.get("spec") or {}
        target_ref = spec.get("scaleTargetRef") or {}
        target = index.get(target_ref.get("kind", "Deployment"), target_ref.get("name", ""))
        if target is None:
            problems.append(
                f"{where}: scales missing {target_ref.get('kind', 'Deployment')} "
                f"{target_ref.get('name')!r}"
            )
            continue
        scalers[target["metadata"]["name"]] = scalers.get(target["metadata"]["name"], 0) + 1
        service = _deployment_service(target)
        if service not in WORKERS:
            problems.append(f"{where}: scales {_where(target)}, which is not a queue-fed worker")
            continue
        if "replicas" in target["spec"]:
            problems.append(
                f"{_where(target)}: sets spec.replicas, which fights {where}; leave it to KEDA"
            )
        low, high = as_int(spec.get("minReplicaCount", 0)), as_int(spec.get("maxReplicaCount", 100))
        if low is not None and high is not None and low > high:
            problems.append(f"{where}: minReplicaCount {low} > maxReplicaCount {high}")
        # Extra GPU classes may rest at zero; the service's default Deployment may not.
        is_default = target["metadata"]["name"] == service
        if service not in SCALE_TO_ZERO and is_default and low is not None and low < 1:
            problems.append(
                f"{where}: {service} must keep at least one replica (minReplicaCount >= 1)"
            )
        problems += _trigger_problems(where, scaled_object, service, nats_services)
    for service, deployments in index.deployments_by_service().items():
        for deployment in deployments if service in WORKERS else ():
            count = scalers.get(deployment["metadata"]["name"], 0)
            if count != 1:
                problems.append(
                    f"{_where(deployment)}: scaled by {count} ScaledObjects, needs exactly 1"
                )
    return problems


def _trigger_problems(
    where: str, scaled_object: Object, service: str, nats_services: set[str]
) -> list[str]:
    problems = []
    namespace = scaled_object["metadata"].get("namespace")
    consumers = set()
    for trigger in (scaled_object.get("spec") or {}).get("triggers") or []:
        meta = trigger.get("metadata") or {}
        if trigger.get("type") != "nats-jetstream":
            problems.append(
                f"{where}: trigger {trigger.get('type')!r}; workers scale on nats-jetstream lag"
            )
            continue
        if meta.get("stream") != QUEUE_STREAM:
            problems.append(
                f"{where}: stream {meta.get('stream')!r}, the job queue is {QUEUE_STREAM}"
            )
        consumers.add(meta.get("consumer"))
        host, _, port = meta.get("natsServerMonitoringEndpoint", "").partition(":")
        name, _, domain = host.partition(".")
        if port != str(NATS_MONITOR_PORT) or name not in nats_services:
            problems.append(
                f"{where}: natsServerMonitoringEndpoint {host}:{port} is not a Service "
                f"exposing NATS monitoring on {NATS_MONITOR_PORT}"
            )
        elif not domain:
            problems.append(
                f"{where}: natsServerMonitoringEndpoint {host} needs its namespace "
                "(<service>.<namespace>.svc): KEDA resolves it from its own namespace"
            )
        elif domain.split(".")[0] != namespace:
            problems.append(
                f"{where}: natsServerMonitoringEndpoint names namespace "
                f"{domain.split('.')[0]!r}, the mesh is in {namespace!r}"
            )
    wanted = {f"queue-{service}-{priority}" for priority in PRIORITIES}
    if consumers != wanted:
        problems.append(
            f"{where}: consumers {sorted(c for c in consumers if c)}, expected {sorted(wanted)}"
        )
    return problems


def _network_policy_problems(index: _Index) -> list[str]:
    """Ingress denied by default; only the edge open to the outside; the mesh open to itself."""
    problems = []
    policies = index.of_kind("NetworkPolicy")
    if not any(
        p["spec"].get("podSelector") == {}
        and "Ingress" in (p["spec"].get("policyTypes") or [])
        and not p["spec"].get("ingress")
        for p in policies
    ):
        problems.append(
            "no default-deny ingress NetworkPolicy (podSelector {}, policyTypes [Ingress], "
            "no rules)"
        )
    edge_port = SERVICE_PORTS["edge"]
    edge_reachable = False
    for policy in policies:
        where = _where(policy)
        selected = (policy["spec"].get("podSelector") or {}).get("matchLabels") or {}
        only_edge = selected.get("app.kubernetes.io/name") == "edge"
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from") or []
            ports = {p.get("port") for p in rule.get("ports") or []}
            if not peers or any("ipBlock" in peer for peer in peers):
                if not only_edge:
                    problems.append(
                        f"{where}: admits traffic from outside the mesh to pods other than the edge"
                    )
                elif ports and ports <= {edge_port, "http"}:
                    edge_reachable = True
                else:
                    problems.append(
                        f"{where}: opens edge ports {sorted(map(str, ports)) or 'all'} "
                        "beyond its HTTP port"
                    )
            elif any("namespaceSelector" in peer for peer in peers):
                if not (ports and ports <= {NATS_MONITOR_PORT, METRICS_PORT}):
                    problems.append(
                        f"{where}: admits other namespaces on ports "
                        f"{sorted(map(str, ports)) or 'all'}; only NATS monitoring "
                        f"({NATS_MONITOR_PORT}) and metrics ({METRICS_PORT}) may be"
                    )
    if not edge_reachable:
        problems.append("no NetworkPolicy admits outside traffic to the edge's HTTP port")
    key, value = PART_OF_LABEL
    for workload in index.workloads():
        if _pod_labels(workload).get(key) != value:
            problems.append(
                f"{_where(workload)}: pods lack {key}={value}, so the mesh's policies shut them out"
            )
    return problems


def _gpu_problems(index: _Index, gpu: bool) -> list[str]:
    """GPU workers of a GPU overlay take a GPU of their class; nothing else takes one."""
    problems = []
    for deployment in index.of_kind("Deployment"):
        where = _where(deployment)
        container = _genmesh_container(deployment) or {}
        resources = container.get("resources") or {}
        limit = (resources.get("limits") or {}).get(GPU_RESOURCE)
        request = (resources.get("requests") or {}).get(GPU_RESOURCE)
        if not (gpu and _deployment_service(deployment) in GPU_WORKERS):
            if limit or request:
                problems.append(
                    f"{where}: requests {GPU_RESOURCE} but is not a GPU worker of a GPU overlay"
                )
            continue
        spec = _pod_spec(deployment)
        if (as_int(limit) or 0) < 1:
            problems.append(f"{where}: GPU worker without a {GPU_RESOURCE} limit")
        if request is not None and request != limit:
            problems.append(
                f"{where}: {GPU_RESOURCE} request {request} differs from its limit {limit}"
            )
        if not (spec.get("nodeSelector") or {}).get(GPU_PRODUCT_LABEL):
            problems.append(
                f"{where}: GPU worker without a {GPU_PRODUCT_LABEL} nodeSelector (its GPU class)"
            )
        if not any(t.get("key") == GPU_RESOURCE for t in spec.get("tolerations") or []):
            problems.append(f"{where}: GPU worker does not tolerate the {GPU_RESOURCE} node taint")
        if _env_value(container, "GENMESH_DEVICE") != "cuda":
            problems.append(f"{where}: GPU worker must set GENMESH_DEVICE=cuda")
    if not gpu:
        config = index.get("ConfigMap", _shared_configmap(index))
        if config is None or (config.get("data") or {}).get("GENMESH_DEVICE") != "cpu":
            problems.append("CPU overlay: the shared ConfigMap must set GENMESH_DEVICE=cpu")
    return problems


def _shared_configmap(index: _Index) -> str:
    """The name of the ConfigMap genmesh containers load with envFrom."""
    for deployment in index.of_kind("Deployment"):
        for source in (_genmesh_container(deployment) or {}).get("envFrom") or []:
            if "configMapRef" in source:
                return source["configMapRef"]["name"]
    return ""
