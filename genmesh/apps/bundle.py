"""Code bundles: an app's directory zipped (code and small files only) by `genmesh deploy`, and
unpacked safely (no absolute paths, no '..', bounded size) where runners start."""
from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath

MAX_BUNDLE_BYTES = 50 * 1024 * 1024
MAX_UNPACKED_BYTES = 200 * 1024 * 1024
MAX_FILE_BYTES = 10 * 1024 * 1024
SKIP_DIRS = frozenset({"__pycache__", "node_modules", "venv", ".venv", "env", "build", "dist",
                       "site-packages", ".git", ".hg", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
# Weights and data belong in the blob store or the model cache, not in a code bundle.
SKIP_SUFFIXES = frozenset({".pyc", ".pyo", ".so", ".safetensors", ".bin", ".pt", ".pth", ".ckpt",
                           ".onnx", ".gguf", ".zip", ".tar", ".gz", ".whl", ".egg", ".mp4", ".wav"})


class BundleError(ValueError):
    """A bundle that cannot be built or unpacked as it is."""


def included(rel: PurePosixPath, size: int) -> bool:
    if any(part.startswith(".") or part in SKIP_DIRS for part in rel.parts[:-1]):
        return False
    name = rel.name
    return not (name.startswith(".") or rel.suffix.lower() in SKIP_SUFFIXES or size > MAX_FILE_BYTES)


def build(root: Path) -> bytes:
    """The zip of `root`'s code files, deterministic (sorted, fixed timestamps)."""
    root = root.resolve()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
            for filename in sorted(filenames):
                path = Path(dirpath) / filename
                if not path.is_file():
                    continue
                rel = PurePosixPath(*path.relative_to(root).parts)
                if not included(rel, path.stat().st_size):
                    continue
                info = zipfile.ZipInfo(str(rel), date_time=(2020, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, path.read_bytes())
    data = buf.getvalue()
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"the code bundle of {root} is {len(data)} bytes; the limit is "
                          f"{MAX_BUNDLE_BYTES} (keep weights and data out of the app directory)")
    return data


def names(data: bytes) -> list[str]:
    """The files in a bundle, after checking it is a safe zip."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise BundleError(f"not a zip archive: {exc}") from None
    with zf:
        total = 0
        out = []
        for info in zf.infolist():
            parts = PurePosixPath(info.filename).parts
            if info.filename.startswith("/") or ".." in parts or "\\" in info.filename:
                raise BundleError(f"unsafe path in bundle: {info.filename!r}")
            total += info.file_size
            if total > MAX_UNPACKED_BYTES:
                raise BundleError(f"the bundle unpacks to more than {MAX_UNPACKED_BYTES} bytes")
            if not info.is_dir():
                out.append(info.filename)
        return out


def unpack(data: bytes, dest: Path) -> Path:
    """Unpacks into `dest` atomically (a temp dir renamed into place); returns `dest`."""
    names(data)
    if dest.is_dir():
        return dest
    tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(tmp)
    try:
        tmp.rename(dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process unpacked it first
        if not dest.is_dir():
            raise
    return dest
