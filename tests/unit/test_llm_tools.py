"""Tool calling: definitions and tool_choice, forced (llguidance) calls on the tiny Llama, streamed
tool-call deltas, parsing calls out of free text, and tool results feeding the next turn."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest

from genmesh.models.language import BUILDERS
from genmesh.services.llm.chat import ChatFormatter
from genmesh.services.llm.engine import EngineConfig, LLMEngine
from genmesh.services.llm.protocol import FunctionTool, GenerationRequest, Message, ToolChoice
from genmesh.services.llm.sampling import SamplingParams
from genmesh.services.llm.tools import ToolCallParser

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city", "unit"], "additionalProperties": False}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "description": "Search the web.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string", "maxLength": 20},
                                                    "limit": {"type": "integer", "minimum": 1, "maximum": 5}},
                   "required": ["query"], "additionalProperties": False}}}
TOOLS = tuple(FunctionTool(name=t["function"]["name"], description=t["function"]["description"],
                           parameters=t["function"]["parameters"]) for t in (WEATHER, SEARCH))
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, SEARCH)}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMEngine]:
    path: Path = tmp_path_factory.mktemp("tiny-llama")
    BUILDERS["genmesh/tiny-llama"](path)
    engine = LLMEngine.load(path, model_id="genmesh/tiny-llama", config=EngineConfig(max_batch_size=16, threads=1))
    yield engine
    engine.close()


def named(function: str) -> ToolChoice:
    return ToolChoice(mode="function", function_name=function)


def ask(choice: ToolChoice, seed: int, **sampling: Any) -> GenerationRequest:
    return GenerationRequest(messages=(Message(role="user", content="What is the weather in Paris?"),),
                             tools=TOOLS, tool_choice=choice,
                             sampling=SamplingParams(seed=seed, **sampling))


@pytest.mark.parametrize("seed", range(5))
async def test_named_tool_call_arguments_validate_against_the_function_schema(engine: LLMEngine, seed: int) -> None:
    completion = await engine.complete(ask(named("get_weather"), seed))
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"  # as OpenAI, for a named tool_choice
    assert choice.text == ""
    assert len(choice.tool_calls) == 1
    call = choice.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS["get_weather"])


async def test_required_tool_choice_calls_one_of_the_tools(engine: LLMEngine) -> None:
    for seed in range(3):
        choice = (await engine.complete(ask(ToolChoice(mode="required"), seed))).choices[0]
        assert choice.finish_reason == "tool_calls"
        assert len(choice.tool_calls) == 1 and choice.text == ""
        call = choice.tool_calls[0]
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


async def test_required_with_parallel_calls_allows_several_valid_calls(engine: LLMEngine) -> None:
    request = replace(ask(ToolChoice(mode="required"), seed=0), parallel_tool_calls=True)
    choice = (await engine.complete(request)).choices[0]
    assert choice.finish_reason == "tool_calls"
    assert len(choice.tool_calls) > 1
    assert len({c.id for c in choice.tool_calls}) == len(choice.tool_calls)
    for call in choice.tool_calls:  # each one is valid for its own function
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


async def test_streamed_tool_call_deltas_rebuild_the_call(engine: LLMEngine) -> None:
    request = ask(named("search"), seed=3)
    deltas = [d async for d in engine.generate(request)]
    pieces = [call for d in deltas for call in d.tool_calls]
    first, rest = pieces[0], pieces[1:]
    assert (first.index, first.type, first.name, first.arguments) == (0, "function", "search", "")
    assert first.id and first.id.startswith("call_")
    assert rest and all(p.id is None and p.name is None and p.index == 0 for p in rest)
    arguments = "".join(p.arguments for p in rest)
    final = (await engine.complete(request)).choices[0].tool_calls[0]
    assert arguments == final.function.arguments
    jsonschema.validate(json.loads(arguments), SCHEMAS["search"])
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]


async def test_tool_choice_none_renders_no_tools(engine: LLMEngine) -> None:
    with_tools = engine.count_tokens(ask(ToolChoice(mode="auto"), 1))
    without = engine.count_tokens(ask(ToolChoice(mode="none"), 1))
    assert with_tools > without
    completion = await engine.complete(ask(ToolChoice(mode="none"), 1, max_tokens=8))
    assert completion.choices[0].tool_calls == ()


async def test_tool_results_feed_the_next_turn(engine: LLMEngine) -> None:
    first = (await engine.complete(ask(named("get_weather"), seed=2)))
    call = first.choices[0].tool_calls[0]
    messages = (
        Message(role="user", content="What is the weather in Paris?"),
        Message(role="assistant", tool_calls=(call,)),
        Message(role="tool", tool_call_id=call.id, content='{"temperature": 21}'),
    )
    follow_up = GenerationRequest(messages=messages, tools=TOOLS, sampling=SamplingParams(seed=1, max_tokens=8))
    formatter = ChatFormatter(engine.tokenizer, engine.max_context)
    prompt = engine.tokenizer.decode(formatter.render(messages, TOOLS))
    assert f"<tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {call.function.arguments}}}\n</tool_call>" \
        in prompt
    assert "<tool_response>\n{\"temperature\": 21}\n</tool_response>" in prompt
    completion = await engine.complete(follow_up)
    assert completion.usage.prompt_tokens == engine.count_tokens(follow_up)


def _feed_in_pieces(parser: ToolCallParser, text: str, size: int) -> tuple[str, list]:
    content, deltas = "", []
    for i in range(0, len(text), size):
        c, d = parser.feed(text[i:i + size])
        content, deltas = content + c, deltas + d
    c, d = parser.finish()
    return content + c, deltas + d


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_parser_splits_content_and_calls_however_the_text_is_chunked(size: int) -> None:
    text = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "note": "a}\\"b"}}'
            '\n</tool_call>\n<tool_call>\n{"name": "search", "arguments": {"query": "news"}}\n</tool_call>')
    ids = iter(["call_a", "call_b"])
    parser = ToolCallParser(new_id=lambda: next(ids))
    content, deltas = _feed_in_pieces(parser, text, size)
    assert content == "Let me check.\n"
    calls = parser.calls
    assert [(c.id, c.function.name) for c in calls] == [("call_a", "get_weather"), ("call_b", "search")]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris", "note": 'a}"b'}
    assert json.loads(calls[1].function.arguments) == {"query": "news"}
    for index, call in enumerate(calls):
        mine = [d for d in deltas if d.index == index]
        assert mine[0].id == call.id and mine[0].name == call.function.name and mine[0].arguments == ""
        assert "".join(d.arguments for d in mine[1:]) == call.function.arguments


def test_parser_reads_a_call_written_in_another_key_order() -> None:
    parser = ToolCallParser()
    content, _ = _feed_in_pieces(parser, '<tool_call>\n{"arguments": {"q": 1}, "name": "search"}\n</tool_call>', 4)
    assert content == ""
    assert [(c.function.name, json.loads(c.function.arguments)) for c in parser.calls] == [("search", {"q": 1})]


def test_parser_leaves_plain_text_and_broken_calls_as_content() -> None:
    parser = ToolCallParser()
    content, deltas = _feed_in_pieces(parser, "Use <tool when needed. <tool_call> not json", 2)
    assert content == "Use <tool when needed. <tool_call> not json"
    assert deltas == [] and parser.calls == ()
