"""Structured output: response_format json_object / json_schema enforced by llguidance, even on the
tiny seeded-random Llama (whose unconstrained output is noise)."""
from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest

from genmesh.errors import InvalidArgument
from genmesh.models.language import BUILDERS
from genmesh.services.llm.engine import EngineConfig, LLMEngine
from genmesh.services.llm.protocol import GenerationRequest, Message, ResponseFormat
from genmesh.services.llm.sampling import SamplingParams


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMEngine]:
    path: Path = tmp_path_factory.mktemp("tiny-llama")
    BUILDERS["genmesh/tiny-llama"](path)
    engine = LLMEngine.load(path, model_id="genmesh/tiny-llama", config=EngineConfig(max_batch_size=32, threads=1))
    yield engine
    engine.close()


_NAMES = ["name", "age", "city", "ok", "tags", "kind", "score", "note", "id", "level"]
_ENUM_VALUES: list[Any] = ["red", "green", "blue", "small", "large", 1, 2, True, None]


def random_schema(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """An object schema: string/integer/boolean/enum/array (and one level of object) properties."""
    names = rng.sample(_NAMES, rng.randint(1, 4))
    properties = {name: _random_property(rng, depth) for name in names}
    return {"type": "object", "properties": properties, "required": rng.sample(names, rng.randint(0, len(names))),
            "additionalProperties": False}


def _random_property(rng: random.Random, depth: int) -> dict[str, Any]:
    kinds = ["string", "integer", "boolean", "enum", "array"] + (["object"] if depth == 0 else [])
    kind = rng.choice(kinds)
    if kind == "string":
        return {"type": "string", "minLength": rng.randint(0, 2), "maxLength": rng.randint(3, 10)}
    if kind == "integer":
        return {"type": "integer", "minimum": rng.randint(-100, 0), "maximum": rng.randint(1, 10_000)}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "enum":
        return {"enum": rng.sample(_ENUM_VALUES, rng.randint(1, 4))}
    if kind == "array":
        item = rng.choice([{"type": "integer", "minimum": 0, "maximum": 99}, {"type": "boolean"},
                           {"type": "string", "maxLength": 4}, {"enum": ["a", "b"]}])
        return {"type": "array", "items": item, "minItems": rng.randint(0, 1), "maxItems": rng.randint(1, 3)}
    return random_schema(rng, depth + 1)


def ask_json(fmt: ResponseFormat, seed: int, max_tokens: int | None = None) -> GenerationRequest:
    return GenerationRequest(messages=(Message(role="user", content="Reply with JSON."),), response_format=fmt,
                             sampling=SamplingParams(seed=seed, max_tokens=max_tokens))


async def test_json_schema_output_validates_for_20_random_schemas(engine: LLMEngine) -> None:
    rng = random.Random(1234)
    schemas = [random_schema(rng) for _ in range(20)]
    requests = [ask_json(ResponseFormat(type="json_schema", schema=s), seed=i) for i, s in enumerate(schemas)]
    # All at once: every row of the batch carries its own grammar.
    completions = await asyncio.gather(*(engine.complete(r) for r in requests))
    for schema, completion in zip(schemas, completions):
        choice = completion.choices[0]
        assert choice.finish_reason == "stop", (schema, choice.text)
        jsonschema.validate(json.loads(choice.text), schema)


async def test_json_object_output_is_an_object(engine: LLMEngine) -> None:
    # Free-form JSON from a noise model can outrun the tiny context, so ask several times at once:
    # whatever finishes is an object, whatever runs out of budget is an object cut short.
    requests = [ask_json(ResponseFormat(type="json_object"), seed=seed) for seed in range(8)]
    choices = [c.choices[0] for c in await asyncio.gather(*(engine.complete(r) for r in requests))]
    finished = [c for c in choices if c.finish_reason == "stop"]
    assert finished
    assert all(isinstance(json.loads(c.text), dict) for c in finished)
    assert all(c.finish_reason == "length" and c.text.startswith("{") for c in choices if c not in finished)


async def test_budget_exhausted_mid_object_is_finish_reason_length(engine: LLMEngine) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "minLength": 50, "maxLength": 60}},
              "required": ["a"], "additionalProperties": False}
    completion = await engine.complete(ask_json(ResponseFormat(type="json_schema", schema=schema), 1, 5))
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5


async def test_streamed_structured_output_joins_to_the_same_json(engine: LLMEngine) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0,
                                                                                "maximum": 9}},
              "required": ["ok", "n"], "additionalProperties": False}
    request = ask_json(ResponseFormat(type="json_schema", schema=schema), seed=9)
    text = "".join([d.text async for d in engine.generate(request)])
    assert text == (await engine.complete(request)).choices[0].text
    jsonschema.validate(json.loads(text), schema)


async def test_an_invalid_schema_is_rejected_before_generation(engine: LLMEngine) -> None:
    bad = ResponseFormat(type="json_schema", schema={"type": "object", "properties": {"a": {"type": "strin"}}})
    with pytest.raises(InvalidArgument) as info:
        await engine.complete(ask_json(bad, seed=1))
    assert info.value.field == "response_format.json_schema.schema"
