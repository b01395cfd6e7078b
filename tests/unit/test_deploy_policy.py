"""genmesh's own rules for its rendered Kubernetes overlays (deploy/tools/k8s_policy.py): the real
overlays keep them, and each rule rejects a manifest broken the way it guards against."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_support import DEPLOY, Objects, checks, find, pod_spec, render_all

from mesh_facts import known_settings  # noqa: E402 - importable once deploy_support ran


@pytest.fixture(scope="module")
def rendered() -> dict[str, Objects]:
    return render_all()


def container(objects: Objects, name: str) -> dict[str, Any]:
    return pod_spec(objects, name)["containers"][0]


def env(objects: Objects, name: str) -> list[dict[str, Any]]:
    return container(objects, name)["env"]


def problems_after(rendered: dict[str, Objects], overlay: str, edit: Callable[[Objects], None]) -> list[str]:
    objects = copy.deepcopy(rendered[overlay])
    edit(objects)
    spec = checks.OVERLAYS[overlay]
    return checks.mesh_problems(objects, gpu=spec.gpu, variant=spec.variant)


@pytest.mark.parametrize("overlay", sorted(checks.OVERLAYS))
def test_overlay_keeps_the_mesh_rules(rendered: dict[str, Objects], overlay: str) -> None:
    spec = checks.OVERLAYS[overlay]
    assert checks.mesh_problems(rendered[overlay], gpu=spec.gpu, variant=spec.variant) == []


def test_known_settings_are_the_fields_of_genmesh_settings() -> None:
    known = known_settings()
    # The ones the old hand-kept list called typos are settings like any other.
    assert {"GENMESH_TLS_CA_FILE", "GENMESH_HEALTH_PORT", "GENMESH_WORKER_CAPACITY"} <= known
    assert "GENMESH_PUBLIC_ULR" not in known


def test_every_service_reads_its_own_certificate_from_the_tls_secret(
    rendered: dict[str, Objects],
) -> None:
    for name in ("router", "billing", "edge", "apps", "llm-h100"):
        service = "llm" if name == "llm-h100" else name
        values = {e["name"]: e.get("value") for e in env(rendered["gpu"], name)}
        assert values["GENMESH_TLS_CERT_FILE"] == f"/etc/genmesh/tls/{service}.crt"
        tls = next(v for v in pod_spec(rendered["gpu"], name)["volumes"] if v["name"] == "tls")
        assert [i["key"] for i in tls["secret"]["items"]] == [
            "ca.crt",
            f"{service}.crt",
            f"{service}.key",
        ]


# ------------------------------------------------------------------ broken manifests


def _drop(name: str, setting: str) -> Callable[[Objects], None]:
    def edit(objects: Objects) -> None:
        container(objects, name)["env"] = [e for e in env(objects, name) if e["name"] != setting]

    return edit


def _set(name: str, setting: str, value: str) -> Callable[[Objects], None]:
    def edit(objects: Objects) -> None:
        next(e for e in env(objects, name) if e["name"] == setting)["value"] = value

    return edit


def _wrong_secret_key(objects: Objects) -> None:
    postgres = find(objects, "StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0]
    next(e for e in postgres["env"] if e["name"] == "POSTGRES_PASSWORD")["valueFrom"]["secretKeyRef"][
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


def _policy(name: str, spec: dict[str, Any]) -> Callable[[Objects], None]:
    def edit(objects: Objects) -> None:
        objects.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": "genmesh"},
                "spec": spec,
            }
        )

    return edit


def _single_router(objects: Objects) -> None:
    find(objects, "Deployment", "router")["spec"]["replicas"] = 1


def _typo_setting(objects: Objects) -> None:
    env(objects, "edge").append({"name": "GENMESH_PUBLIC_ULR", "value": "https://x"})


def _service_port_mismatch(objects: Objects) -> None:
    find(objects, "Service", "billing")["spec"]["ports"][0]["targetPort"] = "grpcs"


def _worker_replicas(objects: Objects) -> None:
    find(objects, "Deployment", "audio")["spec"]["replicas"] = 2


def _no_budget(objects: Objects) -> None:
    objects.remove(find(objects, "PodDisruptionBudget", "edge"))


def _bad_quantity(objects: Objects) -> None:
    container(objects, "router")["resources"]["requests"]["memory"] = "8 gigs"


def _worker_with_database(objects: Objects) -> None:
    env(objects, "apps").append({"name": "GENMESH_DATABASE_URL", "value": "postgresql://x"})


def _probe_on_mtls_port(objects: Objects) -> None:
    container(objects, "billing")["readinessProbe"]["grpc"]["port"] = 50052


def _every_tls_key(objects: Objects) -> None:
    tls = next(v for v in pod_spec(objects, "echo")["volumes"] if v["name"] == "tls")
    tls["secret"].pop("items")


def _no_tls_mount(objects: Objects) -> None:
    c = container(objects, "router")
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != "tls"]


def _no_apps_egress(objects: Objects) -> None:
    objects.remove(find(objects, "NetworkPolicy", "apps-egress"))


def _apps_egress_to_postgres(objects: Objects) -> None:
    rules = find(objects, "NetworkPolicy", "apps-egress")["spec"]["egress"]
    rules.append({"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgres"}}}]})


def _apps_egress_to_cluster_range(objects: Objects) -> None:
    rules = find(objects, "NetworkPolicy", "apps-egress")["spec"]["egress"]
    rules[-1]["to"][0]["ipBlock"]["except"].remove("10.0.0.0/8")


MESH = {"matchLabels": {"app.kubernetes.io/part-of": "genmesh"}}


@pytest.mark.parametrize(
    "edit, expected",
    [
        (_wrong_secret_key, "missing key 'PASSWORD' of Secret"),
        (_second_image, "genmesh containers use 2 images"),
        (_unknown_module, "unknown service module genmesh.services.appz"),
        (_llm_to_zero, "llm must keep at least one replica"),
        (_wrong_consumer, "expected ['queue-videogen-low', 'queue-videogen-normal']"),
        (
            _policy(
                "oops",
                {
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "router"}},
                    "policyTypes": ["Ingress"],
                    "ingress": [{}],
                },
            ),
            "NetworkPolicy/oops: admits traffic from outside the mesh to pods other than the edge",
        ),
        (
            _policy(
                "mesh-to-workers",
                {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": MESH}]}]},
            ),
            "NetworkPolicy/mesh-to-workers: admits {'podSelector': {'matchLabels': "
            "{'app.kubernetes.io/part-of': 'genmesh'}}} to Deployment/echo; a worker serves the router alone",
        ),
        (_single_router, "the router needs at least 2 replicas"),
        (_typo_setting, "unknown setting GENMESH_PUBLIC_ULR"),
        (
            _set("echo", "GENMESH_ADVERTISE_ADDR", "echo:50060"),
            "GENMESH_ADVERTISE_ADDR must be $(POD_IP):50060",
        ),
        (_service_port_mismatch, "Service/billing: targetPort 'grpcs'"),
        (_worker_replicas, "Deployment/audio: sets spec.replicas, which fights ScaledObject/audio"),
        (_no_budget, "Deployment/edge: covered by 0 PodDisruptionBudgets"),
        (_bad_quantity, "'8 gigs' is not a quantity"),
        (_drop("router", "GENMESH_TLS_KEY_FILE"), "GENMESH_TLS_KEY_FILE is not set"),
        (
            _set("llm", "GENMESH_TLS_CERT_FILE", "/etc/genmesh/tls/router.crt"),
            "GENMESH_TLS_CERT_FILE must be /etc/genmesh/tls/llm.crt",
        ),
        (_every_tls_key, "the genmesh-tls volume must project exactly ['ca.crt', 'echo.crt', 'echo.key']"),
        (_no_tls_mount, "Deployment/router container router: must mount Secret genmesh-tls"),
        (_worker_with_database, "a worker must not be given GENMESH_DATABASE_URL"),
        (_probe_on_mtls_port, "readinessProbe must be a gRPC health probe on port 9091"),
        (_drop("audio", "GENMESH_HEALTH_PORT"), "GENMESH_HEALTH_PORT must be 9091"),
        (_no_apps_egress, "Deployment/apps: no egress NetworkPolicy"),
        (_apps_egress_to_postgres, "lets Deployment/apps reach pods ['postgres']"),
        (_apps_egress_to_cluster_range, "lets Deployment/apps reach the private range 10.0.0.0/8"),
    ],
    ids=lambda v: getattr(v, "__name__", None) if callable(v) else None,
)
def test_mesh_rules_reject_broken_cpu_manifests(
    rendered: dict[str, Objects], edit: Callable, expected: str
) -> None:
    problems = problems_after(rendered, "cpu", edit)
    assert any(expected in p for p in problems), problems


def _gpu_worker_anywhere(objects: Objects) -> None:
    pod_spec(objects, "videogen").pop("nodeSelector")


def _gpu_for_echo(objects: Objects) -> None:
    container(objects, "echo")["resources"]["limits"]["nvidia.com/gpu"] = 1


def test_mesh_rules_reject_gpu_workers_without_a_class_or_gpus_for_cpu_services(
    rendered: dict[str, Objects],
) -> None:
    assert any(
        "Deployment/videogen: GPU worker without a nvidia.com/gpu.product nodeSelector" in p
        for p in problems_after(rendered, "gpu", _gpu_worker_anywhere)
    )
    assert any(
        "Deployment/echo: requests nvidia.com/gpu" in p
        for p in problems_after(rendered, "gpu", _gpu_for_echo)
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
    objects = checks.kustomize(tmp_path / "k8s" / "overlays" / "cpu")
    problems = checks.schema_problems(objects) + checks.mesh_problems(objects, gpu=False, variant="cpu")
    assert any(expected in p for p in problems), problems


def test_a_cert_manager_projected_volume_of_the_services_own_secret_is_accepted(
    rendered: dict[str, Objects],
) -> None:
    def projected(objects: Objects) -> None:
        tls = next(v for v in pod_spec(objects, "billing")["volumes"] if v["name"] == "tls")
        tls.pop("secret")
        items = [("ca.crt", "ca.crt"), ("tls.crt", "billing.crt"), ("tls.key", "billing.key")]
        tls["projected"] = {
            "sources": [
                {
                    "secret": {
                        "name": "genmesh-tls-billing",
                        "items": [{"key": k, "path": p} for k, p in items],
                    }
                }
            ]
        }

    assert problems_after(rendered, "cpu", projected) == []
