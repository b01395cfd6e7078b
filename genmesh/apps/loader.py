"""Finding an app class from a reference `path/to/file.py::ClassName`, the way the CLI, the local
server and runners all name it."""
from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from genmesh.apps.app import App, AppDefinitionError

_CLASS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class AppRef:
    file: Path
    class_name: str

    @classmethod
    def parse(cls, ref: str) -> "AppRef":
        file, sep, class_name = ref.rpartition("::")
        if not sep or not file.endswith(".py") or not _CLASS.fullmatch(class_name):
            raise AppDefinitionError(f"{ref!r}: expected path/to/file.py::ClassName")
        return cls(Path(file), class_name)

    def entrypoint(self, root: Path) -> str:
        """`file.py::Class` relative to the bundle root (what runners import)."""
        rel = self.file.resolve().relative_to(root.resolve())
        return f"{PurePosixPath(*rel.parts)}::{self.class_name}"


def check_entrypoint(entrypoint: str) -> AppRef:
    """A bundle-relative entrypoint: no absolute paths, no '..'."""
    ref = AppRef.parse(entrypoint)
    parts = PurePosixPath(entrypoint.rpartition("::")[0]).parts
    if not parts or parts[0] == "/" or ".." in parts:
        raise AppDefinitionError(f"entrypoint {entrypoint!r} must be a path inside the app's code")
    return ref


def load_class(ref: AppRef, root: Path | None = None) -> type[App]:
    """Imports the file as a module (its directory, or `root`, first on sys.path) and returns
    the App subclass named in the reference."""
    file = (root / ref.file) if root is not None else ref.file
    file = file.resolve()
    if not file.is_file():
        raise AppDefinitionError(f"{file}: no such file")
    base = str((root or file.parent).resolve())
    if base not in sys.path:
        sys.path.insert(0, base)
    module_name = "genmesh_app_" + re.sub(r"\W", "_", file.stem)
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise AppDefinitionError(f"{file}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    cls = getattr(module, ref.class_name, None)
    if cls is None:
        raise AppDefinitionError(f"{file} has no class {ref.class_name}")
    if not (isinstance(cls, type) and issubclass(cls, App)):
        raise AppDefinitionError(f"{ref.class_name} in {file} is not a genmesh.App subclass")
    return cls
