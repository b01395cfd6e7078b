"""What the deployment tests share: deploy/tools on the import path (its modules are scripts, not
a package) and the rendered overlays, looked up by kind and name."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
sys.path.insert(0, str(DEPLOY / "tools"))

import deploy_checks as checks  # noqa: E402

Objects = list[dict[str, Any]]


def render_all() -> dict[str, Objects]:
    """Every overlay, rendered by the real `kubectl kustomize`."""
    return {name: checks.render_overlay(name) for name in checks.OVERLAYS}


def find(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def pod_spec(objects: Objects, name: str) -> dict[str, Any]:
    return find(objects, "Deployment", name)["spec"]["template"]["spec"]
