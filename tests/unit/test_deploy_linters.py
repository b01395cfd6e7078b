"""The rendered overlays and the Dockerfile pass the maintained linters, and the linters catch
broken ones: kubernetes-validate (strict, Kubernetes 1.31), the KEDA ScaledObject schema, and
checkov's Kubernetes and Dockerfile checks (configured by deploy/checkov.yaml)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy_support import Objects, checks, find, render_all


@pytest.fixture(scope="module")
def rendered() -> dict[str, Objects]:
    return render_all()


def container(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]["containers"][0]


# ------------------------------------------------------------------ schemas


@pytest.mark.parametrize("overlay", sorted(checks.OVERLAYS))
def test_overlay_objects_pass_kubernetes_and_keda_schemas(
    rendered: dict[str, Objects], overlay: str
) -> None:
    assert checks.schema_problems(rendered[overlay]) == []


def test_schema_rejects_a_wrongly_typed_field(rendered: dict[str, Objects]) -> None:
    router = copy.deepcopy(find(rendered["cpu"], "Deployment", "router"))
    router["spec"]["replicas"] = "two"
    assert any("spec/replicas" in p for p in checks.schema_problems([router]))


def test_schema_rejects_an_unknown_field(rendered: dict[str, Objects]) -> None:
    router = copy.deepcopy(find(rendered["cpu"], "Deployment", "router"))
    container(router)["readinessProbe"]["grcp"] = {"port": 50051}
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


# ------------------------------------------------------------------ checkov


# That the real overlays and Dockerfile pass checkov is asserted by
# test_deploy_compose_and_dockerfile.py's command-line test, which runs every check once
# (checkov takes seconds to start, so it is not run twice on the same files).


def _root_pod(objects: Objects) -> None:
    spec = find(objects, "Deployment", "apps")["spec"]["template"]["spec"]
    spec["securityContext"].update(runAsNonRoot=False, runAsUser=0)


def _writable_root(objects: Objects) -> None:
    container(find(objects, "Deployment", "apps"))["securityContext"]["readOnlyRootFilesystem"] = False


def _capabilities_kept(objects: Objects) -> None:
    container(find(objects, "Deployment", "echo"))["securityContext"].pop("capabilities")


def _no_seccomp(objects: Objects) -> None:
    find(objects, "Deployment", "billing")["spec"]["template"]["spec"]["securityContext"].pop(
        "seccompProfile"
    )


def _service_account_token(objects: Objects) -> None:
    find(objects, "Deployment", "router")["spec"]["template"]["spec"].pop(
        "automountServiceAccountToken"
    )


def _no_readiness_probe(objects: Objects) -> None:
    container(find(objects, "Deployment", "llm")).pop("readinessProbe")


def _no_memory_request(objects: Objects) -> None:
    container(find(objects, "Deployment", "audio"))["resources"]["requests"].pop("memory")


# Each broken copy goes into one checkov run (it takes seconds to start), under its own name.
BROKEN_MANIFESTS: dict[str, tuple[Callable[[Objects], None], str, str]] = {
    "root-pod": (_root_pod, "Deployment.genmesh.apps", "CKV_K8S_23"),
    "writable-root": (_writable_root, "Deployment.genmesh.apps", "CKV_K8S_22"),
    "capabilities-kept": (_capabilities_kept, "Deployment.genmesh.echo", "CKV_K8S_37"),
    "no-seccomp": (_no_seccomp, "Deployment.genmesh.billing", "CKV_K8S_31"),
    "service-account-token": (_service_account_token, "Deployment.genmesh.router", "CKV_K8S_38"),
    "no-readiness-probe": (_no_readiness_probe, "Deployment.genmesh.llm", "CKV_K8S_9"),
    "no-memory-request": (_no_memory_request, "Deployment.genmesh.audio", "CKV_K8S_12"),
}
BROKEN_DOCKERFILES = {"root-user": ("USER 10001:10001", "USER root", "CKV_DOCKER_8")}


@pytest.fixture(scope="module")
def checkov_on_broken_files(rendered: dict[str, Objects]) -> list[str]:
    manifests = {}
    for name, (edit, _, _) in BROKEN_MANIFESTS.items():
        objects = copy.deepcopy(rendered["cpu"])
        edit(objects)
        manifests[name] = objects
    dockerfiles = {
        name: checks.DOCKERFILE.read_text().replace(old, new, 1)
        for name, (old, new, _) in BROKEN_DOCKERFILES.items()
    }
    return checks.checkov_problems(manifests, dockerfiles)


@pytest.mark.parametrize("case", sorted(BROKEN_MANIFESTS))
def test_checkov_rejects_an_insecure_pod(checkov_on_broken_files: list[str], case: str) -> None:
    _, resource, check = BROKEN_MANIFESTS[case]
    mine = [p for p in checkov_on_broken_files if p.startswith(f"{case}.yaml:")]
    # The edited object fails that check (and only that object fails anything).
    assert any(f": {resource}: {check} " in p for p in mine), mine
    assert all(f": {resource}: " in p for p in mine), mine


def test_checkov_rejects_a_dockerfile_running_as_root(checkov_on_broken_files: list[str]) -> None:
    mine = [p for p in checkov_on_broken_files if p.startswith("root-user/")]
    assert mine and all("CKV_DOCKER_8" in p for p in mine), mine
