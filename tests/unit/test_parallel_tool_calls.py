"""parallel_tool_calls end to end without a model: each wire format's switch reaches the LLM proto,
the worker's mapping keeps it, and with it off the worker's tool-call parser answers one call."""
from __future__ import annotations

import json

import pytest

from genmesh.services.edge import anthropic_convert, responses_convert
from genmesh.services.edge.anthropic_protocol import MessagesRequest
from genmesh.services.edge.responses_protocol import ResponsesRequest
from genmesh.services.llm import convert
from genmesh.services.llm.tools import ToolCallParser

TOOL = {"name": "f", "input_schema": {"type": "object"}}
TWO_CALLS = ('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n'
             '<tool_call>\n{"name": "f", "arguments": {"a": 2}}\n</tool_call>')


def no_urls(_url: str) -> bool:
    return False


@pytest.mark.parametrize("disable, expected", [(True, False), (False, True), (None, None)])
def test_anthropic_disable_parallel_tool_use_is_the_inverse_of_parallel_tool_calls(
        disable: bool | None, expected: bool | None) -> None:
    choice: dict = {"type": "auto"}
    if disable is not None:
        choice["disable_parallel_tool_use"] = disable
    body = MessagesRequest.model_validate({"model": "m", "max_tokens": 5, "tools": [TOOL], "tool_choice": choice,
                                           "messages": [{"role": "user", "content": "q"}]})
    req = anthropic_convert.chat_request(body, "m", no_urls)
    assert req.HasField("parallel_tool_calls") == (expected is not None)
    assert convert.chat_request(req).parallel_tool_calls == expected


@pytest.mark.parametrize("parallel", [True, False, None])
def test_responses_parallel_tool_calls_reaches_the_worker_request(parallel: bool | None) -> None:
    raw: dict = {"model": "m", "input": "q", "tools": [{"type": "function", "name": "f",
                                                         "parameters": {"type": "object"}}]}
    if parallel is not None:
        raw["parallel_tool_calls"] = parallel
    body = ResponsesRequest.model_validate(raw)
    req = responses_convert.chat_request(body, "m", responses_convert.chat_messages(
        responses_convert.input_items(body, no_urls), None))
    assert req.HasField("parallel_tool_calls") == (parallel is not None)
    assert convert.chat_request(req).parallel_tool_calls == parallel


def _parse(parser: ToolCallParser, text: str, size: int) -> tuple[str, list]:
    content, deltas = "", []
    for i in range(0, len(text), size):
        c, d = parser.feed(text[i:i + size])
        content, deltas = content + c, deltas + d
    c, d = parser.finish()
    return content + c, deltas + d


@pytest.mark.parametrize("size", [1, 7, len(TWO_CALLS)])
def test_without_parallel_calls_the_parser_answers_the_first_call_only(size: int) -> None:
    parser = ToolCallParser(parallel=False)
    content, deltas = _parse(parser, TWO_CALLS, size)
    assert content == ""
    assert {d.index for d in deltas} == {0}
    assert [(c.function.name, json.loads(c.function.arguments)) for c in parser.calls] == [("f", {"a": 1})]


def test_with_parallel_calls_the_parser_answers_every_call() -> None:
    parser = ToolCallParser()
    _parse(parser, TWO_CALLS, 5)
    assert [json.loads(c.function.arguments) for c in parser.calls] == [{"a": 1}, {"a": 2}]
