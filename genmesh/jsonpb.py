"""JSON <-> typed proto messages: validation naming the field, JSON schemas, natural JSON output.

The generic Router API takes JSON; this module checks it against the model's typed request
message so the REST edge, the queue and typed clients share one schema per task.
"""
from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
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
_INF = float("inf")
# Message types json_format reads by their own JSON rules (durations as "1.5s", wrappers as bare
# values, ...): fields of these types are parsed by json_format.
_WELL_KNOWN = frozenset({
    "google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask",
    "google.protobuf.Any", "google.protobuf.Value", "google.protobuf.ListValue",
    "google.protobuf.Empty", "google.protobuf.DoubleValue", "google.protobuf.FloatValue",
    "google.protobuf.Int64Value", "google.protobuf.UInt64Value", "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value", "google.protobuf.BoolValue", "google.protobuf.StringValue",
    "google.protobuf.BytesValue"})
_FLOAT32_MAX = 3.4028234663852886e38
# Fields the router fills itself; a JSON input never sets them.
ROUTER_FIELDS = frozenset({"model_id"})


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as a dict: what `json_format.MessageToDict` gives, without its per-value
    dispatch (this runs several times on every request)."""
    return {key: _value(value) for key, value in struct.fields.items()}


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if number != number or number in (_INF, -_INF):
            # As json_format: a non-finite number has no JSON form.
            raise ValueError(f"Fail to serialize {number} for Value.number_value")
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {key: _value(v) for key, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_value(v) for v in value.list_value.values]
    return None  # null_value, or no kind at all (json_format renders both as null)


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


@dataclass(frozen=True)
class _Field:
    """What checking and setting one field needs, read from its descriptor once (descriptor
    attribute access is slow, and this runs for every field of every request)."""

    field: FieldDescriptor
    name: str
    kind: str        # integer | number | boolean | string | enum | object
    repeated: bool
    is_map: bool
    oneof: str | None
    low: int = 0
    high: int = 0
    float32: bool = False
    is_bytes: bool = False
    enum_names: tuple[str, ...] = ()
    enum_numbers: frozenset[int] = frozenset()
    enum_by_name: Any = None
    enum_names_by_number: Any = None
    message: str = ""  # full name of a message field's type


_PLANS: dict[str, tuple[dict[str, _Field], list[str]]] = {}


def _plan(desc: Descriptor) -> tuple[dict[str, _Field], list[str]]:
    """(JSON key -> field, by proto name and by json name; the field names), per message type."""
    plan = _PLANS.get(desc.full_name)
    if plan is not None:
        return plan
    by_key: dict[str, _Field] = {}
    for f in desc.fields:
        kind = _kind(f)
        extra: dict[str, Any] = {}
        if kind == "integer":
            bits = _BITS.get(f.type, 64 if f.type in _UNSIGNED else 63)
            extra["low"] = 0 if f.type in _UNSIGNED else -(2 ** bits)
            extra["high"] = 2 ** bits - 1
        elif kind == "enum":
            extra["enum_names"] = tuple(v.name for v in f.enum_type.values)
            extra["enum_numbers"] = frozenset(v.number for v in f.enum_type.values)
            extra["enum_by_name"] = {v.name: v.number for v in f.enum_type.values}
            extra["enum_names_by_number"] = {}
            for v in f.enum_type.values:  # aliases: json_format prints the first name
                extra["enum_names_by_number"].setdefault(v.number, v.name)
        info = _Field(field=f, name=f.name, kind=kind, repeated=f.is_repeated,
                      is_map=f.message_type is not None and f.message_type.GetOptions().map_entry,
                      oneof=f.containing_oneof.name if f.containing_oneof is not None else None,
                      float32=f.type == FieldDescriptor.TYPE_FLOAT,
                      is_bytes=f.type == FieldDescriptor.TYPE_BYTES,
                      message=f.message_type.full_name if f.message_type is not None else "", **extra)
        by_key[f.name] = info
        by_key.setdefault(f.json_name, info)
    plan = _PLANS[desc.full_name] = (by_key, [f.name for f in desc.fields])
    return plan


def _check_scalar(f: _Field, value: Any, path: str) -> Any:
    """The value to set for a scalar field, or InvalidArgument naming `path`."""
    kind = f.kind
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and not value.is_integer()):
            raise InvalidArgument(f"expected an integer, got {value!r}", field=path)
        v = int(value)
        if v < f.low or v > f.high:
            raise InvalidArgument(f"{v} is out of range [{f.low}, {f.high}]", field=path)
        return v
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidArgument(f"expected a number, got {value!r}", field=path)
        if value != value or value in (_INF, -_INF):
            raise InvalidArgument("must be a finite number", field=path)
        if f.float32 and abs(value) > _FLOAT32_MAX:
            raise InvalidArgument("out of range for a 32-bit float", field=path)
        return float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidArgument(f"expected true or false, got {value!r}", field=path)
        return value
    if kind == "string":
        if not isinstance(value, str):
            raise InvalidArgument(f"expected a string, got {type(value).__name__}", field=path)
        if f.is_bytes:
            return _bytes(value, path)
        return value
    # enum
    if isinstance(value, str) and value in f.enum_by_name:
        return f.enum_by_name[value]
    if isinstance(value, int) and not isinstance(value, bool) and value in f.enum_numbers:
        return value
    raise InvalidArgument(f"must be one of {list(f.enum_names)}", field=path)


def _bytes(value: str, path: str) -> bytes:
    # As json_format reads bytes: standard or URL-safe base64, padding optional.
    raw = value.encode("utf-8")
    try:
        return base64.urlsafe_b64decode(raw.replace(b"+", b"-").replace(b"/", b"_")
                                        + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument("expected base64-encoded bytes", field=path) from exc


def _fill(msg: Message, data: Any, path: str, skip: frozenset[str] = frozenset()) -> None:
    """Checks `data` against `msg`'s type and sets it on `msg`, in one pass: errors name the
    field's path; what json_format does with the rare kinds (maps, well-known types) it still
    does, for those fields only."""
    if not isinstance(data, dict):
        raise InvalidArgument(f"expected an object, got {type(data).__name__}", field=path or "input")
    by_key, names = _plan(msg.DESCRIPTOR)
    oneofs: set[str] = set()
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        f = by_key.get(key)
        if f is None or f.name in skip:
            allowed = sorted(n for n in names if n not in skip)
            raise InvalidArgument(f"unknown field; allowed fields are {', '.join(allowed)}", field=where)
        if value is None:
            if f.message == "google.protobuf.Value" or not f.repeated and f.kind == "object":
                _slow(msg, key, value, where)
            else:
                msg.ClearField(f.name)
            continue
        if f.oneof is not None:
            if f.oneof in oneofs:
                raise InvalidArgument(f"only one field of '{f.oneof}' may be set", field=where)
            oneofs.add(f.oneof)
        if f.is_map:
            if not isinstance(value, dict):
                raise InvalidArgument("expected an object", field=where)
            _slow(msg, key, value, where)
        elif f.repeated:
            if not isinstance(value, list):
                raise InvalidArgument(f"expected a list, got {type(value).__name__}", field=where)
            target = getattr(msg, f.name)
            del target[:]
            if f.kind != "object":
                target.extend([_check_scalar(f, item, f"{where}[{i}]") for i, item in enumerate(value)])
                continue
            for i, item in enumerate(value):
                _message_value(f, item, f"{where}[{i}]")
            if f.message in _WELL_KNOWN:
                _slow(msg, key, value, where)
            else:
                for i, item in enumerate(value):
                    _fill(target.add(), item, f"{where}[{i}]")
        elif f.kind != "object":
            try:
                setattr(msg, f.name, _check_scalar(f, value, where))
            except (TypeError, ValueError) as exc:
                raise InvalidArgument(str(exc), field=where) from None
        else:
            _message_value(f, value, where)
            if f.message == "google.protobuf.Struct":
                target = getattr(msg, f.name)
                target.Clear()
                target.update(value)
            elif f.message in _WELL_KNOWN:
                _slow(msg, key, value, where)
            else:
                sub = getattr(msg, f.name)
                sub.SetInParent()
                _fill(sub, value, where)


def _message_value(f: _Field, value: Any, path: str) -> None:
    """The shape checks of a message-typed value (free JSON passes; a timestamp is a string)."""
    if f.message in _FREE_JSON:
        if f.message == "google.protobuf.Struct" and not isinstance(value, dict):
            raise InvalidArgument("expected an object", field=path)
    elif f.message == "google.protobuf.Timestamp":
        if not isinstance(value, str):
            raise InvalidArgument("expected an RFC 3339 timestamp string", field=path)
    elif f.message not in _WELL_KNOWN and not isinstance(value, dict):
        raise InvalidArgument(f"expected an object, got {type(value).__name__}", field=path)


def _slow(msg: Message, key: str, value: Any, path: str) -> None:
    """One field through json_format (maps and well-known types: rare, and its rules)."""
    try:
        json_format.ParseDict({key: value}, msg, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise InvalidArgument(str(exc), field=path) from exc


def parse_input(data: dict[str, Any] | struct_pb2.Struct, message_cls: type[Message], *,
                skip: frozenset[str] = ROUTER_FIELDS) -> Message:
    """Builds a typed request from JSON; unknown or wrongly typed fields are InvalidArgument."""
    if isinstance(data, struct_pb2.Struct):
        data = struct_to_dict(data)
    msg = message_cls()
    _fill(msg, data, "", skip)
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
    """A message as natural JSON: proto field names, integers as numbers.

    Plain messages (scalars, enums, strings, bytes, Structs, nested plain messages) are read
    field by field, the same JSON json_format writes; anything else (maps, well-known types,
    32-bit floats, non-finite numbers, printing defaults) goes through json_format itself."""
    if not defaults:
        data = _plain_dict(msg)
        if data is not None:
            return data
    data = json_format.MessageToDict(msg, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=defaults)
    _fix_int64(msg.DESCRIPTOR, data)
    return data


def _plain_dict(msg: Message) -> dict[str, Any] | None:
    """`msg` as JSON, or None when it holds a field only json_format renders."""
    by_key, _ = _plan(msg.DESCRIPTOR)
    out: dict[str, Any] = {}
    for descriptor, value in msg.ListFields():
        f = by_key.get(descriptor.name)
        if f is None or f.is_map or f.float32:
            return None
        if f.repeated:
            items = []
            for item in value:
                rendered = _plain_value(f, item)
                if rendered is _SLOW:
                    return None
                items.append(rendered)
            out[f.name] = items
        else:
            rendered = _plain_value(f, value)
            if rendered is _SLOW:
                return None
            out[f.name] = rendered
    return out


_SLOW = object()


def _plain_value(f: _Field, value: Any) -> Any:
    kind = f.kind
    if kind == "integer" or kind == "boolean":
        return value
    if kind == "string":
        return base64.b64encode(value).decode("ascii") if f.is_bytes else value
    if kind == "number":
        return value if value == value and value not in (_INF, -_INF) else _SLOW
    if kind == "enum":
        return f.enum_names_by_number.get(value, value)
    if f.message == "google.protobuf.Struct":
        try:
            return struct_to_dict(value)
        except ValueError:
            return _SLOW
    if f.message in _WELL_KNOWN or f.message.startswith("google.protobuf."):
        return _SLOW
    rendered = _plain_dict(value)
    return _SLOW if rendered is None else rendered


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
    return plain_json(struct_to_dict(struct))


# --- enums by their wire names --------------------------------------------------------------------

@functools.cache
def _enum_names(enum: EnumTypeWrapper) -> tuple[dict[int, str], dict[str, int]]:
    prefix = enum.Name(0).removesuffix("UNSPECIFIED")  # "ROLE_UNSPECIFIED" -> "ROLE_"
    by_number = {number: name.removeprefix(prefix).lower() for name, number in enum.items() if number}
    return by_number, {short: number for number, short in by_number.items()}


def enum_short_name(enum: EnumTypeWrapper, number: int) -> str:
    """A value by the name wire formats use: `ROLE_USER` -> "user"; "" for the zero value (unset)."""
    return _enum_names(enum)[0].get(number, "")


def enum_from_short_name(enum: EnumTypeWrapper, name: str) -> int:
    """The inverse of `enum_short_name`: "user" -> `ROLE_USER`; an unknown or empty name -> 0."""
    return _enum_names(enum)[1].get(name, 0)
