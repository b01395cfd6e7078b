"""Checks deploy/Dockerfile with BuildKit's own parser (the `dockerfile` package), then the rules
the one genmesh image must keep: stages resolve for every VARIANT, COPY sources exist in the
build context, the final stage runs under tini with a known service as CMD, exposes every
service port and binds to all interfaces. Generic hygiene (a non-root USER...) is checkov's.
"""

from __future__ import annotations

from pathlib import Path

import dockerfile
from mesh_facts import HEALTH_PORT, METRICS_PORT, SERVICE_PORTS, service_module

VARIANTS = ("cpu", "cuda")
BUILD_CONTEXT = Path(__file__).resolve().parents[2]  # the repository root
# The Dockerfile frontend's instructions: its parser accepts any word, a build does not.
INSTRUCTIONS = frozenset(
    {
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "MAINTAINER",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    }
)

Stage = tuple[str, list[dockerfile.Command]]  # (alias, its instructions starting with FROM)


def dockerfile_problems(
    text: str, source: str = "Dockerfile", context: Path = BUILD_CONTEXT
) -> list[str]:
    try:
        commands = dockerfile.parse_string(text)
    except dockerfile.GoParseError as error:
        return [f"{source}: does not parse: {error}"]
    problems = []
    for command in commands:
        if command.cmd not in INSTRUCTIONS:
            problems.append(
                f"{source}: line {command.start_line}: unknown instruction {command.cmd}"
            )
        elif not command.value and command.cmd not in ("CMD", "ENTRYPOINT"):
            problems.append(f"{source}: line {command.start_line}: {command.cmd} without arguments")
    if problems:
        return problems
    global_args, stages = _split_stages(commands)
    if not stages:
        return [f"{source}: no FROM"]
    if global_args.get("VARIANT") not in VARIANTS:
        problems.append(
            f"{source}: needs `ARG VARIANT=cpu` (one of {VARIANTS}) before the first FROM"
        )
    problems += _stage_problems(source, stages, context)
    problems += _runtime_problems(source, stages[-1][1])
    return problems


def _split_stages(commands: tuple[dockerfile.Command, ...]) -> tuple[dict[str, str], list[Stage]]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for command in commands:
        if command.cmd == "FROM":
            value = list(command.value)
            alias = value[2] if len(value) == 3 and value[1].upper() == "AS" else ""
            stages.append((alias, [command]))
        elif stages:
            stages[-1][1].append(command)
        elif command.cmd == "ARG":
            name, _, default = command.value[0].partition("=")
            global_args[name] = default.strip('"')
    return global_args, stages


def _stage_problems(source: str, stages: list[Stage], context: Path) -> list[str]:
    problems = []
    names = [alias for alias, _ in stages]
    for alias, body in stages:
        base = body[0].value[0]
        for variant in VARIANTS:
            resolved = base.replace("${VARIANT}", variant).replace("$VARIANT", variant)
            is_image = "$" in resolved or "/" in resolved or ":" in resolved
            if not is_image and resolved not in names:
                problems.append(
                    f"{source}: stage {alias or '?'} builds FROM {resolved!r}, "
                    f"no such stage (VARIANT={variant})"
                )
        for command in body:
            if command.cmd != "COPY":
                continue
            from_flag = next((f for f in command.flags if f.startswith("--from=")), None)
            if from_flag and from_flag.removeprefix("--from=") not in names:
                problems.append(f"{source}: line {command.start_line}: {from_flag} names no stage")
            if not from_flag:
                for src in command.value[:-1]:
                    if not (context / src).exists():
                        problems.append(
                            f"{source}: line {command.start_line}: COPY source {src!r} "
                            "is not in the build context"
                        )
    return problems


def _runtime_problems(source: str, final_stage: list[dockerfile.Command]) -> list[str]:
    problems = []
    # A non-root USER is checkov's to check (CKV_DOCKER_3, CKV_DOCKER_8); see lint.py.
    last = {c.cmd: c for c in final_stage}  # the last instruction of each kind is the one in force
    cmd = last.get("CMD")
    if cmd is None or not cmd.json or service_module(list(cmd.value)) not in SERVICE_PORTS:
        problems.append(
            f"{source}: CMD must be the JSON form of `python -m genmesh.services.<known service>`"
        )
    entrypoint = last.get("ENTRYPOINT")
    if entrypoint is None or not entrypoint.json or "tini" not in entrypoint.value[0]:
        problems.append(
            f"{source}: ENTRYPOINT must be tini (JSON form), so signals reach the service"
        )
    exposed = {p.split("/")[0] for c in final_stage if c.cmd == "EXPOSE" for p in c.value}
    missing = sorted(
        p
        for p in set(SERVICE_PORTS.values()) | {METRICS_PORT, HEALTH_PORT}
        if str(p) not in exposed
    )
    if missing:
        problems.append(f"{source}: EXPOSE misses ports {missing}")
    env: dict[str, str] = {}
    for command in final_stage:
        if command.cmd == "ENV":
            values = list(command.value)
            env.update(zip(values[::2], values[1::2], strict=True))
    for key, value in (("GENMESH_HOST", "0.0.0.0"), ("GENMESH_METRICS_PORT", str(METRICS_PORT))):
        if env.get(key) != value:
            problems.append(f"{source}: the final stage must set ENV {key}={value}")
    return problems
