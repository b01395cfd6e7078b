"""deploy/tools/kustomize_lite.py renders its kustomize subset as kustomize does; refuses the rest.

Expected names and orders below were produced by `kubectl kustomize` (kustomize v5.5.0).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "tools"))

from kustomize_lite import KustomizeError, UnsupportedKustomization, render  # noqa: E402

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: main
          image: registry.local/web:1.0
          envFrom: [{configMapRef: {name: settings}}]
          env:
            - {name: A, value: "1"}
            - {name: B, value: "2"}
            - name: PASSWORD
              valueFrom: {secretKeyRef: {name: credentials, key: PASSWORD}}
          ports: [{containerPort: 80}]
        - name: sidecar
          image: busybox
"""


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind)


def test_generated_names_carry_kustomizes_content_hash_and_references_follow(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        {
            "deployment.yaml": DEPLOYMENT,
            "kustomization.yaml": """
resources: [deployment.yaml]
namespace: ns
configMapGenerator:
  - name: settings
    literals: [K=V, "Q='quoted'"]
secretGenerator:
  - name: credentials
    literals: [K=V]
""",
        },
    )
    objects = render(tmp_path)
    config, secret, deployment = (
        by_kind(objects, "ConfigMap"),
        by_kind(objects, "Secret"),
        by_kind(objects, "Deployment"),
    )
    assert config["metadata"] == {"name": "settings-hbmg6h7hbg", "namespace": "ns"}
    assert config["data"] == {"K": "V", "Q": "quoted"}
    assert secret["metadata"]["name"] == "credentials-796dfdb847"
    assert secret["type"] == "Opaque" and secret["data"] == {"K": "Vg=="}
    main = deployment["spec"]["template"]["spec"]["containers"][0]
    assert main["envFrom"][0]["configMapRef"]["name"] == "settings-hbmg6h7hbg"
    assert main["env"][2]["valueFrom"]["secretKeyRef"]["name"] == "credentials-796dfdb847"
    assert deployment["metadata"]["namespace"] == "ns"


def test_long_secret_values_are_wrapped_like_kustomize(tmp_path: Path) -> None:
    value = "postgresql://genmesh:change-me@postgres:5432/genmesh"
    write(
        tmp_path,
        {"kustomization.yaml": f"secretGenerator:\n  - name: s\n    literals: [URL={value}]\n"},
    )
    data = by_kind(render(tmp_path), "Secret")["data"]["URL"]
    assert data == "cG9zdGdyZXNxbDovL2dlbm1lc2g6Y2hhbmdlLW1lQHBvc3RncmVzOjU0MzIvZ2VubWVzaA\n==\n"


def test_strategic_merge_puts_patch_items_first_and_merges_by_key(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "deployment.yaml": DEPLOYMENT,
            "patch.yaml": """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      nodeSelector: {gpu: a100}
      containers:
        - name: extra
          image: z
        - name: main
          env: [{name: N1, value: n1}, {name: B, value: two}]
          ports: [{containerPort: 90}]
          resources: {limits: {nvidia.com/gpu: 1}}
""",
            "kustomization.yaml": "resources: [deployment.yaml]\npatches: [{path: patch.yaml}]\n",
        },
    )
    spec = by_kind(render(tmp_path), "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["extra", "main", "sidecar"]
    main = spec["containers"][1]
    assert [(e["name"], e.get("value")) for e in main["env"]] == [
        ("N1", "n1"),
        ("B", "two"),
        ("A", "1"),
        ("PASSWORD", None),
    ]
    assert [p["containerPort"] for p in main["ports"]] == [90, 80]
    assert main["image"] == "registry.local/web:1.0"
    assert main["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert spec["nodeSelector"] == {"gpu": "a100"}


def test_overlay_merges_into_a_base_generator_and_sets_images_and_template_labels(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        {
            "base/deployment.yaml": DEPLOYMENT,
            "base/config.env": "# comment\nK=V\n  INDENTED=x\nEMPTY=\n",
            "base/kustomization.yaml": """
resources: [deployment.yaml]
configMapGenerator: [{name: settings, envs: [config.env]}]
labels: [{pairs: {part-of: mesh}, includeTemplates: true}]
""",
            "overlay/kustomization.yaml": """
resources: [../base]
images: [{name: registry.local/web, newName: ghcr.io/x/web, newTag: "2.0"}]
configMapGenerator: [{name: settings, behavior: merge, literals: [K=W, NEW=1]}]
""",
        },
    )
    objects = render(tmp_path / "overlay")
    config, deployment = by_kind(objects, "ConfigMap"), by_kind(objects, "Deployment")
    assert config["data"] == {"K": "W", "INDENTED": "x", "EMPTY": "", "NEW": "1"}
    assert config["metadata"]["labels"] == {"part-of": "mesh"}
    assert deployment["spec"]["template"]["metadata"]["labels"] == {"app": "web", "part-of": "mesh"}
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": "web"}
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == ["ghcr.io/x/web:2.0", "busybox"]
    ref = containers[0]["envFrom"][0]["configMapRef"]["name"]
    assert ref == config["metadata"]["name"] and ref.startswith("settings-")


@pytest.mark.parametrize(
    "kustomization, error",
    [
        ("resources: [deployment.yaml]\nnamePrefix: x-\n", UnsupportedKustomization),
        ("resources: [deployment.yaml]\ncommonLabels: {a: b}\n", UnsupportedKustomization),
        (
            "resources: [deployment.yaml]\nlabels: [{pairs: {a: b}, includeSelectors: true}]\n",
            UnsupportedKustomization,
        ),
        (
            "resources: [deployment.yaml]\npatches: [{path: p.yaml, target: {kind: Deployment}}]\n",
            UnsupportedKustomization,
        ),
        (
            "resources: [deployment.yaml]\nconfigMapGenerator: [{name: c, files: [p.yaml]}]\n",
            UnsupportedKustomization,
        ),
        (
            "resources: [deployment.yaml]\nconfigMapGenerator: [{name: c, envs: [from-env.env]}]\n",
            UnsupportedKustomization,
        ),
        ("resources: [deployment.yaml]\npatches: [{path: missing-target.yaml}]\n", KustomizeError),
        ("resources: [deployment.yaml, nowhere.yaml]\n", KustomizeError),
        ("resources: [deployment.yaml, deployment.yaml]\n", KustomizeError),
        (
            "resources: [deployment.yaml]\n"
            "configMapGenerator: [{name: c, behavior: merge, literals: [A=1]}]\n",
            KustomizeError,
        ),
        (
            "resources: [deployment.yaml]\npatches: [{path: directive.yaml}]\n",
            UnsupportedKustomization,
        ),
    ],
    ids=[
        "namePrefix",
        "commonLabels",
        "includeSelectors",
        "patch-target",
        "generator-files",
        "env-from-environment",
        "missing-patch-target",
        "missing-resource",
        "duplicate",
        "merge-without-base",
        "patch-directive",
    ],
)
def test_refuses_what_it_cannot_render_faithfully(
    tmp_path: Path, kustomization: str, error: type
) -> None:
    write(
        tmp_path,
        {
            "deployment.yaml": DEPLOYMENT,
            "p.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
            "from-env.env": "HOME\n",
            "missing-target.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\n",
            "directive.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
            "spec: {$patch: replace}\n",
            "kustomization.yaml": kustomization,
        },
    )
    with pytest.raises(error):
        render(tmp_path)


def test_output_round_trips_through_yaml(tmp_path: Path) -> None:
    write(
        tmp_path,
        {"deployment.yaml": DEPLOYMENT, "kustomization.yaml": "resources: [deployment.yaml]\n"},
    )
    objects = render(tmp_path)
    assert list(yaml.safe_load_all(yaml.safe_dump_all(objects))) == objects
