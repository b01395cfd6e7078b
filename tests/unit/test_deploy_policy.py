"""The deployment files are valid: Kubernetes overlays, compose files and the Dockerfile.

Overlays are rendered by deploy/tools/kustomize_lite.py (no kustomize binary needed) and checked
with kubernetes-validate (strict, pinned version), the KEDA ScaledObject schema and the mesh's
own rules; compose files against the Compose Specification schema; the Dockerfile with the
BuildKit parser. Each validator is also fed deliberately broken input and must fail.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
sys.path.insert(0, str(DEPLOY / "tools"))

import deploy_checks as checks  # noqa: E402
import kustomize_lite  # noqa: E402
from mesh_facts import SERVICE_PORTS, service_module  # noqa: E402

Objects = list[dict[str, Any]]


@pytest.fixture(scope="module")
def rendered() -> dict[str, Objects]:
    return {name: checks.render_overlay(name) for name in checks.OVERLAYS}


def find(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def container(objects: Objects, name: str) -> dict[str, Any]:
    return find(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def mesh_problems_after(
    rendered: dict[str, Objects], overlay: str, edit: Callable[[Objects], None]
) -> list[str]:
    objects = copy.deepcopy(rendered[overlay])
    edit(objects)
    spec = checks.OVERLAYS[overlay]
    return checks.mesh_problems(objects, gpu=spec.gpu, variant=spec.variant)


# ------------------------------------------------------------------ the real files are valid


@pytest.mark.parametrize("overlay", sorted(checks.OVERLAYS))
def test_overlay_objects_pass_kubernetes_and_keda_schemas(
    rendered: dict[str, Objects], overlay: str
) -> None:
    assert checks.schema_problems(rendered[overlay]) == []


@pytest.mark.parametrize("overlay", sorted(checks.OVERLAYS))
def test_overlay_keeps_the_mesh_rules(rendered: dict[str, Objects], overlay: str) -> None:
    spec = checks.OVERLAYS[overlay]
    assert checks.mesh_problems(rendered[overlay], gpu=spec.gpu, variant=spec.variant) == []


@pytest.mark.parametrize("overlay", sorted(checks.OVERLAYS))
def test_overlay_runs_every_service_from_one_image(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    services = {service_module(container(objects, s)["args"]) for s in SERVICE_PORTS}
    assert services == set(SERVICE_PORTS)
    images = {
        c["image"]
        for o in objects
        if o["kind"] in ("Deployment", "Job")
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert len(images) == 1


def test_gpu_overlay_adds_gpu_classes_on_their_own_nodes(rendered: dict[str, Objects]) -> None:
    objects = rendered["gpu"]
    a100 = find(objects, "Deployment", "imagegen-a100")["spec"]["template"]["spec"]
    h100 = find(objects, "Deployment", "llm-h100")["spec"]["template"]["spec"]
    assert a100["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert h100["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert (
        find(objects, "ScaledObject", "imagegen-a100")["spec"]["scaleTargetRef"]["name"]
        == "imagegen-a100"
    )
    # The default class keeps its own selector: the two Deployments never adopt each other's pods.
    assert (
        find(objects, "Deployment", "imagegen")["spec"]["selector"]["matchLabels"][
            "app.kubernetes.io/instance"
        ]
        == "imagegen"
    )


def test_cpu_overlay_requests_no_gpus(rendered: dict[str, Objects]) -> None:
    text = yaml.safe_dump_all(rendered["cpu"])
    assert "nvidia.com/gpu" not in text


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed"
)
@pytest.mark.parametrize("overlay", sorted(checks.OVERLAYS))
def test_renderer_output_equals_kubectl_kustomize(
    rendered: dict[str, Objects], overlay: str
) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(checks.OVERLAYS[overlay].path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout

    def key(o: dict[str, Any]) -> tuple[str, ...]:
        return (
            o["apiVersion"],
            o["kind"],
            o["metadata"].get("namespace") or "",
            o["metadata"]["name"],
        )

    reference = {key(o): o for o in yaml.safe_load_all(out) if o}
    ours = {key(o): o for o in rendered[overlay]}
    assert sorted(ours) == sorted(reference)
    for k in ours:
        assert ours[k] == reference[k], k


def test_compose_file_follows_the_compose_spec_and_mesh_rules() -> None:
    assert checks.compose_problems(checks.load_compose(checks.COMPOSE_FILE)) == []


def test_compose_gpu_override_gives_gpu_workers_gpus() -> None:
    assert checks.compose_gpu_override_problems(checks.load_compose(checks.COMPOSE_GPU_FILE)) == []


def test_dockerfile_builds_one_non_root_image_for_both_variants() -> None:
    assert checks.dockerfile_problems(checks.DOCKERFILE.read_text()) == []


def test_dockerignore_admits_what_the_image_needs() -> None:
    patterns = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in patterns  # an allowlist: nothing unlisted reaches the build context
    for needed in ("pyproject.toml", "setup.py", "genmesh/", "services/", "deploy/healthcheck.py"):
        assert f"!{needed}" in patterns


def test_command_line_reports_every_file_ok() -> None:
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "tools" / "deploy_checks.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ broken input must fail


def test_schema_rejects_a_wrongly_typed_field(rendered: dict[str, Objects]) -> None:
    router = copy.deepcopy(find(rendered["cpu"], "Deployment", "router"))
    router["spec"]["replicas"] = "two"
    assert any("spec/replicas" in p for p in checks.schema_problems([router]))


def test_schema_rejects_an_unknown_field(rendered: dict[str, Objects]) -> None:
    router = copy.deepcopy(find(rendered["cpu"], "Deployment", "router"))
    router["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grcp"] = {"port": 50051}
    assert any("'grcp' was unexpected" in p for p in checks.schema_problems([router]))


def test_schema_rejects_a_kind_it_does_not_know() -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert checks.schema_problems([widget]) == [
        f"Widget/w: no schema for example.com/v1 Widget in Kubernetes {checks.KUBERNETES_VERSION}"
    ]


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda so: so["spec"].pop("scaleTargetRef"), "'scaleTargetRef' is a required property"),
        (
            lambda so: so["spec"]["triggers"][0]["metadata"].pop("consumer"),
            "'consumer' is a required property",
        ),
        (
            lambda so: so["spec"]["triggers"][0]["metadata"].update(lagTreshold="4"),
            "'lagTreshold' was unexpected",
        ),
        (
            lambda so: so["spec"]["triggers"][0]["metadata"].update(lagThreshold=4),
            "4 is not of type 'string'",
        ),
        (lambda so: so["spec"].update(minReplicaCount=-1), "-1 is less than the minimum of 0"),
    ],
    ids=["no-target", "no-consumer", "typo-key", "number-not-string", "negative-min"],
)
def test_keda_schema_rejects_broken_scaled_objects(
    rendered: dict[str, Objects], edit: Callable, expected: str
) -> None:
    scaled_object = copy.deepcopy(find(rendered["cpu"], "ScaledObject", "imagegen"))
    edit(scaled_object)
    assert any(expected in p for p in checks.schema_problems([scaled_object]))


def _drop_readiness(objects: Objects) -> None:
    container(objects, "billing").pop("readinessProbe")


def _wrong_secret_key(objects: Objects) -> None:
    postgres = find(objects, "StatefulSet", "postgres")
    postgres["spec"]["template"]["spec"]["containers"][0]["env"][2]["valueFrom"]["secretKeyRef"][
        "key"
    ] = "PASSWORD"


def _second_image(objects: Objects) -> None:
    container(objects, "audio")["image"] = "genmesh:other-cpu"


def _unknown_module(objects: Objects) -> None:
    container(objects, "apps")["args"] = ["python", "-m", "genmesh.services.appz"]


def _llm_to_zero(objects: Objects) -> None:
    find(objects, "ScaledObject", "llm")["spec"]["minReplicaCount"] = 0


def _wrong_consumer(objects: Objects) -> None:
    find(objects, "ScaledObject", "videogen")["spec"]["triggers"][1]["metadata"]["consumer"] = (
        "queue-videogen-normal"
    )


def _router_open_to_world(objects: Objects) -> None:
    objects.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "oops"},
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "router"}},
                "policyTypes": ["Ingress"],
                "ingress": [{}],
            },
        }
    )


def _single_router(objects: Objects) -> None:
    find(objects, "Deployment", "router")["spec"]["replicas"] = 1


def _typo_setting(objects: Objects) -> None:
    container(objects, "edge")["env"].append({"name": "GENMESH_PUBLIC_ULR", "value": "https://x"})


def _advertise_service_name(objects: Objects) -> None:
    env = container(objects, "echo")["env"]
    next(e for e in env if e["name"] == "GENMESH_ADVERTISE_ADDR")["value"] = "echo:50060"


def _service_port_mismatch(objects: Objects) -> None:
    find(objects, "Service", "billing")["spec"]["ports"][0]["targetPort"] = "grpcs"


def _worker_replicas(objects: Objects) -> None:
    find(objects, "Deployment", "audio")["spec"]["replicas"] = 2


def _no_budget(objects: Objects) -> None:
    objects.remove(find(objects, "PodDisruptionBudget", "edge"))


def _bad_quantity(objects: Objects) -> None:
    container(objects, "router")["resources"]["requests"]["memory"] = "8 gigs"


@pytest.mark.parametrize(
    "edit, expected",
    [
        (_drop_readiness, "Deployment/billing container billing: no readinessProbe"),
        (_wrong_secret_key, "missing key 'PASSWORD' of Secret"),
        (_second_image, "genmesh containers use 2 images"),
        (_unknown_module, "unknown service module genmesh.services.appz"),
        (_llm_to_zero, "llm must keep at least one replica"),
        (_wrong_consumer, "expected ['queue-videogen-low', 'queue-videogen-normal']"),
        (
            _router_open_to_world,
            "NetworkPolicy/oops: admits traffic from outside the mesh to pods other than the edge",
        ),
        (_single_router, "the router needs at least 2 replicas"),
        (_typo_setting, "unknown setting GENMESH_PUBLIC_ULR"),
        (_advertise_service_name, "GENMESH_ADVERTISE_ADDR must be $(POD_IP):50060"),
        (_service_port_mismatch, "Service/billing: targetPort 'grpcs'"),
        (_worker_replicas, "Deployment/audio: sets spec.replicas, which fights ScaledObject/audio"),
        (_no_budget, "Deployment/edge: covered by 0 PodDisruptionBudgets"),
        (_bad_quantity, "'8 gigs' is not a quantity"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_mesh_rules_reject_broken_cpu_manifests(
    rendered: dict[str, Objects], edit: Callable, expected: str
) -> None:
    problems = mesh_problems_after(rendered, "cpu", edit)
    assert any(expected in p for p in problems), problems


def _gpu_worker_anywhere(objects: Objects) -> None:
    find(objects, "Deployment", "videogen")["spec"]["template"]["spec"].pop("nodeSelector")


def _gpu_for_echo(objects: Objects) -> None:
    container(objects, "echo")["resources"]["limits"]["nvidia.com/gpu"] = 1


def test_mesh_rules_reject_gpu_workers_without_a_class_or_gpus_for_cpu_services(
    rendered: dict[str, Objects],
) -> None:
    assert any(
        "Deployment/videogen: GPU worker without a nvidia.com/gpu.product nodeSelector" in p
        for p in mesh_problems_after(rendered, "gpu", _gpu_worker_anywhere)
    )
    assert any(
        "Deployment/echo: requests nvidia.com/gpu" in p
        for p in mesh_problems_after(rendered, "gpu", _gpu_for_echo)
    )


@pytest.mark.parametrize(
    "path, old, new, expected",
    [
        (
            "k8s/base/postgres.yaml",
            "key: POSTGRES_PASSWORD",
            "key: POSTGRES_PASS",
            "missing key 'POSTGRES_PASS' of Secret",
        ),
        (
            "k8s/base/router.yaml",
            "replicas: 2",
            'replicas: "2"',
            "spec/replicas: '2' is not of type 'integer'",
        ),
        (
            "k8s/base/workers/llm.yaml",
            "minReplicaCount: 1",
            "minReplicaCount: 0",
            "llm must keep at least one replica",
        ),
        (
            "k8s/base/config.env",
            "GENMESH_NATS_URL=",
            "GENMESH_NATS_URI=",
            "unknown setting GENMESH_NATS_URI",
        ),
    ],
    ids=["secret-key", "replicas-type", "llm-min", "config-typo"],
)
def test_a_broken_manifest_file_fails_validation(
    tmp_path: Path, path: str, old: str, new: str, expected: str
) -> None:
    shutil.copytree(DEPLOY / "k8s", tmp_path / "k8s")
    broken = tmp_path / path
    assert old in broken.read_text()
    broken.write_text(broken.read_text().replace(old, new, 1))
    objects = kustomize_lite.render(tmp_path / "k8s" / "overlays" / "cpu")
    problems = checks.schema_problems(objects) + checks.mesh_problems(
        objects, gpu=False, variant="cpu"
    )
    assert any(expected in p for p in problems), problems


def _compose() -> dict[str, Any]:
    return checks.load_compose(checks.COMPOSE_FILE)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda c: c["services"]["edge"]["depends_on"]["router"].update(
                condition="service_ready"
            ),
            "'service_ready' is not one of",
        ),
        (lambda c: c["services"]["router"].update(healtcheck={}), "'healtcheck' was unexpected"),
        (
            lambda c: c["services"]["billing"].pop("healthcheck"),
            "waits for billing to be healthy, but billing has no healthcheck",
        ),
        (
            lambda c: c["services"]["llm"].update(image="genmesh:other"),
            "genmesh services use 2 images",
        ),
        (
            lambda c: c["services"]["audio"].update(
                command=["python", "-m", "genmesh.services.sound"]
            ),
            "unknown service module genmesh.services.sound",
        ),
        (
            lambda c: c["services"]["imagegen"]["environment"].pop("GENMESH_ADVERTISE_ADDR"),
            "GENMESH_ADVERTISE_ADDR is not set",
        ),
        (lambda c: c.pop("volumes"), "named volume 'models' is not declared"),
        (
            lambda c: c["services"]["router"]["depends_on"].update(
                queue={"condition": "service_healthy"}
            ),
            "depends on missing service 'queue'",
        ),
    ],
    ids=[
        "bad-condition",
        "unknown-key",
        "unhealthy-dependency",
        "second-image",
        "unknown-module",
        "no-advertise",
        "undeclared-volume",
        "missing-dependency",
    ],
)
def test_compose_checks_reject_broken_files(edit: Callable, expected: str) -> None:
    document = _compose()
    edit(document)
    problems = checks.compose_problems(document)
    assert any(expected in p for p in problems), problems


def test_compose_gpu_override_check_rejects_a_worker_without_a_gpu() -> None:
    document = checks.load_compose(checks.COMPOSE_GPU_FILE)
    document["services"]["llm"] = {"image": document["services"]["llm"]["image"]}
    assert any(
        "service llm: reserves no GPU device" in p
        for p in checks.compose_gpu_override_problems(document)
    )


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("USER 10001:10001", "USER root", "must run as a non-root USER"),
        (
            'CMD ["python", "-m", "genmesh.services.router"]',
            "CMD python -m genmesh.services.router",
            "CMD must be the JSON form",
        ),
        (
            "FROM toolchain-${VARIANT} AS builder",
            "FROM toolkit-${VARIANT} AS builder",
            "no such stage (VARIANT=cpu)",
        ),
        ("COPY --from=builder", "COPY --from=build", "--from=build names no stage"),
        ("ARG VARIANT=cpu", "ARG VARIANT=tpu", "needs `ARG VARIANT=cpu`"),
        ("WORKDIR /home/genmesh", "RUN <<EOF\necho unterminated", "does not parse"),
        ("WORKDIR /home/genmesh", "WORKDIRR /home/genmesh", "unknown instruction WORKDIRR"),
        ("WORKDIR /home/genmesh", "WORKDIR", "WORKDIR without arguments"),
    ],
    ids=[
        "root",
        "shell-cmd",
        "missing-stage",
        "copy-from",
        "variant",
        "heredoc",
        "unknown-instruction",
        "no-arguments",
    ],
)
def test_dockerfile_check_rejects_broken_dockerfiles(old: str, new: str, expected: str) -> None:
    text = checks.DOCKERFILE.read_text()
    assert old in text
    problems = checks.dockerfile_problems(text.replace(old, new, 1))
    assert any(expected in p for p in problems), problems
