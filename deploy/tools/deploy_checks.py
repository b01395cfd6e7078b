"""Validates every deployment file of genmesh: both Kubernetes overlays, the compose files and
the Dockerfile. Each check returns a list of problems naming the file or object and what is
wrong; an empty list means valid.

    python deploy/tools/deploy_checks.py        # exit status 1 on any problem

Overlays are rendered by the real `kubectl kustomize` (binaries.py puts kubectl in the
virtualenv); lint.py runs the maintained linters (kubernetes-validate, the KEDA schema,
checkov); k8s_policy.py, compose_checks.py and dockerfile_checks.py hold genmesh's own rules,
with the facts they share in mesh_facts.py. CI runs all of it through
tests/unit/test_deploy_*.py.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # siblings, not an installed package

import yaml  # noqa: E402
from binaries import binary  # noqa: E402
from compose_checks import compose_gpu_override_problems, compose_problems, load_compose  # noqa: E402
from dockerfile_checks import dockerfile_problems  # noqa: E402
from k8s_policy import mesh_problems  # noqa: E402
from lint import KUBERNETES_VERSION, checkov_problems, schema_problems  # noqa: E402

__all__ = [
    "COMPOSE_FILE",
    "COMPOSE_GPU_FILE",
    "DOCKERFILE",
    "KUBERNETES_VERSION",
    "OVERLAYS",
    "KustomizeFailed",
    "Overlay",
    "all_problems",
    "checkov_problems",
    "compose_gpu_override_problems",
    "compose_problems",
    "dockerfile_problems",
    "kustomize",
    "load_compose",
    "mesh_problems",
    "render_overlay",
    "schema_problems",
]

DEPLOY_DIR = Path(__file__).resolve().parents[1]
COMPOSE_FILE = DEPLOY_DIR / "compose.yaml"
COMPOSE_GPU_FILE = DEPLOY_DIR / "compose.gpu.yaml"
DOCKERFILE = DEPLOY_DIR / "Dockerfile"


@dataclass(frozen=True)
class Overlay:
    path: Path
    gpu: bool
    variant: str  # the Dockerfile VARIANT its image is built with


OVERLAYS = {
    "cpu": Overlay(DEPLOY_DIR / "k8s" / "overlays" / "cpu", gpu=False, variant="cpu"),
    "gpu": Overlay(DEPLOY_DIR / "k8s" / "overlays" / "gpu", gpu=True, variant="cuda"),
}


class KustomizeFailed(RuntimeError):
    """`kubectl kustomize` refused a kustomization; the message is kustomize's."""


def kustomize(path: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize <path>` renders, in its order."""
    result = subprocess.run(
        [str(binary("kubectl")), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise KustomizeFailed(result.stderr.strip())
    # libyaml's loader where PyYAML has it: a rendered overlay is a few thousand lines.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [o for o in yaml.load_all(result.stdout, Loader=loader) if o]


def render_overlay(name: str) -> list[dict[str, Any]]:
    return kustomize(OVERLAYS[name].path)


def all_problems() -> dict[str, list[str]]:
    report: dict[str, list[str]] = {}
    rendered = {name: render_overlay(name) for name in OVERLAYS}
    for name, overlay in OVERLAYS.items():
        objects = rendered[name]
        report[f"k8s overlay {name}"] = schema_problems(objects) + mesh_problems(
            objects, gpu=overlay.gpu, variant=overlay.variant
        )
    report["checkov"] = checkov_problems(rendered, {"image": DOCKERFILE.read_text()})
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
