"""Diffusers checkpoints in a worker's model cache: where their weights live, which catalog
entries share one loaded copy, and loading each copy once.

`build:<id>` weights are made by `genmesh models build <id>` into `<models_dir>/<id>`; `hub:<repo>`
checkpoints are put by the operator into the directory of the entry that owns them. Entries with
the same weights (text-to-image and image-to-image of one checkpoint) share one loaded pipeline:
the cache files it under the owning entry's id, which stands for that one directory and is a
catalog id the router's placement recognises as resident. The image and video workers use this.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from genmesh.catalog import ModelSpec
from genmesh.errors import ModelUnavailable
from genmesh.worker import WorkerRuntime
from genmesh.worker.cache import Entry

MARKER_FILE = "model_index.json"  # what every diffusers pipeline directory has
ENGINE = "diffusers"

# Loads the checkpoint in a directory onto a device (blocking: runs in a thread).
Load = Callable[[Path, str], Any]


def weights_owner(spec: ModelSpec, models: Iterable[ModelSpec]) -> ModelSpec:
    """The entry whose id names `spec`'s weights: the built model's own entry, else the first
    catalog entry with the same weights source."""
    sharing = [m for m in models if m.weights == spec.weights]
    built = spec.weights.removeprefix("build:") if spec.weights.startswith("build:") else None
    for m in sharing:
        if m.id == built:
            return m
    return sharing[0] if sharing else spec


def weights_path(spec: ModelSpec, models: Iterable[ModelSpec], models_dir: Path) -> Path:
    """The directory `from_pretrained` reads for `spec` (shared with the entries it shares
    weights with), or ModelUnavailable saying how to fill it."""
    if spec.weights.startswith("build:"):
        built = spec.weights.removeprefix("build:")
        path = models_dir / built
        if not (path / MARKER_FILE).is_file():
            raise ModelUnavailable(
                f"model '{spec.id}' is not built on this worker: run `genmesh models build "
                f"{built}` (expected it in {path})")
        return path
    path = weights_owner(spec, models).weights_dir(models_dir)
    if (path / MARKER_FILE).is_file():
        return path
    if spec.weights.startswith("hub:"):
        repo = spec.weights.removeprefix("hub:")
        raise ModelUnavailable(
            f"the weights of '{spec.id}' are not on this worker: expected the {repo} diffusers "
            f"checkpoint ({MARKER_FILE}, safetensors, tokenizer files) in {path}, e.g. "
            f"`huggingface-cli download {repo} --local-dir {path}`")
    raise ModelUnavailable(f"no diffusers weights for '{spec.id}' in {path} "
                           f"({MARKER_FILE} missing)")


def pipeline_class(path: Path) -> str:
    """The diffusers pipeline class a checkpoint was saved from."""
    try:
        return str(json.loads((path / MARKER_FILE).read_text())["_class_name"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelUnavailable(f"unreadable {path / MARKER_FILE}: {exc}") from None


class Checkpoints:
    """One worker's loaded checkpoints, one per weights directory, in its model cache."""

    def __init__(self, runtime: WorkerRuntime, models_dir: Path, load: Load, *,
                 pipeline_classes: Sequence[str] = ()) -> None:
        self.runtime = runtime
        self.models_dir = models_dir
        self.load = load
        self.pipeline_classes = tuple(pipeline_classes)  # empty: whatever `load` accepts

    def key(self, spec: ModelSpec) -> str:
        return weights_owner(spec, self.runtime.models.values()).id

    def is_resident(self, spec: ModelSpec) -> bool:
        return self.key(spec) in self.runtime.cache.entries

    async def acquire(self, spec: ModelSpec) -> Entry:
        """The loaded checkpoint of `spec`, loading it on a miss; `release` it after use."""
        if spec.engine != ENGINE:
            raise ModelUnavailable(f"model '{spec.id}' names engine {spec.engine!r}; this "
                                   f"{self.runtime.service} worker runs {ENGINE} pipelines")
        path = weights_path(spec, self.runtime.models.values(), self.models_dir)
        if self.pipeline_classes and (saved := pipeline_class(path)) not in self.pipeline_classes:
            raise ModelUnavailable(
                f"model '{spec.id}' is a {saved} checkpoint; this {self.runtime.service} worker "
                f"runs {', '.join(self.pipeline_classes)}")
        device = self.runtime.device

        async def loader() -> Any:
            return await asyncio.to_thread(self.load, path, device)

        return await self.runtime.cache.acquire(self.key(spec), loader, spec.memory_bytes, device)
