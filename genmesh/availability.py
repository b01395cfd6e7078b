"""Whether a catalog model's weights and engine are present on this machine, and if not, why.

Each worker asks this of its own models (every heartbeat: only file and package look-ups, no
hashing) and reports the reasons; the router adds what it alone knows (whether any worker's
hardware fits) and the CLI asks the same question locally. A reason is a sentence a user can act
on: it names what is missing and the command that brings it.
"""
from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from genmesh.catalog import GB, ModelSpec
from genmesh.models import build, packaged
from genmesh.weights import WeightKind, WeightSource

FindSpec = Callable[[str], object]

# Engines that run a system binary rather than weights.
_ENGINE_BINARIES = {"espeak": ("espeak-ng", "apt-get install espeak-ng")}
# A hub checkpoint counts as present when its directory has one of these.
_CHECKPOINT_MARKERS = ("config.json", "model_index.json")


def weights_reason(spec: ModelSpec, models_dir: Path,
                   find_spec: FindSpec = importlib.util.find_spec) -> str | None:
    """Why ``spec`` cannot load on a worker with this models dir and these packages, or None."""
    binary = _ENGINE_BINARIES.get(spec.engine)
    if binary is not None and shutil.which(binary[0]) is None:
        return f"the {binary[0]} program is not installed ({binary[1]})"
    source = WeightSource.of(spec)
    ref = source.ref
    if source.kind is WeightKind.BUILD:
        if build.is_built(models_dir, ref):
            return None
        needed = build.needs_packages(ref, find_spec)
        if needed:
            return (f"weights missing: built from the {', '.join(needed)} package, which is not "
                    f"installed; run `genmesh models pull {ref}`")
        return f"weights missing: not built yet; run `genmesh models build {ref}`"
    if source.kind is WeightKind.HUB:
        directory = spec.weights_dir(models_dir)
        if any((directory / marker).is_file() for marker in _CHECKPOINT_MARKERS):
            return None
        return (f"weights missing: the {ref} checkpoint is not in {directory}; run `genmesh "
                f"models pull {spec.id}` (downloads it from the Hugging Face Hub)")
    if source.kind is WeightKind.PACKAGE:
        if spec.files:
            return packaged.weights_reason(spec, models_dir, find_spec)
        if any(build.is_built(models_dir, other.id) for other in build.catalog()
               if other.weights == spec.weights):
            return None  # converted once already (SmolLM2's GGUF): the package is not read again
        missing = packaged.missing_packages(spec, find_spec)
        if missing:
            return (f"weights missing: the {', '.join(p.requirement for p in missing)} package "
                    f"is not installed; run `genmesh models pull {spec.id}` "
                    f"(or `{packaged.install_hint(missing)}`)")
    return None


def weights_reasons(specs: Iterable[ModelSpec], models_dir: Path,
                    find_spec: FindSpec = importlib.util.find_spec) -> dict[str, str]:
    """model id -> reason, for the models of ``specs`` that cannot load here."""
    out = {}
    for spec in specs:
        if spec.task == "app":
            continue  # apps bring their own code and weights
        reason = weights_reason(spec, models_dir, find_spec)
        if reason is not None:
            out[spec.id] = reason
    return out


def needs_text(*, gpu_required: bool = False, gpu_classes: Iterable[str] = (),
               num_gpus: int = 0, min_device_memory_bytes: int = 0) -> str:
    """Hardware constraints in words: "a GPU with at least 24 GB of memory"; "" for none."""
    classes = list(gpu_classes)
    if not (gpu_required or classes or num_gpus or min_device_memory_bytes):
        return ""
    what = "a GPU" if gpu_required or classes or num_gpus else "a device"
    if num_gpus > 1:
        what = f"{num_gpus} GPUs"
    if classes:
        what += f" ({' or '.join(classes)})"
    if min_device_memory_bytes:
        what += f" with at least {min_device_memory_bytes / GB:g} GB of memory"
    return what


def spec_needs_text(spec: ModelSpec) -> str:
    return needs_text(gpu_required=spec.gpu_required, gpu_classes=spec.gpu_classes,
                      num_gpus=spec.num_gpus,
                      min_device_memory_bytes=int(spec.min_device_memory_gb * GB))


def device_text(gpu_class: str, memory_bytes: int) -> str:
    """A worker's main device in words: "CPU, 24 GB" or "H100, 80 GB"."""
    return f"{gpu_class or 'CPU'}, {memory_bytes / GB:.0f} GB"
