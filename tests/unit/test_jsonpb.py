"""JSON input is checked against the typed request: errors name the field, schemas describe it."""
from __future__ import annotations

import pytest

from genmesh import jsonpb
from genmesh.errors import InvalidArgument
from genmesh.v1 import echo_pb2, imagegen_pb2, llm_pb2


def test_valid_json_becomes_the_typed_request() -> None:
    msg = jsonpb.parse_input({"prompt": "a cat", "width": 64.0, "seed": 7}, imagegen_pb2.GenerateImageRequest)
    assert (msg.prompt, msg.width, msg.seed) == ("a cat", 64, 7)


@pytest.mark.parametrize("data, field", [
    ({"promt": "x"}, "promt"),
    ({"width": "wide"}, "width"),
    ({"width": 1.5}, "width"),
    ({"seed": -1}, "seed"),
    ({"num_images": 2 ** 40}, "num_images"),
    ({"inline": "yes"}, "inline"),
    ({"model_id": "other/model"}, "model_id"),
])
def test_bad_fields_are_rejected_by_name(data: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        jsonpb.parse_input(data, imagegen_pb2.GenerateImageRequest)
    assert err.value.field == field
    assert field in err.value.message


def test_nested_errors_carry_the_path() -> None:
    with pytest.raises(InvalidArgument) as err:
        jsonpb.parse_input({"messages": [{"role": "ROLE_USER", "content": ["x"]}]}, llm_pb2.ChatCompleteRequest)
    assert err.value.field == "messages[0].content"


def test_free_form_json_passes_through() -> None:
    msg = jsonpb.parse_input({"prompt": "p", "data": {"a": [1, {"b": None}]}}, echo_pb2.EchoRequest)
    assert jsonpb.plain_json(jsonpb.struct_to_dict(msg.data)) == {"a": [1, {"b": None}]}


def test_schema_lists_fields_but_not_router_ones() -> None:
    schema = jsonpb.json_schema(imagegen_pb2.GenerateImageRequest.DESCRIPTOR)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["width"] == {"type": "integer"}
    assert "model_id" not in schema["properties"]


def test_output_integers_are_numbers_not_strings() -> None:
    assert jsonpb.to_dict(llm_pb2.Sampling(seed=5)) == {"seed": 5}
    assert jsonpb.plain_json({"a": 2.0, "b": 2.5}) == {"a": 2, "b": 2.5}
