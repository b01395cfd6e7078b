"""genmesh's own rules for its rendered Kubernetes objects: what no general linter can know.

Schemas and generic security (non-root, read-only root filesystem, capabilities, seccomp,
service account tokens, probes present, requests set) are lint.py's: kubernetes-validate and
checkov. What stays here is the mesh's topology and policy: which services exist and how they are
wired, its settings, mutual TLS, the job-queue autoscaling, who may talk to whom, and GPU
placement; plus two generic checks no linter on PyPI does offline (cross-object references and
quantity syntax), each said why where it is defined. Each check returns a list of problems.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

from lint import where
from mesh_facts import (
    CONTROL_PLANE_SECRETS,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    GPU_WORKERS,
    HEALTH_PORT,
    HTTP_SERVICES,
    METRICS_PORT,
    MIN_ROUTER_REPLICAS,
    MTLS_SERVERS,
    NATS_MONITOR_PORT,
    PART_OF_LABEL,
    POD_SPEC_PATHS,
    PRIORITIES,
    QUANTITY,
    QUEUE_STREAM,
    REQUIRED_ENV,
    SCALE_TO_ZERO,
    SERVICE_PORTS,
    TLS_DIR,
    TLS_SECRET,
    WORKERS,
    argv_problem,
    as_int,
    image_tag,
    is_genmesh,
    known_settings,
    service_module,
    tls_files,
)

Object = dict[str, Any]
# Secrets the operator creates outside the manifests (the mesh's certificates: genmesh-tls, or
# cert-manager's genmesh-tls-<service>): referring to them is expected, not a dangling reference.
EXTERNAL_SECRET_PREFIX = TLS_SECRET
# Address ranges inside a cluster (or its nodes and cloud metadata): egress into them from the
# apps worker would reach the mesh's internal ports.
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "127.0.0.0/8",
    )
)


def mesh_problems(objects: list[Object], *, gpu: bool, variant: str) -> list[str]:
    """All of genmesh's rules. `gpu`: a GPU overlay; `variant`: its image's build variant."""
    index = _Index(objects)
    return [
        *image_problems(index, variant),
        *service_problems(index),
        *settings_problems(index),
        *tls_problems(index),
        *reference_problems(index),
        *quantity_problems(index),
        *selector_problems(index),
        *disruption_budget_problems(index),
        *autoscaling_problems(index),
        *network_policy_problems(index),
        *gpu_problems(index, gpu),
    ]


class _Index:
    def __init__(self, objects: list[Object]) -> None:
        self.objects = objects

    def of_kind(self, *kinds: str) -> list[Object]:
        return [o for o in self.objects if o.get("kind") in kinds]

    def get(self, kind: str, name: str) -> Object | None:
        return next((o for o in self.of_kind(kind) if o["metadata"]["name"] == name), None)

    def workloads(self) -> list[Object]:
        return self.of_kind(*POD_SPEC_PATHS)

    def services(self) -> Iterator[tuple[str, Object, Object]]:
        """(service, Deployment, its genmesh container) for every Deployment of a known service."""
        for deployment in self.of_kind("Deployment"):
            container = _genmesh_container(deployment)
            service = service_module(_argv(container)) if container else None
            if container is not None and service in SERVICE_PORTS:
                yield service, deployment, container

    def deployments_by_service(self) -> dict[str, list[Object]]:
        grouped: dict[str, list[Object]] = {}
        for service, deployment, _ in self.services():
            grouped.setdefault(service, []).append(deployment)
        return grouped


def _pod_spec(obj: Object) -> Object:
    spec: Any = obj
    for key in POD_SPEC_PATHS.get(obj.get("kind", ""), ()):
        spec = (spec or {}).get(key)
    return spec or {}


def _pod_labels(obj: Object) -> dict[str, str]:
    template_path = POD_SPEC_PATHS.get(obj.get("kind", ""), ())[:-1]
    node: Any = obj
    for key in template_path:
        node = (node or {}).get(key)
    return ((node or {}).get("metadata") or {}).get("labels") or {}


def _containers(obj: Object) -> list[Object]:
    spec = _pod_spec(obj)
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def _argv(container: Object | None) -> list[str]:
    container = container or {}
    return [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]


def _genmesh_container(workload: Object) -> Object | None:
    return next((c for c in _containers(workload) if is_genmesh(_argv(c))), None)


def _service_of(deployment: Object) -> str | None:
    return service_module(_argv(_genmesh_container(deployment)))


def _env(container: Object) -> dict[str, Object]:
    return {e.get("name"): e for e in container.get("env") or []}


def _env_value(container: Object, name: str) -> str | None:
    return (_env(container).get(name) or {}).get("value")


def _effective_env(index: _Index, container: Object) -> set[str]:
    names = set(_env(container))
    for source in container.get("envFrom") or []:
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        ref = source.get("configMapRef") or source.get("secretRef") or {}
        obj = index.get(kind, ref.get("name", ""))
        if obj:
            names |= {source.get("prefix", "") + key for key in obj.get("data") or {}}
    return names


def _selects(selector: Object, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a pod's labels."""
    if not selector:
        return True
    if not all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values") or []
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and labels.get(key) in values)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def _match_labels(obj: Object) -> dict[str, str]:
    return ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """A controller's or Service's plain label selector; an empty one selects nothing here."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ------------------------------------------------------------------ the one image


def image_problems(index: _Index, variant: str) -> list[str]:
    """One image runs every genmesh container, built for the overlay's variant, under the image's
    tini entrypoint, running a known service or CLI command: the Dockerfile builds one image."""
    problems = []
    images: dict[str, list[str]] = {}
    for workload in index.workloads():
        for container in _containers(workload):
            argv = _argv(container)
            if not is_genmesh(argv):
                continue
            at = f"{where(workload)} container {container.get('name')}"
            images.setdefault(container.get("image", ""), []).append(at)
            if container.get("command"):
                problems.append(
                    f"{at}: sets `command`, replacing the image's tini entrypoint; use `args`"
                )
            if (problem := argv_problem(argv)) is not None:
                problems.append(f"{at}: {problem}")
    if len(images) > 1:
        listing = "; ".join(f"{i}: {', '.join(users)}" for i, users in sorted(images.items()))
        problems.append(f"genmesh containers use {len(images)} images, not one: {listing}")
    for image in images:
        if variant not in (image_tag(image) or ""):
            problems.append(f"image {image!r}: tag does not name the {variant!r} build variant")
    return problems


# ------------------------------------------------------------------ services and their wiring


def service_problems(index: _Index) -> list[str]:
    """Every service runs, on its port, probed where it answers without a client certificate,
    workers advertising their pod IP, and enough routers that a restart never stops traffic."""
    problems = [
        f"no Deployment runs genmesh.services.{service}"
        for service in sorted(set(SERVICE_PORTS) - set(index.deployments_by_service()))
    ]
    for deployment in index.of_kind("Deployment"):
        if _genmesh_container(deployment) is None:
            problems.append(f"{where(deployment)}: runs no genmesh service")
    for service, deployment, container in index.services():
        at = where(deployment)
        port = SERVICE_PORTS[service]
        port_name = "http" if service in HTTP_SERVICES else "grpc"
        ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
        if ports.get(port_name) != port:
            problems.append(f"{at}: needs container port {port_name!r} = {port} for {service}")
        if ports.get("metrics") != METRICS_PORT:
            problems.append(f"{at}: needs container port 'metrics' = {METRICS_PORT}")
        if _env_value(container, "GENMESH_PORT") != str(port):
            problems.append(f"{at}: GENMESH_PORT must be {port}")
        problems += _probe_problems(at, container, service, port_name, port)
        replicas = as_int(deployment["spec"].get("replicas", 1))
        if service == "router" and replicas is not None and replicas < MIN_ROUTER_REPLICAS:
            problems.append(f"{at}: the router needs at least {MIN_ROUTER_REPLICAS} replicas")
        if service in WORKERS:
            problems += _advertise_problems(at, container, port)
    return problems


def _probe_problems(at: str, container: Object, service: str, port_name: str, port: int) -> list[str]:
    # A mutual-TLS port refuses a kubelet (it has no mesh certificate): those services serve
    # grpc.health.v1 on a plaintext health port, and the probes must go there.
    problems = []
    probe_port = port
    if service in MTLS_SERVERS:
        probe_port = HEALTH_PORT
        if _env_value(container, "GENMESH_HEALTH_PORT") != str(HEALTH_PORT):
            problems.append(f"{at}: GENMESH_HEALTH_PORT must be {HEALTH_PORT} (probes need it)")
    for name in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(name)
        if probe is None:
            continue  # a missing readiness or liveness probe is checkov's to report
        if service in HTTP_SERVICES:
            http = probe.get("httpGet") or {}
            if http.get("path") != "/health" or http.get("port") not in (port_name, port):
                problems.append(f"{at}: {name} must GET /health on port {port_name}")
        elif (probe.get("grpc") or {}).get("port") != probe_port:
            problems.append(f"{at}: {name} must be a gRPC health probe on port {probe_port}")
    return problems


def _advertise_problems(at: str, container: Object, port: int) -> list[str]:
    # The router dials a worker at the address in its heartbeat; a Service name would spread
    # one worker's calls over all its replicas.
    problems = []
    advertise = _env_value(container, "GENMESH_ADVERTISE_ADDR")
    if advertise != f"$(POD_IP):{port}":
        problems.append(f"{at}: GENMESH_ADVERTISE_ADDR must be $(POD_IP):{port}, got {advertise!r}")
    env = _env(container)
    pod_ip = env.get("POD_IP") or {}
    names = list(env)
    if ((pod_ip.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") != "status.podIP":
        problems.append(f"{at}: POD_IP must come from the downward API (status.podIP)")
    elif "GENMESH_ADVERTISE_ADDR" in env and names.index("POD_IP") > names.index(
        "GENMESH_ADVERTISE_ADDR"
    ):
        problems.append(f"{at}: POD_IP must be defined before GENMESH_ADVERTISE_ADDR to expand")
    return problems


def settings_problems(index: _Index) -> list[str]:
    """Every GENMESH_* variable is a real setting (Settings ignores unknown ones, so a typo is
    silently a default), each service gets what it cannot run without, and no worker holds the
    control plane's secrets (the apps worker runs tenants' code)."""
    known = known_settings()
    problems = []
    for obj in index.of_kind("ConfigMap", "Secret"):
        for key in obj.get("data") or {}:
            if key.startswith("GENMESH_") and key not in known:
                problems.append(f"{where(obj)}: unknown setting {key}")
    for service, deployment, container in index.services():
        at = f"{where(deployment)} container {container.get('name')}"
        env = _effective_env(index, container)
        for name in sorted(_env(container)):
            if name and name.startswith("GENMESH_") and name not in known:
                problems.append(f"{at}: unknown setting {name}")
        for name in sorted(REQUIRED_ENV[service] - env):
            problems.append(f"{at}: {name} is not set")
        if service in WORKERS:
            for name in sorted(CONTROL_PLANE_SECRETS & env):
                problems.append(f"{at}: a worker must not be given {name}")
    return problems


def tls_problems(index: _Index) -> list[str]:
    """Mutual TLS: every service mounts its certificates read-only at /etc/genmesh/tls, from the
    genmesh-tls Secret (or, with cert-manager, a projected volume of genmesh-tls-* Secrets),
    projecting only the CA and its own certificate and key, and its three TLS settings name those
    files (a service without them refuses to start; one given every key could impersonate any
    service)."""
    problems = []
    for service, deployment, container in index.services():
        at = f"{where(deployment)} container {container.get('name')}"
        volumes = {v.get("name"): v for v in _pod_spec(deployment).get("volumes") or []}
        mount = next(
            (m for m in container.get("volumeMounts") or [] if m.get("mountPath") == TLS_DIR),
            None,
        )
        files = _tls_volume_files(volumes.get((mount or {}).get("name")) or {})
        if mount is None or files is None:
            problems.append(f"{at}: must mount Secret {TLS_SECRET} at {TLS_DIR}")
            continue
        if not mount.get("readOnly"):
            problems.append(f"{at}: mounts {TLS_DIR} writable; mount it readOnly")
        wanted = tls_files(service)
        if files != set(wanted.values()):
            problems.append(
                f"{at}: the {TLS_SECRET} volume must project exactly {sorted(wanted.values())}, "
                f"got {sorted(files) or 'every key'}"
            )
        for setting, key in wanted.items():
            if _env_value(container, setting) != f"{TLS_DIR}/{key}":
                problems.append(f"{at}: {setting} must be {TLS_DIR}/{key}")
    return problems


def _tls_volume_files(volume: Object) -> set[str] | None:
    """The file names a TLS volume projects (empty: every key of the Secret), or None when it is
    not made of the mesh's Secrets."""
    if "secret" in volume:
        sources = [volume["secret"] | {"name": volume["secret"].get("secretName")}]
    elif "projected" in volume:
        sources = [s.get("secret") for s in volume["projected"].get("sources") or []]
    else:
        return None
    if not sources or not all(s and str(s.get("name", "")).startswith(TLS_SECRET) for s in sources):
        return None
    if not all(s.get("items") for s in sources):
        return set()
    return {i.get("path") for s in sources for i in s["items"]}


# ------------------------------------------------------------------ references and syntax


def reference_problems(index: _Index) -> list[str]:
    """Every ConfigMap, Secret, key, volume, claim and Service port a pod or Service refers to
    exists. Generic, but hand-written: the API server accepts a dangling reference and the pod
    then hangs in CreateContainerConfigError, and the linters that resolve references across
    objects (kube-score, kube-linter) ship no PyPI build."""
    problems = []
    claims = {o["metadata"]["name"] for o in index.of_kind("PersistentVolumeClaim")}
    for workload in index.workloads():
        at = where(workload)
        spec = _pod_spec(workload)
        for kind, ref, name_field, key, what in _references(workload):
            name = ref.get(name_field) or ""
            obj = index.get(kind, name)
            if obj is None:
                if not ref.get("optional", False) and not (
                    kind == "Secret" and name.startswith(EXTERNAL_SECRET_PREFIX)
                ):
                    problems.append(f"{at}: {what} refers to missing {kind} {name!r}")
            elif key is not None and key not in (obj.get("data") or {}):
                problems.append(f"{at}: {what} refers to missing key {key!r} of {kind} {name!r}")
        templates = (workload.get("spec") or {}).get("volumeClaimTemplates") or []
        volume_names = {v.get("name") for v in spec.get("volumes") or []}
        volume_names |= {t["metadata"]["name"] for t in templates}
        for container in _containers(workload):
            for mount in container.get("volumeMounts") or []:
                if mount.get("name") not in volume_names:
                    problems.append(
                        f"{at}: container {container.get('name')} mounts undeclared volume "
                        f"{mount.get('name')!r}"
                    )
        for volume in spec.get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim is not None and claim not in claims:
                problems.append(
                    f"{at}: volume {volume.get('name')} claims missing "
                    f"PersistentVolumeClaim {claim!r}"
                )
    for service in index.of_kind("Service"):
        selector = service["spec"].get("selector") or {}
        targets = [w for w in index.workloads() if _matches(selector, _pod_labels(w))]
        if not targets:
            problems.append(f"{where(service)}: selector {selector} matches no pod template")
            continue
        container_ports = [p for w in targets for c in _containers(w) for p in c.get("ports") or []]
        for port in service["spec"].get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            if not any(target in (p.get("name"), p.get("containerPort")) for p in container_ports):
                problems.append(
                    f"{where(service)}: targetPort {target!r} is not a port of the pods it selects"
                )
    return problems


def _references(workload: Object) -> Iterator[tuple[str, Object, str, str | None, str]]:
    """(kind, reference, its name field, key or None, where) for each ConfigMap/Secret use."""
    for container in _containers(workload):
        cname = container.get("name")
        for source in container.get("envFrom") or []:
            for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if field in source:
                    yield kind, source[field], "name", None, f"container {cname} envFrom"
        for env in container.get("env") or []:
            value_from = env.get("valueFrom") or {}
            what = f"container {cname} env {env.get('name')}"
            for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if field in value_from:
                    ref = value_from[field]
                    yield kind, ref, "name", ref.get("key"), what
    for volume in _pod_spec(workload).get("volumes") or []:
        what = f"volume {volume.get('name')}"
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "secret" in source:
                for item in source["secret"].get("items") or [{}]:
                    yield "Secret", source["secret"], "name", item.get("key"), what
        if "configMap" in volume:
            for item in volume["configMap"].get("items") or [{}]:
                yield "ConfigMap", volume["configMap"], "name", item.get("key"), what
        if "secret" in volume:
            for item in volume["secret"].get("items") or [{}]:
                yield "Secret", volume["secret"], "secretName", item.get("key"), what


def quantity_problems(index: _Index) -> list[str]:
    """Resource amounts are Kubernetes quantities. Generic, but hand-written: the OpenAPI
    schemas type a quantity as any string, so only the API server would refuse "8 gigs"."""
    problems = []
    for workload in index.workloads():
        for container in _containers(workload):
            for section, amounts in (container.get("resources") or {}).items():
                for resource, amount in (amounts or {}).items():
                    if not QUANTITY.match(str(amount)):
                        problems.append(
                            f"{where(workload)} container {container.get('name')}: "
                            f"resources.{section}.{resource} {amount!r} is not a quantity"
                        )
    return problems


# ------------------------------------------------------------------ availability and scaling


def selector_problems(index: _Index) -> list[str]:
    """Each controller selects its own pods and no other's. A GPU class is a copy of a worker's
    Deployment; a copy whose selector still matches the default class's pods makes the two
    fight over them, which the API server allows."""
    problems = []
    controllers = index.of_kind("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")
    for controller in controllers:
        selector = _match_labels(controller)
        if not _matches(selector, _pod_labels(controller)):
            problems.append(
                f"{where(controller)}: selector {selector} does not match its own pod template"
            )
        for other in controllers:
            if other is not controller and _matches(selector, _pod_labels(other)):
                problems.append(
                    f"{where(controller)}: selector {selector} also selects the pods "
                    f"of {where(other)}"
                )
    return problems


def disruption_budget_problems(index: _Index) -> list[str]:
    """Every Deployment (each GPU class too) has exactly one PodDisruptionBudget, so a node
    drain never takes a whole service (or class) down at once."""
    problems = []
    budgets = index.of_kind("PodDisruptionBudget")
    controllers = index.of_kind("Deployment", "StatefulSet")
    for budget in budgets:
        if not any(_matches(_match_labels(budget), _pod_labels(c)) for c in controllers):
            problems.append(f"{where(budget)}: selects no pods")
    for deployment in index.of_kind("Deployment"):
        covering = [b for b in budgets if _matches(_match_labels(b), _pod_labels(deployment))]
        if len(covering) != 1:
            problems.append(
                f"{where(deployment)}: covered by {len(covering)} PodDisruptionBudgets, "
                "needs exactly 1"
            )
    return problems


def autoscaling_problems(index: _Index) -> list[str]:
    """Every worker Deployment scales with KEDA on its service's two queue consumers in the
    JOBS stream, read from NATS monitoring by its cross-namespace name; echo and llm never go
    below one; KEDA, not `replicas`, owns the count."""
    problems = []
    nats_services = {
        s["metadata"]["name"]
        for s in index.of_kind("Service")
        if any(p.get("port") == NATS_MONITOR_PORT for p in s["spec"].get("ports") or [])
    }
    scalers: dict[str, int] = {}
    for scaled_object in index.of_kind("ScaledObject"):
        at = where(scaled_object)
        spec = scaled_object.get("spec") or {}
        target_ref = spec.get("scaleTargetRef") or {}
        target = index.get(target_ref.get("kind", "Deployment"), target_ref.get("name", ""))
        if target is None:
            problems.append(
                f"{at}: scales missing {target_ref.get('kind', 'Deployment')} "
                f"{target_ref.get('name')!r}"
            )
            continue
        scalers[target["metadata"]["name"]] = scalers.get(target["metadata"]["name"], 0) + 1
        service = _service_of(target)
        if service not in WORKERS:
            problems.append(f"{at}: scales {where(target)}, which is not a queue-fed worker")
            continue
        if "replicas" in target["spec"]:
            problems.append(
                f"{where(target)}: sets spec.replicas, which fights {at}; leave it to KEDA"
            )
        low, high = as_int(spec.get("minReplicaCount", 0)), as_int(spec.get("maxReplicaCount", 100))
        if low is not None and high is not None and low > high:
            problems.append(f"{at}: minReplicaCount {low} > maxReplicaCount {high}")
        # Extra GPU classes may rest at zero; the service's default Deployment may not.
        is_default = target["metadata"]["name"] == service
        if service not in SCALE_TO_ZERO and is_default and low is not None and low < 1:
            problems.append(f"{at}: {service} must keep at least one replica (minReplicaCount >= 1)")
        problems += _trigger_problems(at, scaled_object, service, nats_services)
    for service, deployments in index.deployments_by_service().items():
        for deployment in deployments if service in WORKERS else ():
            count = scalers.get(deployment["metadata"]["name"], 0)
            if count != 1:
                problems.append(
                    f"{where(deployment)}: scaled by {count} ScaledObjects, needs exactly 1"
                )
    return problems


def _trigger_problems(at: str, scaled_object: Object, service: str, nats_services: set[str]) -> list[str]:
    problems = []
    namespace = scaled_object["metadata"].get("namespace")
    consumers = set()
    for trigger in (scaled_object.get("spec") or {}).get("triggers") or []:
        meta = trigger.get("metadata") or {}
        if trigger.get("type") != "nats-jetstream":
            problems.append(f"{at}: trigger {trigger.get('type')!r}; workers scale on nats-jetstream lag")
            continue
        if meta.get("stream") != QUEUE_STREAM:
            problems.append(f"{at}: stream {meta.get('stream')!r}, the job queue is {QUEUE_STREAM}")
        consumers.add(meta.get("consumer"))
        host, _, port = meta.get("natsServerMonitoringEndpoint", "").partition(":")
        name, _, domain = host.partition(".")
        if port != str(NATS_MONITOR_PORT) or name not in nats_services:
            problems.append(
                f"{at}: natsServerMonitoringEndpoint {host}:{port} is not a Service "
                f"exposing NATS monitoring on {NATS_MONITOR_PORT}"
            )
        elif not domain:
            problems.append(
                f"{at}: natsServerMonitoringEndpoint {host} needs its namespace "
                "(<service>.<namespace>.svc): KEDA resolves it from its own namespace"
            )
        elif domain.split(".")[0] != namespace:
            problems.append(
                f"{at}: natsServerMonitoringEndpoint names namespace "
                f"{domain.split('.')[0]!r}, the mesh is in {namespace!r}"
            )
    wanted = {f"queue-{service}-{priority}" for priority in PRIORITIES}
    if consumers != wanted:
        problems.append(f"{at}: consumers {sorted(c for c in consumers if c)}, expected {sorted(wanted)}")
    return problems


# ------------------------------------------------------------------ who may talk to whom


def network_policy_problems(index: _Index) -> list[str]:
    """Ingress is denied by default; only the edge is open to the outside; other namespaces
    reach only NATS monitoring and metrics; a worker admits only the router (the one caller it
    trusts); the apps worker, which runs tenants' code, has closed egress with no route into the
    cluster beyond NATS and DNS. Every pod carries part-of=genmesh, which the policies select."""
    policies = index.of_kind("NetworkPolicy")
    problems = []
    if not any(
        p["spec"].get("podSelector") == {}
        and "Ingress" in (p["spec"].get("policyTypes") or [])
        and not p["spec"].get("ingress")
        for p in policies
    ):
        problems.append(
            "no default-deny ingress NetworkPolicy (podSelector {}, policyTypes [Ingress], no rules)"
        )
    edge_port = SERVICE_PORTS["edge"]
    edge_reachable = False
    for policy in policies:
        at = where(policy)
        selected = (policy["spec"].get("podSelector") or {}).get("matchLabels") or {}
        only_edge = selected.get("app.kubernetes.io/name") == "edge"
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from") or []
            ports = {p.get("port") for p in rule.get("ports") or []}
            if not peers or any("ipBlock" in peer for peer in peers):
                if not only_edge:
                    problems.append(
                        f"{at}: admits traffic from outside the mesh to pods other than the edge"
                    )
                elif ports and ports <= {edge_port, "http"}:
                    edge_reachable = True
                else:
                    problems.append(
                        f"{at}: opens edge ports {sorted(map(str, ports)) or 'all'} beyond its HTTP port"
                    )
            elif any("namespaceSelector" in peer for peer in peers):
                if not (ports and ports <= {NATS_MONITOR_PORT, METRICS_PORT, "metrics"}):
                    problems.append(
                        f"{at}: admits other namespaces on ports {sorted(map(str, ports)) or 'all'}; "
                        f"only NATS monitoring ({NATS_MONITOR_PORT}) and metrics ({METRICS_PORT}) may be"
                    )
    if not edge_reachable:
        problems.append("no NetworkPolicy admits outside traffic to the edge's HTTP port")
    problems += _worker_ingress_problems(index, policies)
    problems += _apps_egress_problems(index, policies)
    key, value = PART_OF_LABEL
    for workload in index.workloads():
        if _pod_labels(workload).get(key) != value:
            problems.append(
                f"{where(workload)}: pods lack {key}={value}, so the mesh's policies shut them out"
            )
    return problems


def _router_labels(index: _Index) -> list[dict[str, str]]:
    return [_pod_labels(d) for s, d, _ in index.services() if s == "router"]


def _worker_ingress_problems(index: _Index, policies: list[Object]) -> list[str]:
    problems = []
    routers = _router_labels(index)
    for service, deployment, _ in index.services():
        if service not in WORKERS:
            continue
        labels = _pod_labels(deployment)
        admitted_router = False
        for policy in policies:
            if "Ingress" not in (policy["spec"].get("policyTypes") or []):
                continue
            if not _selects(policy["spec"].get("podSelector") or {}, labels):
                continue
            for rule in policy["spec"].get("ingress") or []:
                ports = {p.get("port") for p in rule.get("ports") or []}
                if ports and ports <= {METRICS_PORT, "metrics"}:
                    continue  # Prometheus, checked above
                for peer in rule.get("from") or [{}]:
                    selector = peer.get("podSelector")
                    only_routers = (
                        selector is not None
                        and "namespaceSelector" not in peer
                        and routers
                        and all(
                            _selects(selector, w) == (w in routers)
                            for w in map(_pod_labels, index.workloads())
                        )
                    )
                    if only_routers:
                        admitted_router = True
                    else:
                        problems.append(
                            f"{where(policy)}: admits {peer or 'anyone'} to {where(deployment)}; "
                            "a worker serves the router alone"
                        )
        if not admitted_router:
            problems.append(f"{where(deployment)}: no NetworkPolicy admits the router")
    return problems


def _apps_egress_problems(index: _Index, policies: list[Object]) -> list[str]:
    problems = []
    nats = [
        _pod_labels(w)
        for w in index.workloads()
        if _pod_labels(w).get("app.kubernetes.io/name") == "nats"
    ]
    for service, deployment, _ in index.services():
        if service != "apps":
            continue
        labels = _pod_labels(deployment)
        egress = [
            p
            for p in policies
            if "Egress" in (p["spec"].get("policyTypes") or [])
            and _selects(p["spec"].get("podSelector") or {}, labels)
        ]
        if not egress:
            problems.append(
                f"{where(deployment)}: no egress NetworkPolicy; app code could reach "
                "Postgres, the router and the workers"
            )
        for policy in egress:
            for rule in policy["spec"].get("egress") or []:
                for peer in rule.get("to") or [{}]:
                    problem = _apps_peer_problem(peer, index, nats)
                    if problem:
                        problems.append(f"{where(policy)}: lets {where(deployment)} reach {problem}")
    return problems


def _apps_peer_problem(peer: Object, index: _Index, nats: list[dict[str, str]]) -> str | None:
    if not peer:
        return "anything"
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        network = ipaddress.ip_network(block.get("cidr", "0.0.0.0/0"), strict=False)
        excepted = [ipaddress.ip_network(e, strict=False) for e in block.get("except") or []]
        for private in PRIVATE_NETWORKS:
            if private.version == network.version and private.overlaps(network) and not any(
                private.subnet_of(e) for e in excepted if e.version == private.version
            ):
                return f"the private range {private} ({block.get('cidr')})"
        return None
    if "namespaceSelector" in peer:
        # Another namespace: only cluster DNS.
        names = (peer["namespaceSelector"].get("matchLabels") or {}).get(
            "kubernetes.io/metadata.name"
        )
        pods = (peer.get("podSelector") or {}).get("matchLabels") or {}
        if names == "kube-system" and pods.get("k8s-app") == "kube-dns":
            return None
        return f"pods of other namespaces ({peer})"
    selector = peer.get("podSelector") or {}
    reached = [
        _pod_labels(w) for w in index.workloads() if _selects(selector, _pod_labels(w))
    ]
    beyond = [labels.get("app.kubernetes.io/name") for labels in reached if labels not in nats]
    return f"pods {sorted(set(map(str, beyond)))}" if beyond else None


# ------------------------------------------------------------------ GPUs


def gpu_problems(index: _Index, gpu: bool) -> list[str]:
    """GPU workers of a GPU overlay take a whole GPU of a named class (nodeSelector on the GPU
    product label, the GPU taint tolerated, GENMESH_DEVICE=cuda); nothing else takes a GPU; the
    CPU overlay runs every worker on CPU."""
    problems = []
    for deployment in index.of_kind("Deployment"):
        at = where(deployment)
        container = _genmesh_container(deployment) or {}
        resources = container.get("resources") or {}
        limit = (resources.get("limits") or {}).get(GPU_RESOURCE)
        request = (resources.get("requests") or {}).get(GPU_RESOURCE)
        if not (gpu and _service_of(deployment) in GPU_WORKERS):
            if limit or request:
                problems.append(
                    f"{at}: requests {GPU_RESOURCE} but is not a GPU worker of a GPU overlay"
                )
            continue
        spec = _pod_spec(deployment)
        if (as_int(limit) or 0) < 1:
            problems.append(f"{at}: GPU worker without a {GPU_RESOURCE} limit")
        if request is not None and request != limit:
            problems.append(f"{at}: {GPU_RESOURCE} request {request} differs from its limit {limit}")
        if not (spec.get("nodeSelector") or {}).get(GPU_PRODUCT_LABEL):
            problems.append(
                f"{at}: GPU worker without a {GPU_PRODUCT_LABEL} nodeSelector (its GPU class)"
            )
        if not any(t.get("key") == GPU_RESOURCE for t in spec.get("tolerations") or []):
            problems.append(f"{at}: GPU worker does not tolerate the {GPU_RESOURCE} node taint")
        if _env_value(container, "GENMESH_DEVICE") != "cuda":
            problems.append(f"{at}: GPU worker must set GENMESH_DEVICE=cuda")
    if not gpu:
        config = index.get("ConfigMap", _shared_configmap(index))
        if config is None or (config.get("data") or {}).get("GENMESH_DEVICE") != "cpu":
            problems.append("CPU overlay: the shared ConfigMap must set GENMESH_DEVICE=cpu")
    return problems


def _shared_configmap(index: _Index) -> str:
    """The name of the ConfigMap genmesh containers load with envFrom."""
    for _, _, container in index.services():
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                return source["configMapRef"]["name"]
    return ""
