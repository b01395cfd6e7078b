"""A task's final result kept typed: a queued job stores the worker's result message as its bytes
and full type name, the Router's Result passes them on as a `google.protobuf.Any` without parsing
them, and whoever answers the caller renders the caller's format once, where it is read."""
from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from genmesh import jsonpb
from genmesh import tasks as _tasks  # noqa: F401 - imports every result message's module

TYPE_URL_PREFIX = "type.googleapis.com/"
_PACKAGE = "genmesh.v1."


def message_class(full_name: str) -> type[Message]:
    """The generated class of a genmesh message by full name (a stored or packed result's type)."""
    if not full_name.startswith(_PACKAGE):
        raise ValueError(f"not a genmesh message: {full_name!r}")
    descriptor = descriptor_pool.Default().FindMessageTypeByName(full_name)
    return message_factory.GetMessageClass(descriptor)


def encoded(result: Message) -> tuple[str, bytes]:
    """(full type name, bytes) of a result, as a job stores it."""
    return result.DESCRIPTOR.full_name, result.SerializeToString()


def decoded(result_type: str, data: bytes) -> Message:
    return message_class(result_type).FromString(data)


def packed(result_type: str, data: bytes) -> any_pb2.Any:
    """A stored result as an Any: its bytes go on as they are, not parsed."""
    return any_pb2.Any(type_url=TYPE_URL_PREFIX + result_type, value=data)


def unpacked(value: any_pb2.Any) -> Message:
    return decoded(value.TypeName(), value.value)


def result_json(result: Message) -> dict[str, Any]:
    """A result as the generic API's JSON: an app's result already is JSON (its `output`); any
    other is its message rendered as JSON."""
    if result.DESCRIPTOR.full_name == "genmesh.v1.InvokeResult":
        return jsonpb.struct_to_dict(result.output)  # type: ignore[attr-defined]
    return jsonpb.to_dict(result)
