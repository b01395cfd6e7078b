"""The official openai SDK against SmolLM2 on both text engines: vLLM's (in the llm worker, where
vLLM is installed) and the transformers fallback (GENMESH_LLM_ENGINE=transformers). Each runs the
same requests: tools with tool_choice (named and required) whose arguments match the schema,
response_format json_schema, stop strings, seeds, n with logprobs/top_logprobs."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import AsyncIterator

import jsonschema
import openai
import pytest
import pytest_asyncio

from genmesh.models import build
from tests.conftest import Infra, Mesh, start_mesh

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
HAS_VLLM = importlib.util.find_spec("vllm") is not None
CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                         "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city", "days"], "additionalProperties": False}
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast for a city",
                                                 "parameters": CITY}}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "description": "Local time in a city",
                                              "parameters": {"type": "object", "properties": {
                                                  "city": {"type": "string", "maxLength": 12}},
                                                  "required": ["city"], "additionalProperties": False}}}
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}


def sdk(mesh: Mesh) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{mesh.edge_url}/v1", api_key=mesh.api_key, max_retries=0,
                         _strict_response_validation=True, timeout=1200)


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=["vllm", "transformers"])
async def client(request: pytest.FixtureRequest, smollm2: Mesh, infra: Infra,
                 tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> AsyncIterator[openai.OpenAI]:
    engine = request.param
    if engine == "vllm":
        if not HAS_VLLM:
            pytest.skip("vLLM is not installed here (the fallback engine is tested alone)")
        # The session's SmolLM2 mesh (tests/e2e/conftest.py) serves SmolLM2 on vLLM, already warm.
        yield sdk(smollm2)
        return
    build.build_missing(models_dir, [SMOLLM2])
    env = {"GENMESH_LLM_ENGINE": engine, "GENMESH_LLM_MAX_NUM_SEQS": "8"}
    mesh: Mesh = await start_mesh(infra, tmp_path_factory.mktemp(f"sdk-{engine}"), ["router", "billing", "llm", "edge"],
                                  models_dir=models_dir, extra_env=env)
    try:
        client = sdk(mesh)
        # The model loads in this call, not in a test's.
        client.chat.completions.create(model=SMOLLM2, messages=[{"role": "user", "content": "hi"}], max_tokens=1)
        yield client
    finally:
        await mesh.supervisor.stop()


def ask(client: openai.OpenAI, content: str, **fields: object) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(model=SMOLLM2, messages=[{"role": "user", "content": content}],
                                          **fields)  # type: ignore[call-overload]


def test_tool_calls_named_and_required_have_arguments_matching_the_schema(client: openai.OpenAI) -> None:
    named = ask(client, "What will the weather be in Paris this week?", tools=[WEATHER_TOOL, TIME_TOOL],
                tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=60, seed=0)
    call = named.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.function.arguments), CITY)
    required = ask(client, "What time is it in Rome?", tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="required",
                   max_tokens=60, seed=0)
    choice = required.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    for call in choice.message.tool_calls:
        tool = {"get_weather": WEATHER_TOOL, "get_time": TIME_TOOL}[call.function.name]
        jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


def test_response_format_json_schema_is_followed(client: openai.OpenAI) -> None:
    out = ask(client, "Invent a person.", max_tokens=60, seed=1, response_format={
        "type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}})
    assert out.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(out.choices[0].message.content), PERSON)


def test_a_stop_string_ends_the_answer_before_it(client: openai.OpenAI) -> None:
    # ignore_eos (vLLM's extension): the answer is long enough to hold a stop string.
    whole = ask(client, "Count from one to ten in words.", max_tokens=30, temperature=0,
                extra_body={"ignore_eos": True}).choices[0].message.content
    words = whole.split()
    assert len(words) > 3, whole
    stop = words[2]
    assert whole.index(stop) > 0
    cut = ask(client, "Count from one to ten in words.", max_tokens=30, temperature=0, stop=[stop],
              extra_body={"ignore_eos": True})
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == whole[:whole.index(stop)]


def test_a_seed_repeats_a_sampled_answer(client: openai.OpenAI) -> None:
    def sampled(seed: int) -> str:
        return ask(client, "Tell me a story.", max_tokens=16, temperature=1.0, seed=seed).choices[0].message.content

    assert sampled(11) == sampled(11)


def test_n_choices_with_logprobs_and_top_logprobs(client: openai.OpenAI) -> None:
    out = ask(client, "Say something.", n=3, max_tokens=6, temperature=1.0, seed=5, logprobs=True, top_logprobs=3)
    assert sorted(c.index for c in out.choices) == [0, 1, 2]
    assert out.usage.completion_tokens == sum(len(c.logprobs.content) for c in out.choices)
    for choice in out.choices:
        for entry in choice.logprobs.content:
            assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
            ranked = [t.logprob for t in entry.top_logprobs]
            assert ranked == sorted(ranked, reverse=True)
            # The sampled token is one of the top 3 or less likely than the third.
            assert entry.token in {t.token for t in entry.top_logprobs} or entry.logprob <= ranked[-1] + 1e-4
