"""What every deployment of genmesh must agree on: services, ports, settings, queues, GPUs.

The policy checks in k8s_policy.py, compose_checks.py and dockerfile_checks.py hold the
deployment files to these facts; change them here when the mesh changes.
"""

from __future__ import annotations

import re

# Every service is `python -m genmesh.services.<name>`, listening on this port.
SERVICE_PORTS = {
    "router": 50051,
    "billing": 50052,
    "edge": 8080,
    "echo": 50060,
    "imagegen": 50061,
    "videogen": 50062,
    "audio": 50063,
    "llm": 50064,
    "apps": 50065,
}
HTTP_SERVICES = frozenset({"edge"})
WORKERS = frozenset({"echo", "imagegen", "videogen", "audio", "llm", "apps"})
SCALE_TO_ZERO = frozenset({"imagegen", "videogen", "audio", "apps"})
GPU_WORKERS = frozenset({"imagegen", "videogen", "llm", "apps"})
METRICS_PORT = 9090
MIN_ROUTER_REPLICAS = 2
# `genmesh <subcommand>` one-shots that may run from the image (the model cache).
CLI_COMMANDS = frozenset({("genmesh", "models", "build"), ("genmesh", "models", "pull")})

# The job queue: stream JOBS, one durable pull consumer per service and priority.
QUEUE_STREAM = "JOBS"
PRIORITIES = ("normal", "low")
NATS_MONITOR_PORT = 8222

# Every service's own plaintext port for grpc.health.v1 alone (GENMESH_HEALTH_PORT): a kubelet
# gRPC probe or a compose healthcheck cannot present a mesh certificate. The router's port is
# plaintext already (clients call it with API keys), and the edge is probed over HTTP.
HEALTH_PORT = 9091
MTLS_SERVERS = frozenset(SERVICE_PORTS) - {"router", "edge"}

# Mutual TLS: every service reads the CA, its certificate and its key from these settings;
# Kubernetes mounts them from one Secret with the keys ca.crt, <service>.crt, <service>.key.
TLS_SECRET = "genmesh-tls"
TLS_DIR = "/etc/genmesh/tls"
TLS_ENV = ("GENMESH_TLS_CA_FILE", "GENMESH_TLS_CERT_FILE", "GENMESH_TLS_KEY_FILE")


def tls_files(service: str) -> dict[str, str]:
    """The Secret key each TLS setting of `service` names, in the Secret's layout."""
    return dict(zip(TLS_ENV, ("ca.crt", f"{service}.crt", f"{service}.key"), strict=True))


def known_settings() -> frozenset[str]:
    """Every GENMESH_* variable a service reads: the fields of genmesh's one Settings object.

    Read from the model rather than listed here, so the list cannot fall behind the code.
    """
    from genmesh.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    return frozenset(f"{prefix}{name}".upper() for name in Settings.model_fields)


# What each kind of genmesh container must be given; missing, a service silently falls back to
# its laptop defaults (embedded infrastructure on 127.0.0.1, a generated key).
COMMON_ENV = frozenset(
    {"GENMESH_HOST", "GENMESH_PORT", "GENMESH_METRICS_PORT", "GENMESH_MODELS_DIR", *TLS_ENV}
)
BLOB_ENV = frozenset(
    {"GENMESH_S3_BUCKET", "GENMESH_S3_ACCESS_KEY_ID", "GENMESH_S3_SECRET_ACCESS_KEY"}
)
REQUIRED_ENV: dict[str, frozenset[str]] = {
    "router": COMMON_ENV
    | BLOB_ENV
    | {"GENMESH_NATS_URL", "GENMESH_DATABASE_URL", "GENMESH_API_KEY", "GENMESH_SIGNING_SECRET"},
    "billing": COMMON_ENV | {"GENMESH_NATS_URL", "GENMESH_DATABASE_URL", "GENMESH_API_KEY"},
    "edge": COMMON_ENV
    | BLOB_ENV
    | {"GENMESH_ROUTER_ADDR", "GENMESH_BILLING_ADDR", "GENMESH_SIGNING_SECRET"},
    **{
        worker: COMMON_ENV
        | BLOB_ENV
        | {"GENMESH_NATS_URL", "GENMESH_ADVERTISE_ADDR", "GENMESH_HEALTH_PORT"}
        for worker in WORKERS
    },
}
# The control plane's secrets, which no worker needs: least privilege, and the apps worker runs
# tenants' code.
CONTROL_PLANE_SECRETS = frozenset(
    {"GENMESH_DATABASE_URL", "GENMESH_API_KEY", "GENMESH_SIGNING_SECRET"}
)

# Kubernetes specifics.
# Where each workload kind keeps its pod spec.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
PART_OF_LABEL = ("app.kubernetes.io/part-of", "genmesh")
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
# Kubernetes' resource.Quantity syntax; the OpenAPI schemas only say "string or number".
QUANTITY = re.compile(
    r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def service_module(argv: list[str]) -> str | None:
    """`python -m genmesh.services.<name>` -> name (None for anything else)."""
    if len(argv) == 3 and argv[:2] == ["python", "-m"] and argv[2].startswith("genmesh.services."):
        return argv[2].removeprefix("genmesh.services.")
    return None


def is_genmesh(argv: list[str]) -> bool:
    """Whether a command line runs genmesh (a service or the `genmesh` CLI)."""
    return service_module(argv) is not None or (bool(argv) and argv[0] == "genmesh")


def argv_problem(argv: list[str]) -> str | None:
    """Why a genmesh command line is wrong, or None."""
    module = service_module(argv)
    if module is not None:
        if module in SERVICE_PORTS:
            return None
        return f"unknown service module genmesh.services.{module}"
    if tuple(argv) in CLI_COMMANDS:
        return None
    return (
        f"runs {' '.join(argv)!r}, not `python -m genmesh.services.<name>` "
        "or a known `genmesh` command"
    )


def as_int(value: object) -> int | None:
    """An integer field's value, or None when it is mistyped (the schema check reports that)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def image_tag(image: str) -> str | None:
    """The tag of `registry/name:tag@digest` (None when untagged)."""
    name = image.partition("@")[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[colon + 1 :] if colon > slash else None
