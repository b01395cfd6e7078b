"""JSON <-> typed proto messages: validation naming the field, JSON schemas, natural JSON output.

The generic Router API takes JSON; this module checks it against the model's typed request
message so the REST edge, the queue and typed clients share one schema per task.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from genmesh.errors import InvalidArgument

_INT_TYPES = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
              FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
              FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_FIXED64,
              FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_SFIXED64}
_UNSIGNED = {FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED32,
             FieldDescriptor.TYPE_FIXED64}
_BITS = {FieldDescriptor.TYPE_INT32: 31, FieldDescriptor.TYPE_SINT32: 31, FieldDescriptor.TYPE_SFIXED32: 31,
         FieldDescriptor.TYPE_UINT32: 32, FieldDescriptor.TYPE_FIXED32: 32}
_FLOAT_TYPES = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}
_FREE_JSON = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
# Fields the router fills itself; a JSON input never sets them.
ROUTER_FIELDS = frozenset({"model_id"})


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(struct)


def dict_to_struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


def _kind(field: FieldDescriptor) -> str:
    if field.type in _INT_TYPES:
        return "integer"
    if field.type in _FLOAT_TYPES:
        return "number"
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "boolean"
    if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        return "string"
    if field.type == FieldDescriptor.TYPE_ENUM:
        return "enum"
    return "object"


def _check_scalar(field: FieldDescriptor, value: Any, path: str) -> None:
    kind = _kind(field)
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and not value.is_integer()):
            raise InvalidArgument(f"expected an integer, got {value!r}", field=path)
        v = int(value)
        bits = _BITS.get(field.type, 63)
        low = 0 if field.type in _UNSIGNED else -(2 ** bits)
        high = 2 ** bits - 1 if field.type not in _UNSIGNED else 2 ** bits - 1
        if v < low or v > high:
            raise InvalidArgument(f"{v} is out of range [{low}, {high}]", field=path)
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidArgument(f"expected a number, got {value!r}", field=path)
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidArgument("must be a finite number", field=path)
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidArgument(f"expected true or false, got {value!r}", field=path)
    elif kind == "string":
        if not isinstance(value, str):
            raise InvalidArgument(f"expected a string, got {type(value).__name__}", field=path)
        if field.type == FieldDescriptor.TYPE_BYTES:
            try:
                base64.b64decode(value, validate=False)
            except (binascii.Error, ValueError) as exc:
                raise InvalidArgument("expected base64-encoded bytes", field=path) from exc
    elif kind == "enum":
        names = [v.name for v in field.enum_type.values]
        if not (isinstance(value, str) and value in names) and not (
                isinstance(value, int) and not isinstance(value, bool)
                and value in [v.number for v in field.enum_type.values]):
            raise InvalidArgument(f"must be one of {names}", field=path)


def _check(desc: Descriptor, data: Any, path: str, skip: frozenset[str] = frozenset()) -> None:
    if not isinstance(data, dict):
        raise InvalidArgument(f"expected an object, got {type(data).__name__}", field=path or "input")
    fields = {f.name: f for f in desc.fields}
    fields.update({f.json_name: f for f in desc.fields})
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        field = fields.get(key)
        if field is None or field.name in skip:
            allowed = sorted(f.name for f in desc.fields if f.name not in skip)
            raise InvalidArgument(f"unknown field; allowed fields are {', '.join(allowed)}", field=where)
        if value is None:
            continue
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if is_map:
            if not isinstance(value, dict):
                raise InvalidArgument("expected an object", field=where)
            continue
        if field.is_repeated:
            if not isinstance(value, list):
                raise InvalidArgument(f"expected a list, got {type(value).__name__}", field=where)
            for i, item in enumerate(value):
                _check_value(field, item, f"{where}[{i}]")
        else:
            _check_value(field, value, where)


def _check_value(field: FieldDescriptor, value: Any, path: str) -> None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        full = field.message_type.full_name
        if full in _FREE_JSON:
            if full == "google.protobuf.Struct" and not isinstance(value, dict):
                raise InvalidArgument("expected an object", field=path)
            return
        if full == "google.protobuf.Timestamp":
            if not isinstance(value, str):
                raise InvalidArgument("expected an RFC 3339 timestamp string", field=path)
            return
        _check(field.message_type, value, path)
    else:
        _check_scalar(field, value, path)


def parse_input(data: dict[str, Any] | struct_pb2.Struct, message_cls: type[Message], *,
                skip: frozenset[str] = ROUTER_FIELDS) -> Message:
    """Builds a typed request from JSON; unknown or wrongly typed fields are InvalidArgument."""
    if isinstance(data, struct_pb2.Struct):
        data = struct_to_dict(data)
    _check(message_cls.DESCRIPTOR, data, "", skip)
    msg = message_cls()
    try:
        json_format.ParseDict(data, msg, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise InvalidArgument(str(exc), field="input") from exc
    return msg


def _fix_int64(desc: Descriptor, data: dict[str, Any]) -> None:
    # MessageToDict renders 64-bit integers as strings (JSON-safe); our clients want numbers.
    for field in desc.fields:
        key = field.name
        if key not in data:
            continue
        value = data[key]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.full_name in _FREE_JSON or field.message_type.GetOptions().map_entry:
                continue
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, dict):
                    _fix_int64(field.message_type, item)
        elif field.type in _INT_TYPES and field.type not in _BITS:
            data[key] = [int(v) for v in value] if isinstance(value, list) else int(value)


def to_dict(msg: Message, *, defaults: bool = False) -> dict[str, Any]:
    """A message as natural JSON: proto field names, integers as numbers."""
    data = json_format.MessageToDict(msg, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=defaults)
    _fix_int64(msg.DESCRIPTOR, data)
    return data


def json_schema(desc: Descriptor, *, skip: frozenset[str] = ROUTER_FIELDS,
                _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON schema of a typed request message, for the catalog and OpenAPI."""
    props: dict[str, Any] = {}
    for field in desc.fields:
        if field.name in skip:
            continue
        props[field.name] = _field_schema(field, _seen + (desc.full_name,))
    return {"type": "object", "title": desc.name, "properties": props, "additionalProperties": False}


def _field_schema(field: FieldDescriptor, seen: tuple[str, ...]) -> dict[str, Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        full = field.message_type.full_name
        if field.message_type.GetOptions().map_entry:
            item: dict[str, Any] = {"type": "object"}
            return item
        if full in _FREE_JSON:
            item = {"type": "object"} if full == "google.protobuf.Struct" else {}
        elif full == "google.protobuf.Timestamp":
            item = {"type": "string", "format": "date-time"}
        elif full in seen:
            item = {"type": "object"}
        else:
            item = json_schema(field.message_type, skip=frozenset(), _seen=seen)
    else:
        kind = _kind(field)
        if kind == "enum":
            item = {"type": "string", "enum": [v.name for v in field.enum_type.values]}
        elif kind == "string" and field.type == FieldDescriptor.TYPE_BYTES:
            item = {"type": "string", "contentEncoding": "base64"}
        else:
            item = {"type": kind}
    if field.is_repeated:
        return {"type": "array", "items": item}
    return item


def plain_json(value: Any) -> Any:
    """Struct numbers are all doubles; integral ones go back to ints for JSON clients."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        return int(value)
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    return value


def struct_to_json(struct: struct_pb2.Struct) -> dict[str, Any]:
    return plain_json(json_format.MessageToDict(struct))
