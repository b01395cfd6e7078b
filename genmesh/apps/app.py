"""The user-facing app API: `genmesh.App` (hardware, scaling, setup/teardown) and
`@genmesh.endpoint` methods taking and returning Pydantic models, described as a manifest."""
from __future__ import annotations

import inspect
import re
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, Field

ENDPOINT_ATTR = "__genmesh_endpoint__"
# Last path segments the edge gives a meaning of its own (FAL stream, queue handles, realtime).
RESERVED_SEGMENTS = frozenset({"stream", "requests", "realtime"})
_SEGMENT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_GENERATORS = {Iterator, typing.Iterator, typing.Generator, typing.Iterable,
               AsyncIterator, typing.AsyncIterator, typing.AsyncGenerator, typing.AsyncIterable}

F = TypeVar("F", bound=Callable[..., Any])


class AppDefinitionError(TypeError):
    """The app class or one of its endpoints is declared wrongly."""


def check_path(path: str) -> str:
    """'/' or '/a/b' with lower-case segments, none of them reserved."""
    if path == "/":
        return path
    segments = path.split("/")
    if segments[0] != "" or not all(_SEGMENT.fullmatch(s) for s in segments[1:]):
        raise AppDefinitionError(f"endpoint path {path!r} must be '/' or '/segment[/...]' with "
                                 "segments of lower-case letters, digits, '-' and '_'")
    if segments[-1] in RESERVED_SEGMENTS:
        raise AppDefinitionError(f"endpoint path {path!r} may not end with {segments[-1]!r} "
                                 f"(reserved: {', '.join(sorted(RESERVED_SEGMENTS))})")
    return path


def endpoint(path: str = "/") -> Callable[[F], F]:
    """Marks an App method as callable at `owner/alias{path}`. It takes one Pydantic model and
    returns one; a generator method streams each yield as a partial output, the last yield (or
    its return value) being the result."""
    check_path(path)

    def mark(fn: F) -> F:
        setattr(fn, ENDPOINT_ATTR, path)
        return fn

    return mark


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of an app class, introspected from its method."""

    path: str
    method: str
    input_model: type[BaseModel] | None
    output_model: type[BaseModel] | None
    streaming: bool
    is_async: bool
    takes_input: bool = True

    def input_schema(self) -> dict[str, Any]:
        if self.input_model is None:
            if self.takes_input:
                return {"type": "object"}
            return {"type": "object", "properties": {}, "additionalProperties": False}
        return self.input_model.model_json_schema()

    def output_schema(self) -> dict[str, Any]:
        return self.output_model.model_json_schema() if self.output_model else {"type": "object"}


class EndpointManifest(BaseModel):
    path: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    streaming: bool = False


class AppManifest(BaseModel):
    """What the mesh needs to know about an app class, without importing it."""

    name: str
    entrypoint: str = ""
    description: str = ""
    machine_type: str
    num_gpus: int
    requirements: list[str] = Field(default_factory=list)
    keep_alive: float
    min_concurrency: int
    max_concurrency: int
    endpoints: list[EndpointManifest]


class App:
    """Base of every genmesh app. Subclass it, declare hardware and scaling as class attributes,
    load models in `setup()` and mark methods with `@genmesh.endpoint(...)`.

    One instance lives in each runner process: `setup()` runs once when the runner starts,
    `teardown()` once when it stops (idle past `keep_alive`, redeployed, or shut down); a runner
    serves one request at a time and the mesh runs up to `max_concurrency` runners per app.
    """

    name: ClassVar[str | None] = None          # default alias; `genmesh deploy --name` overrides
    machine_type: ClassVar[str] = "CPU"        # CPU, GPU-A100, GPU-H100
    num_gpus: ClassVar[int] = 0                # GPU machines default to 1
    requirements: ClassVar[list[str]] = []     # pip requirements beyond what the worker has
    keep_alive: ClassVar[float] = 60.0         # seconds an idle runner stays warm
    min_concurrency: ClassVar[int] = 0         # runners kept warm even when idle
    max_concurrency: ClassVar[int] = 2         # most runners serving this app at once, per worker

    def setup(self) -> None:
        """Load models and other expensive state; runs once per runner before any request."""

    def teardown(self) -> None:
        """Release what setup acquired; runs once when the runner stops."""

    @classmethod
    def endpoints(cls) -> dict[str, Endpoint]:
        return describe_endpoints(cls)

    @classmethod
    def manifest(cls, entrypoint: str = "") -> AppManifest:
        return manifest_of(cls, entrypoint)


def _model(annotation: Any, where: str) -> type[BaseModel] | None:
    if annotation is inspect.Parameter.empty or annotation is None or annotation is type(None):
        return None
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    if annotation is dict or typing.get_origin(annotation) is dict:
        return None  # free JSON object
    raise AppDefinitionError(f"{where} must be a Pydantic model (a BaseModel subclass), "
                             f"got {annotation!r}")


def _output(annotation: Any, streaming: bool, where: str) -> type[BaseModel] | None:
    if streaming and annotation is not inspect.Parameter.empty:
        origin = typing.get_origin(annotation)
        if origin in _GENERATORS or annotation in _GENERATORS:
            args = typing.get_args(annotation)
            return _model(args[0], where) if args else None
    return _model(annotation, where)


def _endpoint_of(cls: type, name: str, fn: Callable[..., Any], path: str) -> Endpoint:
    where = f"{cls.__name__}.{name}"
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # noqa: BLE001 - unresolvable forward reference in user code
        raise AppDefinitionError(f"{where}: cannot resolve its type hints: {exc}") from exc
    params = [p for p in inspect.signature(fn).parameters.values()][1:]  # after self
    if len(params) > 1:
        raise AppDefinitionError(f"{where} must take one Pydantic model argument (or none)")
    input_model = _model(hints.get(params[0].name, inspect.Parameter.empty), f"{where} input") if params else None
    if params and input_model is None and hints.get(params[0].name) is None:
        raise AppDefinitionError(f"{where}: annotate its argument with a Pydantic model")
    streaming = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
    output_model = _output(hints.get("return", inspect.Parameter.empty), streaming, f"{where} output")
    is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
    return Endpoint(path, name, input_model, output_model, streaming, is_async, bool(params))


def describe_endpoints(cls: type) -> dict[str, Endpoint]:
    """path -> Endpoint for every `@endpoint` method of an app class (inherited ones too)."""
    found: dict[str, Endpoint] = {}
    seen: set[str] = set()
    for klass in cls.__mro__:
        for name, fn in vars(klass).items():
            path = getattr(fn, ENDPOINT_ATTR, None)
            if path is None or name in seen:
                continue
            seen.add(name)
            if path in found:
                raise AppDefinitionError(f"{cls.__name__}: two endpoints at {path!r} "
                                         f"({found[path].method} and {name})")
            found[path] = _endpoint_of(cls, name, fn, path)
    return found


def manifest_of(cls: type, entrypoint: str = "") -> AppManifest:
    """The app's manifest; raises AppDefinitionError when the class is not a usable app."""
    if not (inspect.isclass(cls) and issubclass(cls, App)):
        raise AppDefinitionError(f"{cls!r} is not a genmesh.App subclass")
    endpoints = describe_endpoints(cls)
    if not endpoints:
        raise AppDefinitionError(f"{cls.__name__} has no @genmesh.endpoint methods")
    machine = str(cls.machine_type)
    num_gpus = int(cls.num_gpus) or (1 if machine.upper().startswith("GPU") else 0)
    doc = inspect.getdoc(cls) or ""
    return AppManifest(
        name=cls.name or kebab(cls.__name__), entrypoint=entrypoint,
        description=doc if cls.__doc__ else "",
        machine_type=machine, num_gpus=num_gpus, requirements=list(cls.requirements),
        keep_alive=float(cls.keep_alive), min_concurrency=int(cls.min_concurrency),
        max_concurrency=int(cls.max_concurrency),
        endpoints=[EndpointManifest(path=e.path, input_schema=e.input_schema(),
                                    output_schema=e.output_schema(), streaming=e.streaming)
                   for e in sorted(endpoints.values(), key=lambda e: e.path)])


def kebab(name: str) -> str:
    """TextStats -> text-stats."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower().replace("_", "-")
