"""The directory a worker loads a catalog entry's weights from (the typed source itself is
`genmesh.weights`). Entries with the same weights (text-to-image and image-to-image of one
checkpoint, chat and completions of one LLM) share one directory, named by the entry that owns
them (`weights_owner`).
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from genmesh.catalog import ModelSpec
from genmesh.errors import ModelUnavailable
from genmesh.weights import WeightKind, WeightSource


def weights_owner(spec: ModelSpec, models: Iterable[ModelSpec]) -> ModelSpec:
    """The entry whose id names `spec`'s weights: the built model's own entry, else the first
    catalog entry with the same weights source."""
    sharing = [m for m in models if m.weights == spec.weights]
    source = WeightSource.of(spec)
    if source.kind is WeightKind.BUILD:
        for m in sharing:
            if m.id == source.ref:
                return m
    return sharing[0] if sharing else spec


def checkpoint_dir(spec: ModelSpec, models_dir: Path, *, owner: ModelSpec | None = None,
                   marker: str = "config.json", what: str = "") -> Path:
    """The directory `from_pretrained` reads for `spec` (its owner's, see `weights_owner`), or
    ModelUnavailable saying how to fill it. `marker` is the file every such checkpoint has;
    `what` names the kind of checkpoint in the message ("diffusers")."""
    source = WeightSource.of(spec)
    kind = f"{what} " if what else ""
    if source.kind is WeightKind.BUILD:
        path = models_dir / source.ref
        if not (path / marker).is_file():
            raise ModelUnavailable(
                f"model '{spec.id}' is not built on this worker: run `genmesh models build "
                f"{source.ref}` (expected it in {path})")
        return path
    path = (owner or spec).weights_dir(models_dir)
    if (path / marker).is_file():
        return path
    if source.kind is WeightKind.HUB:
        raise ModelUnavailable(
            f"the weights of '{spec.id}' are not on this worker: expected the {source.ref} "
            f"{kind}checkpoint ({marker}, safetensors, tokenizer files) in {path}, e.g. "
            f"`genmesh models pull {spec.id}`")
    raise ModelUnavailable(f"no {kind}weights for '{spec.id}' in {path} ({marker} missing)")
