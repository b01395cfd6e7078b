"""A stop sequence that ends generation is reported as such, from the engine to Anthropic's
`stop_reason: "stop_sequence"` with the matched `stop_sequence`, plain and streamed; an end of
sequence stays `end_turn`."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from genmesh.models.language import BUILDERS
from genmesh.services.edge import anthropic_convert
from genmesh.services.llm import convert
from genmesh.services.llm.detokenize import StopStrings
from genmesh.services.llm.engine import EngineConfig, LLMEngine
from genmesh.services.llm.protocol import GenerationRequest, Message
from genmesh.services.llm.sampling import SamplingParams
from genmesh.v1 import llm_pb2


def test_stop_strings_report_the_earliest_match() -> None:
    stops = StopStrings(["END", "\n\n"])
    assert stops.push("one\n\ntwo END") == "one" and stops.stopped and stops.matched == "\n\n"
    held = StopStrings(["END"])
    assert held.push("abc EN") == "abc " and held.matched is None
    assert held.push("D more") == "" and held.matched == "END"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMEngine]:
    path: Path = tmp_path_factory.mktemp("tiny-llama")
    BUILDERS["genmesh/tiny-llama"](path)
    engine = LLMEngine.load(path, model_id="genmesh/tiny-llama", config=EngineConfig(max_batch_size=4, threads=1))
    yield engine
    engine.close()


def chat(**sampling: object) -> GenerationRequest:
    return GenerationRequest(messages=(Message(role="user", content="Say something"),),
                             sampling=SamplingParams(**sampling))


async def test_the_engine_names_the_stop_string_that_ended_a_choice(engine: LLMEngine) -> None:
    text = (await engine.complete(chat(max_tokens=60, seed=11, ignore_eos=True))).choices[0].text
    stop = text[20:26]
    stopped = (await engine.complete(chat(max_tokens=60, seed=11, ignore_eos=True, stop=["zzzz", stop]))).choices[0]
    assert stopped.finish_reason == "stop" and stopped.stop_sequence == stop
    deltas = [d async for d in engine.generate(chat(max_tokens=60, seed=11, ignore_eos=True, stop=[stop]))]
    assert deltas[-1].finish_reason == "stop" and deltas[-1].stop_sequence == stop
    assert all(d.stop_sequence is None for d in deltas[:-1])
    ran_out = (await engine.complete(chat(max_tokens=5, seed=11, ignore_eos=True, stop=["zzzz"]))).choices[0]
    assert ran_out.finish_reason == "length" and ran_out.stop_sequence is None
    result = convert.chat_result(await engine.complete(chat(max_tokens=60, seed=11, ignore_eos=True, stop=[stop])))
    assert result.choices[0].stop_sequence == stop


def _result(stop_sequence: str, finish: int = llm_pb2.FINISH_REASON_STOP) -> llm_pb2.ChatCompleteResult:
    return llm_pb2.ChatCompleteResult(choices=[llm_pb2.ChatChoice(
        finish_reason=finish, stop_sequence=stop_sequence,
        message=llm_pb2.ChatMessage(role=llm_pb2.ROLE_ASSISTANT, content="Hello"))])


def test_anthropic_messages_report_the_stop_sequence() -> None:
    out = anthropic_convert.message_json(_result("###"), model="m", message_id="msg_1")
    assert (out["stop_reason"], out["stop_sequence"]) == ("stop_sequence", "###")
    eos = anthropic_convert.message_json(_result(""), model="m", message_id="msg_2")
    assert (eos["stop_reason"], eos["stop_sequence"]) == ("end_turn", None)
    capped = anthropic_convert.message_json(_result("", llm_pb2.FINISH_REASON_LENGTH), model="m", message_id="m3")
    assert capped["stop_reason"] == "max_tokens"


def test_anthropic_streams_report_the_stop_sequence_in_message_delta() -> None:
    state = anthropic_convert.MessageStream(model="m", message_id="msg_1")
    state.start()
    state.on_chunk(llm_pb2.ChatCompleteChunk(choices=[llm_pb2.ChoiceDelta(content="Hello")]))
    state.on_chunk(llm_pb2.ChatCompleteChunk(choices=[llm_pb2.ChoiceDelta(
        finish_reason=llm_pb2.FINISH_REASON_STOP, stop_sequence="###")]))
    events = dict(state.on_result(llm_pb2.ChatCompleteResult()))
    assert events["message_delta"]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "###"}
