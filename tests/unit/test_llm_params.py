"""The router's one definition of a valid llm request (llm/params.py): every range and rule,
named by field as the caller spelled it, before anything is queued or reaches a worker."""
from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2

from genmesh.errors import InvalidArgument
from genmesh.services.llm.params import validate_request
from genmesh.v1 import llm_pb2

USER = [llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content="hi")]


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(data)
    return out


def _tool(name: str = "get_weather", parameters: dict[str, Any] | None = None) -> llm_pb2.Tool:
    fn = llm_pb2.FunctionDefinition(name=name)
    if parameters is not None:
        fn.parameters.CopyFrom(_struct(parameters))
    return llm_pb2.Tool(type="function", function=fn)


@pytest.mark.parametrize(("sampling", "field", "fragment"), [
    ({"temperature": 2.5}, "temperature", "[0, 2]"),
    ({"temperature": -0.1}, "temperature", "[0, 2]"),
    ({"temperature": float("nan")}, "temperature", "[0, 2]"),
    ({"top_p": 0.0}, "top_p", "(0, 1]"),
    ({"min_p": 1.5}, "min_p", "[0, 1]"),
    ({"frequency_penalty": 2.5}, "frequency_penalty", "[-2, 2]"),
    ({"presence_penalty": -3}, "presence_penalty", "[-2, 2]"),
    ({"repetition_penalty": 0}, "repetition_penalty", "(0, 2]"),
    ({"repetition_penalty": 5}, "repetition_penalty", "(0, 2]"),  # the edge once allowed 10
    ({"max_tokens": 0}, "max_tokens", ">= 1"),
    ({"n": 0}, "n", "[1, 16]"),
    ({"n": 17}, "n", "[1, 16]"),
    ({"top_logprobs": 21, "logprobs": True}, "top_logprobs", "[0, 20]"),
    ({"top_logprobs": 3}, "top_logprobs", "logprobs"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"stop": [""]}, "stop[0]", "non-empty"),
    ({"max_tokens": 4, "min_tokens": 5}, "min_tokens", "max_tokens"),
    ({"stop_token_ids": [-1]}, "stop_token_ids[0]", ">= 0"),
    ({"stop_token_ids": list(range(65))}, "stop_token_ids", "at most 64"),
])
@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_sampling_out_of_range_names_the_field_and_range(kind: str, sampling: dict, field: str,
                                                         fragment: str) -> None:
    s = llm_pb2.Sampling(**sampling)
    request = (llm_pb2.ChatCompleteRequest(model_id="m", messages=USER, sampling=s) if kind == "chat"
               else llm_pb2.CompleteRequest(model_id="m", prompt="hi", sampling=s))
    with pytest.raises(InvalidArgument) as info:
        validate_request(request)
    assert info.value.field == field
    assert fragment in info.value.message


def test_the_edges_of_every_range_are_accepted() -> None:
    s = llm_pb2.Sampling(temperature=2.0, top_p=1.0, min_p=0.0, frequency_penalty=-2, presence_penalty=2,
                         repetition_penalty=2.0, n=16, logprobs=True, top_logprobs=20, stop=["a"] * 4,
                         max_tokens=1, min_tokens=1, seed=-(2**63))
    validate_request(llm_pb2.ChatCompleteRequest(model_id="m", messages=USER, sampling=s))


@pytest.mark.parametrize(("request_fields", "field"), [
    ({"tools": [_tool()], "tool_choice": llm_pb2.ToolChoice(mode=llm_pb2.TOOL_CHOICE_MODE_FUNCTION,
                                                             function_name="nope")}, "tool_choice.function.name"),
    ({"tool_choice": llm_pb2.ToolChoice(mode=llm_pb2.TOOL_CHOICE_MODE_REQUIRED)}, "tool_choice"),
    ({"tool_choice": llm_pb2.ToolChoice(mode=9)}, "tool_choice"),
    ({"tools": [_tool("bad name")]}, "tools[0].function.name"),
    ({"tools": [_tool("f", {"type": "array"})]}, "tools[0].function.parameters"),
    ({"tools": [_tool("f", {"type": "object", "properties": 3})]}, "tools[0].function.parameters"),
    ({"tools": [llm_pb2.Tool(type="retrieval", function=llm_pb2.FunctionDefinition(name="f"))]}, "tools[0].type"),
    ({"tools": [_tool(), _tool()]}, "tools"),
    ({"response_format": llm_pb2.ResponseFormat(type="json_schema")}, "response_format.json_schema"),
    ({"response_format": llm_pb2.ResponseFormat(type="json_schema", json_schema=_struct({"type": 5}))},
     "response_format.json_schema"),
    ({"response_format": llm_pb2.ResponseFormat(type="yaml")}, "response_format.type"),
])
def test_tools_tool_choice_and_formats_name_the_field(request_fields: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_request(llm_pb2.ChatCompleteRequest(model_id="m", messages=USER, **request_fields))
    assert info.value.field == field


@pytest.mark.parametrize(("messages", "field"), [
    ([], "messages"),
    ([llm_pb2.ChatMessage(content="x")], "messages[0].role"),
    ([llm_pb2.ChatMessage(role=9, content="x")], "messages[0].role"),
    ([llm_pb2.ChatMessage(role=llm_pb2.ROLE_TOOL, content="x")], "messages[0].tool_call_id"),
    ([llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content="x", tool_calls=[llm_pb2.ToolCall(id="c")])], "messages[0].tool_calls"),
    ([llm_pb2.ChatMessage(role=llm_pb2.ROLE_ASSISTANT, tool_calls=[llm_pb2.ToolCall(id="c")])],
     "messages[0].tool_calls[0].function.name"),
    ([llm_pb2.ChatMessage(role=llm_pb2.ROLE_SYSTEM, parts=[llm_pb2.ContentPart(type="image_url", image_url="data:x")])],
     "messages[0].parts[0]"),
])
def test_bad_messages_name_the_field(messages: list, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_request(llm_pb2.ChatCompleteRequest(model_id="m", messages=messages))
    assert info.value.field == field


def test_a_named_tool_with_a_valid_schema_passes() -> None:
    validate_request(llm_pb2.ChatCompleteRequest(
        model_id="m", messages=USER, parallel_tool_calls=False,
        tools=[_tool("get_weather", {"type": "object", "properties": {"city": {"type": "string"}}})],
        tool_choice=llm_pb2.ToolChoice(mode=llm_pb2.TOOL_CHOICE_MODE_FUNCTION, function_name="get_weather")))


@pytest.mark.parametrize(("request_fields", "field"), [
    ({}, "prompt"),
    ({"prompt": "hi", "messages": USER}, "prompt"),
    ({"messages": [llm_pb2.ChatMessage(role=llm_pb2.ROLE_TOOL, content="42")]}, "messages[0].tool_call_id"),
    ({"messages": USER, "tools": [_tool("bad name")]}, "tools[0].function.name"),
])
def test_a_chat_to_tokenize_follows_the_chat_rules(request_fields: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_request(llm_pb2.TokenizeRequest(model_id="m", **request_fields))
    assert info.value.field == field
