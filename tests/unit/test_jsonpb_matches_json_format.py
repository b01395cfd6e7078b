"""genmesh.jsonpb reads and writes JSON field by field (json_format's generic walk was a large
share of every request's CPU); these properties hold it to json_format's own answers for every
task's request and response type, on generated values."""
from __future__ import annotations

import base64
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genmesh import jsonpb
from genmesh.errors import InvalidArgument
from genmesh.tasks import TASKS

REQUESTS = sorted({t.request_cls for t in TASKS.values()}, key=lambda c: c.DESCRIPTOR.full_name)
RESPONSES = sorted({t.response_cls for t in TASKS.values()}, key=lambda c: c.DESCRIPTOR.full_name)
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.text(max_size=4),
                      st.floats(allow_nan=False, allow_infinity=False), st.integers(-2 ** 40, 2 ** 40))
FREE_JSON = st.recursive(JSON_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)), max_leaves=6)
SKIPPED_MESSAGES = {"google.protobuf.Any", "google.protobuf.FieldMask"}


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    info = jsonpb._plan(field.containing_type)[0][field.name]
    if info.kind == "integer":
        return st.integers(info.low, info.high)
    if info.kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False, width=32 if info.float32 else 64)
    if info.kind == "boolean":
        return st.booleans()
    if info.kind == "enum":
        return st.sampled_from(info.enum_names)
    if info.is_bytes:
        return st.binary(max_size=6).map(lambda b: base64.b64encode(b).decode())
    return st.text(max_size=6)


def value_of(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    if field.message_type is None:
        return scalar(field)
    full = field.message_type.full_name
    if field.message_type.GetOptions().map_entry or full in SKIPPED_MESSAGES:
        return None
    if full == "google.protobuf.Struct":
        return st.dictionaries(st.text(max_size=4), FREE_JSON, max_size=3)
    if full in ("google.protobuf.Value", "google.protobuf.ListValue"):
        return FREE_JSON if full == "google.protobuf.Value" else st.lists(FREE_JSON, max_size=3)
    if full == "google.protobuf.Timestamp":
        return st.sampled_from(["2026-01-02T03:04:05Z", "1999-12-31T23:59:59.5Z"])
    if full == "google.protobuf.Duration":
        return st.sampled_from(["1.5s", "0s", "30s"])
    if full.startswith("google.protobuf."):
        return None
    if depth >= 2:
        return st.just({})
    return message_json(field.message_type, depth + 1)


def message_json(desc: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    options: dict[str, st.SearchStrategy[Any]] = {}
    oneofs: dict[str, str] = {}
    for field in desc.fields:
        if depth == 0 and field.name in jsonpb.ROUTER_FIELDS:
            continue
        strategy = value_of(field, depth)
        if strategy is None:
            continue
        if field.is_repeated:
            strategy = st.lists(strategy, max_size=3)
        options[field.name] = strategy
        if field.containing_oneof is not None:
            oneofs[field.name] = field.containing_oneof.name

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out: dict[str, Any] = {}
        used: set[str] = set()
        for name in draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=6)
                         if options else st.just([])):
            if name in oneofs and oneofs[name] in used:
                continue
            used.add(oneofs.get(name, ""))
            out[name] = draw(options[name])
        return out

    return build()


def json_format_parse(data: dict[str, Any], cls: type[Message]) -> Message:
    msg = cls()
    json_format.ParseDict(data, msg)
    return msg


def json_format_dict(msg: Message) -> dict[str, Any]:
    data = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    jsonpb._fix_int64(msg.DESCRIPTOR, data)
    return data


@pytest.mark.parametrize("cls", REQUESTS, ids=lambda c: c.DESCRIPTOR.name)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_parsed_requests_equal_json_formats(cls: type[Message], data: st.DataObject) -> None:
    body = data.draw(message_json(cls.DESCRIPTOR))
    try:
        ours = jsonpb.parse_input(body, cls)
    except InvalidArgument:
        # Our checks refuse more than json_format (unknown keys, nested nulls, ...): never less.
        return
    assert ours == json_format_parse(body, cls)


@pytest.mark.parametrize("cls", REQUESTS + RESPONSES, ids=lambda c: c.DESCRIPTOR.name)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rendered_messages_equal_json_formats(cls: type[Message], data: st.DataObject) -> None:
    body = data.draw(message_json(cls.DESCRIPTOR))
    try:
        msg = json_format_parse(body, cls)
    except json_format.ParseError:
        return
    assert jsonpb.to_dict(msg) == json_format_dict(msg)


@given(body=st.dictionaries(st.text(max_size=4), FREE_JSON, max_size=4))
def test_structs_read_back_as_json_format_reads_them(body: dict[str, Any]) -> None:
    struct = jsonpb.dict_to_struct(body)
    assert jsonpb.struct_to_dict(struct) == json_format.MessageToDict(struct)
    assert jsonpb.struct_to_json(struct) == jsonpb.plain_json(json_format.MessageToDict(struct))


def test_wrong_kinds_are_still_refused_by_name() -> None:
    from genmesh.v1 import echo_pb2

    for body, field in (({"num_events": "3"}, "num_events"), ({"data": [1]}, "data"),
                        ({"prompt": 3}, "prompt"), ({"nope": 1}, "nope")):
        with pytest.raises(InvalidArgument) as err:
            jsonpb.parse_input(body, echo_pb2.EchoRequest)
        assert err.value.field == field
