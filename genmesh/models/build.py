"""`genmesh models build`: the registry of buildable models and building what is missing.

Each modality module exposes `BUILDERS` (catalog id -> build into a directory); a model counts as
built when its directory holds a completion marker written after its builder returned.
"""
from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from typing import Callable

MODULES = ("diffusion", "audio", "language", "vision")
MARKER = ".genmesh-built"


def builders() -> dict[str, Callable[[Path], None]]:
    out: dict[str, Callable[[Path], None]] = {}
    for name in MODULES:
        try:
            module = importlib.import_module(f"genmesh.models.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"genmesh.models.{name}":
                raise
            continue
        out.update(getattr(module, "BUILDERS", {}))
    return out


def is_built(models_dir: Path, model_id: str) -> bool:
    return (models_dir / model_id / MARKER).exists()


def missing(models_dir: Path) -> list[str]:
    return [m for m in builders() if not is_built(models_dir, m)]


def build_one(model_id: str, models_dir: Path) -> Path:
    """Builds into a scratch dir renamed into place, so a half-built model never counts."""
    build = builders()[model_id]
    target = models_dir / model_id
    scratch = target.with_name(target.name + ".building")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    build(scratch)
    (scratch / MARKER).write_text(model_id)
    if target.exists():
        shutil.rmtree(target)
    scratch.rename(target)
    return target


def build_missing(models_dir: Path, only: list[str] | None = None,
                  progress: Callable[[str], None] = lambda _m: None) -> list[str]:
    """Builds the models of `only` (default: every buildable one) that are not built yet."""
    built = []
    for model_id in list(builders()) if only is None else only:
        if is_built(models_dir, model_id):
            continue
        progress(model_id)
        build_one(model_id, models_dir)
        built.append(model_id)
    return built
