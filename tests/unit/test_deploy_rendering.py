"""The overlays render with the real `kubectl kustomize` (kubectl v1.35.2, kustomize v5.7.1, taken
from the kubectl layer package on PyPI), into what the cluster is meant to get; a broken
kustomization fails with kustomize's own error."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy_support import DEPLOY, Objects, checks, find, pod_spec, render_all

from binaries import binary  # noqa: E402 - importable once deploy_support ran
from mesh_facts import SERVICE_PORTS, TLS_SECRET, service_module  # noqa: E402


@pytest.fixture(scope="module")
def rendered() -> dict[str, Objects]:
    return render_all()


def test_kubectl_comes_from_the_layer_package_with_kustomize_5_7() -> None:
    out = subprocess.run(
        [str(binary("kubectl")), "version", "--client"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "Client Version: v1.35.2" in out and "Kustomize Version: v5.7.1" in out


def test_generated_config_names_carry_a_content_hash_and_every_reference_follows(
    rendered: dict[str, Objects],
) -> None:
    objects = rendered["cpu"]
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    secret = next(o for o in objects if o["kind"] == "Secret" and "genmesh-secrets" in o["metadata"]["name"])
    assert config["metadata"]["name"].startswith("genmesh-config-")
    assert config["data"]["GENMESH_DEVICE"] == "cpu"  # the overlay's merge into the base generator
    router = pod_spec(objects, "router")["containers"][0]
    assert [s.get("configMapRef", s.get("secretRef"))["name"] for s in router["envFrom"]] == [
        config["metadata"]["name"],
        secret["metadata"]["name"],
    ]
    echo_env = {e["name"]: e for e in pod_spec(objects, "echo")["containers"][0]["env"]}
    ref = echo_env["GENMESH_S3_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    # The operator's TLS Secret is not generated, so its name is left as written.
    tls = next(v for v in pod_spec(objects, "echo")["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == TLS_SECRET


@pytest.mark.parametrize("overlay", sorted(checks.OVERLAYS))
def test_every_object_lands_in_the_namespace_with_the_part_of_label(
    rendered: dict[str, Objects], overlay: str
) -> None:
    for obj in rendered[overlay]:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "genmesh", obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "genmesh"


@pytest.mark.parametrize("overlay", sorted(checks.OVERLAYS))
def test_overlay_runs_every_service_from_its_variants_image(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    assert {service_module(pod_spec(objects, s)["containers"][0]["args"]) for s in SERVICE_PORTS} == set(
        SERVICE_PORTS
    )
    images = {
        c["image"]
        for o in objects
        if o["kind"] in ("Deployment", "Job")
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert images == {f"ghcr.io/example/genmesh:0.1.0-{checks.OVERLAYS[overlay].variant}"}


def test_gpu_overlay_patches_default_classes_and_adds_classes_on_their_own_nodes(
    rendered: dict[str, Objects],
) -> None:
    objects = rendered["gpu"]
    assert pod_spec(objects, "imagegen")["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    imagegen_env = {e["name"]: e.get("value") for e in pod_spec(objects, "imagegen")["containers"][0]["env"]}
    assert imagegen_env["GENMESH_DEVICE"] == "cuda"  # merged by name into the base's env
    assert imagegen_env["GENMESH_TLS_CERT_FILE"] == "/etc/genmesh/tls/imagegen.crt"
    assert pod_spec(objects, "imagegen-a100")["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"
    }
    assert pod_spec(objects, "llm-h100")["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"
    }
    assert find(objects, "ScaledObject", "imagegen-a100")["spec"]["scaleTargetRef"]["name"] == "imagegen-a100"
    # The default class keeps its own selector: the two Deployments never adopt each other's pods.
    selector = find(objects, "Deployment", "imagegen")["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/instance"] == "imagegen"


def test_cpu_overlay_requests_no_gpus(rendered: dict[str, Objects]) -> None:
    assert "nvidia.com/gpu" not in yaml.safe_dump_all(rendered["cpu"])


def _copy_k8s(tmp_path: Path) -> Path:
    shutil.copytree(DEPLOY / "k8s", tmp_path / "k8s")
    return tmp_path / "k8s"


def test_a_missing_resource_fails_with_kustomizes_error(tmp_path: Path) -> None:
    k8s = _copy_k8s(tmp_path)
    (k8s / "base" / "workers" / "audio.yaml").unlink()
    with pytest.raises(checks.KustomizeFailed, match="audio.yaml"):
        checks.kustomize(k8s / "overlays" / "cpu")


def test_a_patch_naming_no_object_fails_with_kustomizes_error(tmp_path: Path) -> None:
    k8s = _copy_k8s(tmp_path)
    patch = k8s / "overlays" / "gpu" / "patches" / "gpu-workers.yaml"
    patch.write_text(patch.read_text().replace("name: videogen", "name: videogem", 1))
    with pytest.raises(checks.KustomizeFailed, match="videogem"):
        checks.kustomize(k8s / "overlays" / "gpu")


def test_a_merge_into_a_generator_the_base_lacks_fails(tmp_path: Path) -> None:
    k8s = _copy_k8s(tmp_path)
    overlay = k8s / "overlays" / "cpu" / "kustomization.yaml"
    overlay.write_text(overlay.read_text().replace("name: genmesh-config", "name: genmesh-cfg", 1))
    with pytest.raises(checks.KustomizeFailed, match="genmesh-cfg"):
        checks.kustomize(k8s / "overlays" / "cpu")
