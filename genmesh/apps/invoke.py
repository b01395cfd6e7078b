"""Calling one endpoint of a live app instance: input validation naming the field, sync or async,
plain or generator methods, outputs rendered as JSON. Shared by runners and `genmesh run`."""
from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ValidationError

from genmesh.apps.app import Endpoint


class InvalidInput(Exception):
    """The request's input does not match the endpoint's input model."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field


class AppFailure(Exception):
    """The app's own code raised, or returned something that is not its declared output."""


class Cancelled(Exception):
    """The caller went away; the generator was closed at its next yield."""


def _first_error(exc: ValidationError, prefix: str = "") -> InvalidInput:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
    field = ".".join(str(p) for p in (prefix, *first.get("loc", ())) if p != "")
    return InvalidInput(first.get("msg", "invalid value"), field or "input")


def _allows_extra(model: type[BaseModel]) -> bool:
    return model.model_config.get("extra") == "allow"


def parse_input(ep: Endpoint, payload: Any) -> Any:
    """The endpoint's argument from a JSON payload; unknown fields are refused, never ignored."""
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise InvalidInput("expected a JSON object", "input")
    if not ep.takes_input:
        if payload:
            raise InvalidInput("this endpoint takes no input", next(iter(payload)))
        return None
    model = ep.input_model
    if model is None:
        return payload
    if not _allows_extra(model):
        known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
        for key in payload:
            if key not in known:
                allowed = ", ".join(sorted(model.model_fields)) or "none"
                raise InvalidInput(f"unknown field; allowed fields are {allowed}", key)
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise _first_error(exc) from None


def to_json(ep: Endpoint, value: Any) -> dict[str, Any]:
    """An endpoint's output as a JSON object, checked against its declared output model."""
    model = ep.output_model
    try:
        if model is not None and not isinstance(value, model):
            value = model.model_validate(value.model_dump() if isinstance(value, BaseModel) else value)
    except ValidationError as exc:
        raise AppFailure(f"endpoint {ep.path} returned an invalid {model.__name__}: "
                         f"{_first_error(exc)}") from None
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return value
    raise AppFailure(f"endpoint {ep.path} must return a Pydantic model (or a dict), "
                     f"got {type(value).__name__}")


def call(instance: Any, ep: Endpoint, payload: Any, *, cancel: threading.Event | None = None,
         loop: asyncio.AbstractEventLoop | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Runs one call: yields ("partial", json) for each yield of a generator endpoint, then
    ("result", json) once. Raises InvalidInput, AppFailure (user code raised) or Cancelled."""
    cancel = cancel or threading.Event()
    argument = parse_input(ep, payload)
    method = getattr(instance, ep.method)
    args = (argument,) if ep.takes_input else ()
    if ep.is_async and loop is None:
        raise RuntimeError("async endpoints need an event loop")
    try:
        if not ep.streaming:
            value = method(*args)
            if inspect.isawaitable(value):
                value = loop.run_until_complete(value)  # type: ignore[union-attr]
            yield "result", to_json(ep, value)
            return
        last: Any = None
        returned: Any = None
        gen = method(*args)
        if inspect.isasyncgen(gen):
            items = _drain_async(gen, loop, cancel)  # type: ignore[arg-type]
        else:
            items = _drain_sync(gen, cancel)
        try:
            while True:
                item = next(items)
                last = to_json(ep, item)
                yield "partial", last
        except StopIteration as stop:
            returned = stop.value
        if returned is not None:
            yield "result", to_json(ep, returned)
        elif last is not None:
            yield "result", last
        else:
            raise AppFailure(f"endpoint {ep.path} yielded nothing and returned nothing")
    except (InvalidInput, AppFailure, Cancelled):
        raise
    except Exception as exc:  # noqa: BLE001 - the app's own error, reported to its caller
        raise AppFailure(f"{type(exc).__name__}: {exc}") from exc


def _drain_sync(gen: Any, cancel: threading.Event) -> Iterator[Any]:
    try:
        while True:
            if cancel.is_set():
                gen.close()
                raise Cancelled()
            try:
                item = next(gen)
            except StopIteration as stop:
                return stop.value
            yield item
    finally:
        gen.close()


def _drain_async(agen: Any, loop: asyncio.AbstractEventLoop, cancel: threading.Event) -> Iterator[Any]:
    try:
        while True:
            if cancel.is_set():
                raise Cancelled()
            try:
                item = loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return None
            yield item
    finally:
        loop.run_until_complete(agen.aclose())
