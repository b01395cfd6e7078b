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
    """Real weights (catalog `hub:` entries) into the models dir, where workers load them from."""
    from genmesh.catalog import Catalog

    settings = _settings(args)
    catalog = Catalog.load(settings.catalog_path)
    for model_id in args.models:
        spec = catalog.find(model_id)
        if spec is None or not spec.weights.startswith("hub:"):
            print(f"{model_id}: not a catalog model with hub weights", file=sys.stderr)
            return 2
        target = spec.weights_dir(settings.resolved_models_dir())
        print(f"pulling {spec.weights[4:]} into {target}", file=sys.stderr, flush=True)
        try:
            from huggingface_hub import snapshot_download

            snapshot_download(repo_id=spec.weights[4:], local_dir=target)
        except Exception as exc:  # noqa: BLE001 - offline or no access: say so plainly
            print(f"{model_id}: could not download {spec.weights[4:]}: {exc}\n"
                  f"copy the weights into {target} instead", file=sys.stderr)
            return 1
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from genmesh.catalog import Catalog
    from genmesh.models import build

    settings = _settings(args)
    for spec in Catalog.load(settings.catalog_path):
        state = ""
        if spec.weights.startswith("build:"):
            state = "built" if build.is_built(settings.resolved_models_dir(), spec.weights[6:]) else "not built"
        elif spec.weights.startswith("hub:"):
            state = "present" if spec.weights_dir(settings.resolved_models_dir()).exists() else "weights absent"
        print(f"{spec.id:48} {spec.task:15} {spec.service:9} {state}")
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
    pull = msub.add_parser("pull", help="download real weights (catalog hub: entries) into the models dir")
    pull.add_argument("models", nargs="+")
    pull.add_argument("--data-dir")
    pull.set_defaults(func=cmd_models_pull)
    ls = msub.add_parser("list", help="the catalog and which weights are here")
    ls.add_argument("--data-dir")
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
