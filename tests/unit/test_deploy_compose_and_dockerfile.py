"""The compose files follow the Compose Specification and genmesh's rules (compose_checks.py), the
Dockerfile parses with BuildKit's parser and keeps the image's rules (dockerfile_checks.py), and
`python deploy/tools/deploy_checks.py` reports every deployment file ok. Each check is also fed
deliberately broken input and must fail."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy_support import DEPLOY, REPO, checks


def test_compose_file_follows_the_compose_spec_and_mesh_rules() -> None:
    assert checks.compose_problems(checks.load_compose(checks.COMPOSE_FILE)) == []


def test_compose_gpu_override_gives_gpu_workers_gpus() -> None:
    assert checks.compose_gpu_override_problems(checks.load_compose(checks.COMPOSE_GPU_FILE)) == []


def test_dockerfile_builds_one_image_for_both_variants() -> None:
    assert checks.dockerfile_problems(checks.DOCKERFILE.read_text()) == []


def test_dockerignore_admits_what_the_image_needs() -> None:
    patterns = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in patterns  # an allowlist: nothing unlisted reaches the build context
    for needed in ("pyproject.toml", "setup.py", "genmesh/", "services/", "deploy/healthcheck.py"):
        assert f"!{needed}" in patterns


def test_command_line_reports_every_file_ok_checkov_included() -> None:
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "tools" / "deploy_checks.py")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checkov: ok" in result.stdout


def _compose() -> dict[str, Any]:
    return checks.load_compose(checks.COMPOSE_FILE)


def _env(service: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda c: c["services"][service]["environment"]


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda c: c["services"]["edge"]["depends_on"]["router"].update(condition="service_ready"),
            "'service_ready' is not one of",
        ),
        (lambda c: c["services"]["router"].update(healtcheck={}), "'healtcheck' was unexpected"),
        (
            lambda c: c["services"]["billing"].pop("healthcheck"),
            "waits for billing to be healthy, but billing has no healthcheck",
        ),
        (lambda c: c["services"]["llm"].update(image="genmesh:other"), "genmesh services use 2 images"),
        (
            lambda c: c["services"]["audio"].update(command=["python", "-m", "genmesh.services.sound"]),
            "unknown service module genmesh.services.sound",
        ),
        (
            lambda c: _env("imagegen")(c).pop("GENMESH_ADVERTISE_ADDR"),
            "GENMESH_ADVERTISE_ADDR is not set",
        ),
        (lambda c: c.pop("volumes"), "named volume 'models' is not declared"),
        (
            lambda c: c["services"]["router"]["depends_on"].update(queue={"condition": "service_healthy"}),
            "depends on missing service 'queue'",
        ),
        (
            lambda c: _env("edge")(c).update(GENMESH_PUBLIC_ULR="x"),
            "unknown setting GENMESH_PUBLIC_ULR",
        ),
        (
            lambda c: _env("apps")(c).update(GENMESH_API_KEY="k"),
            "service apps: a worker must not be given GENMESH_API_KEY",
        ),
        (
            lambda c: _env("echo")(c).update(GENMESH_TLS_KEY_FILE="/etc/genmesh/tls/router.key"),
            "GENMESH_TLS_KEY_FILE must be /etc/genmesh/tls/echo.key",
        ),
        (
            lambda c: c["services"]["billing"].update(volumes=["models:/models"]),
            "service billing: does not mount the mesh certificates",
        ),
        (lambda c: c["services"]["router"].update(user="0"), "service router: set a non-root `user:`"),
        (lambda c: c["services"]["edge"].pop("read_only"), "service edge: set `read_only: true`"),
        (lambda c: c["services"]["llm"].pop("cap_drop"), "service llm: drop every capability"),
        (
            lambda c: c["services"]["videogen"]["healthcheck"].update(
                test=["CMD", "genmesh-healthcheck", "grpc", "localhost:50062"]
            ),
            "service videogen: healthcheck does not probe port 9091",
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
        "typo-setting",
        "worker-admin-key",
        "someone-elses-key",
        "no-certificates",
        "root",
        "writable-root",
        "capabilities",
        "probe-needs-certificate",
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
        (" 9090 9091\n", " 9090\n", "EXPOSE misses ports [9091]"),
    ],
    ids=[
        "shell-cmd",
        "missing-stage",
        "copy-from",
        "variant",
        "heredoc",
        "unknown-instruction",
        "no-arguments",
        "health-port",
    ],
)
def test_dockerfile_check_rejects_broken_dockerfiles(old: str, new: str, expected: str) -> None:
    text = checks.DOCKERFILE.read_text()
    assert old in text
    problems = checks.dockerfile_problems(text.replace(old, new, 1))
    assert any(expected in p for p in problems), problems
