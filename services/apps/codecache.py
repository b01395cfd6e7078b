"""Each app version's code on this worker: the bundle fetched from the blob store and unpacked once
into the cache directory, and any requirements the worker's environment lacks installed with pip
into a directory of that version's own (put first on the runners' PYTHONPATH), as wheels only
so that no tenant code runs on the worker itself."""
from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from packaging.requirements import Requirement

from genmesh.apps import bundle
from genmesh.blobstore import BlobStore
from genmesh.errors import Internal
from genmesh.v1 import apps_pb2

log = logging.getLogger("genmesh.apps.code")
PIP_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Code:
    root: Path            # the unpacked bundle
    site: Path | None     # extra packages for this version, if any were needed


def missing_requirements(requirements: list[str]) -> list[str]:
    """Requirements the current environment does not already satisfy."""
    missing = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            installed = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            missing.append(text)
    return missing


def world_readable(root: Path) -> None:
    """Read access for the sandbox's uid (it sees the tree read-only at /app; the cache's own
    parents, inside the data directory, stay closed to it). Never writable: u=rwX,go=rX."""
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, 0o755 if mode & 0o100 else 0o644)


class CodeCache:
    def __init__(self, root: Path, blobs: BlobStore, on_log: Callable[[str, str, str], None]) -> None:
        self.root = root
        self.blobs = blobs
        self.on_log = on_log  # (app_id, message, level)
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}

    def version_dir(self, app: apps_pb2.App) -> Path:
        return self.root / app.id.replace("/", "__") / f"v{app.version}"

    async def get(self, app: apps_pb2.App) -> Code:
        """The version's code, fetching, unpacking and installing it on first use."""
        lock = self._locks.setdefault((app.id, app.version), asyncio.Lock())
        async with lock:
            base = self.version_dir(app)
            root = base / "code"
            if not root.is_dir():
                blob = await self.blobs.get(app.code_url)
                await asyncio.to_thread(bundle.unpack, blob.data, root)
                await asyncio.to_thread(world_readable, root)
            site = await self._site(app, base)
            return Code(root, site)

    async def _site(self, app: apps_pb2.App, base: Path) -> Path | None:
        missing = missing_requirements(list(app.requirements))
        if not missing:
            return None
        site = base / "site"
        if site.is_dir():
            return site
        # Installed beside, then renamed into place: workers sharing the cache never see half.
        tmp = base / f"site.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.on_log(app.id, f"installing requirements: {' '.join(missing)}", "info")
        # Wheels only: building an sdist runs the tenant's setup.py here, outside the sandbox.
        # And none of the worker's GENMESH_* settings (keys, database URL) in pip's environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENMESH_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-input", "--only-binary=:all:", "--target", str(tmp), *missing, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), PIP_TIMEOUT_S)
        except asyncio.TimeoutError:
            proc.kill()
            raise Internal(f"installing the requirements of app '{app.id}' took longer than "
                           f"{PIP_TIMEOUT_S:g}s") from None
        text = output.decode(errors="replace").strip()
        if proc.returncode != 0:
            for line in text.splitlines()[-20:]:
                self.on_log(app.id, line, "error")
            raise Internal(f"installing the requirements of app '{app.id}' failed: "
                           f"{text.splitlines()[-1] if text else 'pip exited with ' + str(proc.returncode)}")
        await asyncio.to_thread(world_readable, tmp)
        try:
            tmp.rename(site)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another worker finished first
        return site

    def forget(self, app_id: str, keep_version: int | None = None) -> None:
        """Removes cached versions of an app (all, or all but one)."""
        folder = self.root / app_id.replace("/", "__")
        if not folder.is_dir():
            return
        for child in folder.iterdir():
            if keep_version is not None and child.name == f"v{keep_version}":
                continue
            shutil.rmtree(child, ignore_errors=True)
