"""The maintained linters the deployment files go through; nothing here judges a manifest itself.

- Schemas: kubernetes-validate (strict: unknown fields are errors) against a pinned Kubernetes
  version for built-in kinds; KEDA ScaledObjects against schemas/keda-scaledobject.schema.json
  (KEDA's CRD types trigger metadata as a free map, so its own schema cannot catch a typo'd key).
- Security: checkov's Kubernetes and Dockerfile checks (non-root, read-only root filesystem,
  capabilities dropped, seccomp, no service account token, probes, requests...), configured by
  deploy/checkov.yaml, which lists every check we skip and why. checkov lives in its own
  virtualenv (.venv/checkov, made by `make install`): it pins libraries below the mesh's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

DEPLOY_DIR = Path(__file__).resolve().parents[1]
KEDA_SCHEMA_PATH = DEPLOY_DIR / "schemas" / "keda-scaledobject.schema.json"
CHECKOV_CONFIG = DEPLOY_DIR / "checkov.yaml"
# The Kubernetes version the manifests are validated against: the oldest we support.
KUBERNETES_VERSION = "1.31.0"

Object = dict[str, Any]


def where(obj: Object) -> str:
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"


def _json_path(path: Iterable[Any]) -> str:
    return "/".join(str(p) for p in path) or "(root)"


def schema_problems(objects: Iterable[Object], version: str = KUBERNETES_VERSION) -> list[str]:
    """Strict kubernetes-validate for built-in kinds; the KEDA schema for ScaledObjects."""
    keda = _keda_validator()
    problems = []
    for obj in objects:
        if obj.get("kind") == "ScaledObject":
            problems += [
                f"{where(obj)}: {_json_path(e.absolute_path)}: {e.message}"
                for e in keda.iter_errors(obj)
            ]
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(
                f"{where(obj)}: no schema for {obj.get('apiVersion')} {obj.get('kind')} "
                f"in Kubernetes {version}"
            )
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{where(obj)}: {_json_path(error.path)}: {error.message}")
    return problems


def _keda_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(KEDA_SCHEMA_PATH.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


class CheckovUnavailable(RuntimeError):
    """checkov is not installed where `make install` puts it."""


def checkov_binary() -> Path:
    found = Path(sys.prefix) / "checkov" / "bin" / "checkov"
    if found.exists():
        return found
    on_path = shutil.which("checkov")
    if on_path:
        return Path(on_path)
    raise CheckovUnavailable(f"checkov not found at {found}; run `make install`")


def checkov_problems(
    manifests: Mapping[str, list[Object]], dockerfiles: Mapping[str, str] | None = None
) -> list[str]:
    """checkov's failed checks, one line each, for every named set of rendered objects
    (written as <name>.yaml) and every Dockerfile text (written as <name>/Dockerfile).
    One checkov run for all of them: it takes seconds to start."""
    with tempfile.TemporaryDirectory(prefix="genmesh-checkov-") as scratch:
        root = Path(scratch)
        for name, objects in manifests.items():
            (root / f"{name}.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
        for name, text in (dockerfiles or {}).items():
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / "Dockerfile").write_text(text)
        env = {
            **os.environ,
            # Offline and quiet: no version check, no platform look-ups.
            "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
            "BC_SKIP_MAPPING": "TRUE",
        }
        result = subprocess.run(
            [
                str(checkov_binary()),
                "--config-file",
                str(CHECKOV_CONFIG),
                "--directory",
                str(root),
                "--output",
                "json",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        # Exit 1 means failed checks, which the report lists; anything else is checkov failing.
        if result.returncode not in (0, 1):
            raise RuntimeError(f"checkov exited {result.returncode}: {result.stderr[-2000:]}")
        reports = json.loads(result.stdout or "[]")
        if isinstance(reports, dict):
            reports = [reports]
        problems = []
        for report in reports:
            if not isinstance(report, dict) or "results" not in report:
                continue  # checkov's "no files of this framework" summary
            for failed in report["results"]["failed_checks"]:
                source = failed["file_path"].lstrip("/")
                problems.append(
                    f"{source}: {failed['resource']}: {failed['check_id']} {failed['check_name']}"
                )
        return sorted(problems)
