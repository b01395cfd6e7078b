"""What every deployment of genmesh must agree on: services, ports, settings, queues, GPUs.

The checks in k8s_checks.py, compose_checks.py and dockerfile_checks.py hold the deployment
files to these facts; change them here when the mesh changes.
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

# The GENMESH_* variables the services read; anything else is a typo.
GENMESH_ENV = frozenset(
    {
        "GENMESH_NATS_URL",
        "GENMESH_DATABASE_URL",
        "GENMESH_S3_BUCKET",
        "GENMESH_S3_ENDPOINT_URL",
        "GENMESH_S3_REGION",
        "GENMESH_S3_ACCESS_KEY_ID",
        "GENMESH_S3_SECRET_ACCESS_KEY",
        "GENMESH_API_KEY",
        "GENMESH_SIGNING_SECRET",
        "GENMESH_HOST",
        "GENMESH_PORT",
        "GENMESH_ROUTER_ADDR",
        "GENMESH_BILLING_ADDR",
        "GENMESH_PUBLIC_URL",
        "GENMESH_DATA_DIR",
        "GENMESH_MODELS_DIR",
        "GENMESH_DEVICE",
        "GENMESH_ZONE",
        "GENMESH_WORKER_CAPACITY",
        "GENMESH_LOG_LEVEL",
        "GENMESH_METRICS_PORT",
        "GENMESH_ADVERTISE_ADDR",
    }
)
# What every long-running genmesh container must be given; workers also WORKER_ENV.
REQUIRED_ENV = frozenset(
    {
        "GENMESH_NATS_URL",
        "GENMESH_DATABASE_URL",
        "GENMESH_HOST",
        "GENMESH_PORT",
        "GENMESH_ROUTER_ADDR",
        "GENMESH_BILLING_ADDR",
        "GENMESH_METRICS_PORT",
        "GENMESH_MODELS_DIR",
        "GENMESH_S3_BUCKET",
        "GENMESH_S3_ACCESS_KEY_ID",
        "GENMESH_S3_SECRET_ACCESS_KEY",
        "GENMESH_API_KEY",
        "GENMESH_SIGNING_SECRET",
    }
)
WORKER_ENV = frozenset({"GENMESH_ADVERTISE_ADDR"})

# Kubernetes specifics.
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
