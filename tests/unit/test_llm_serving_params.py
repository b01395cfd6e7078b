"""What the LLM path takes from clients and models, without a model: vLLM's and OpenAI's newer
request fields, the model's sampling defaults, the engine choice, partial billing and the
standard-checkpoint check."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from genmesh.catalog import ModelSpec
from genmesh.errors import InvalidArgument
from genmesh.models.language import is_standard_checkpoint
from genmesh.services.edge.openai_convert import chat_request
from genmesh.services.edge.openai_protocol import ChatCompletionRequest
from genmesh.services.llm import vllm_engine
from genmesh.services.llm.convert import sampling_params
from genmesh.services.llm.params import validate_request
from genmesh.services.llm.server import text_engine_kind
from genmesh.services.router.runner import Outcome
from genmesh.services.router.usage import billed_usage
from genmesh.settings import Settings
from genmesh.v1 import common_pb2, llm_pb2

# What `vllm bench serve --backend openai-chat` sends (seen on the wire).
BENCH_BODY = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
              "max_completion_tokens": 64, "stream": True, "stream_options": {"include_usage": True},
              "ignore_eos": True, "temperature": 0.0}


def test_the_vllm_bench_body_is_accepted_and_reaches_the_request() -> None:
    body = ChatCompletionRequest.model_validate({**BENCH_BODY, "min_tokens": 2, "stop_token_ids": [7, 9],
                                                 "safety_identifier": "user-1", "prompt_cache_key": "k",
                                                 "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1})
    req = chat_request(body, "m", lambda _url: False)
    assert req.sampling.ignore_eos and req.sampling.min_tokens == 2 and list(req.sampling.stop_token_ids) == [7, 9]
    assert req.sampling.max_tokens == 64 and req.sampling.top_k == 20 and req.safety_identifier == "user-1"
    assert req.prompt_cache_key == "k"
    validate_request(req)
    params = sampling_params(req)
    assert params.ignore_eos and params.min_tokens == 2 and params.stop_token_ids == (7, 9)


def test_min_tokens_above_max_tokens_is_refused_naming_it() -> None:
    req = llm_pb2.ChatCompleteRequest(model_id="m", messages=[llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content="x")],
                                      sampling=llm_pb2.Sampling(max_tokens=4, min_tokens=5))
    with pytest.raises(InvalidArgument) as err:
        validate_request(req)
    assert err.value.field == "min_tokens"


def test_model_defaults_fill_only_what_the_client_left_out() -> None:
    defaults = {"temperature": 0.2, "top_p": 0.9}
    omitted = llm_pb2.ChatCompleteRequest(model_id="m")
    assert (sampling_params(omitted, defaults).temperature, sampling_params(omitted, defaults).top_p) == (0.2, 0.9)
    given = llm_pb2.ChatCompleteRequest(model_id="m", sampling=llm_pb2.Sampling(temperature=1.0))
    assert sampling_params(given, defaults).temperature == 1.0 and sampling_params(given, defaults).top_p == 0.9
    assert sampling_params(omitted).temperature == 1.0  # no model defaults: the engine's own


def test_a_vllm_entry_falls_back_to_transformers_by_setting_or_without_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ModelSpec(id="a/b", task="chat", service="llm", engine="vllm")
    assert text_engine_kind(spec, Settings(llm_engine="transformers")) == "transformers"
    assert text_engine_kind(ModelSpec(id="a/c", task="chat", service="llm", engine="transformers"),
                            Settings(llm_engine="vllm")) == "transformers"
    monkeypatch.setattr(vllm_engine, "available", lambda: False)
    assert text_engine_kind(spec, Settings()) == "transformers"
    with pytest.raises(Exception, match="vLLM is not installed"):
        text_engine_kind(spec, Settings(llm_engine="vllm"))
    monkeypatch.setattr(vllm_engine, "available", lambda: True)
    assert text_engine_kind(spec, Settings()) == "vllm"


def test_a_stream_cut_short_is_billed_for_the_tokens_generated() -> None:
    outcome = Outcome(usage=common_pb2.Usage())
    outcome.tokens_so_far = llm_pb2.TokenUsage(prompt_tokens=30, completion_tokens=7)
    billed = billed_usage(outcome)
    assert [(i.unit, i.quantity) for i in billed.items] == [("input_tokens", 30), ("output_tokens", 7)]
    outcome.usage.items.add(unit="output_tokens", quantity=9)  # a finished stream's own usage wins
    assert [(i.unit, i.quantity) for i in billed_usage(outcome).items] == [("output_tokens", 9)]


def test_a_checkpoint_with_lm_head_but_no_embeddings_is_not_standard(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    save_file({"lm_head.weight": torch.zeros(2, 2)}, str(old / "model.safetensors"))
    save_file({"model.embed_tokens.weight": torch.zeros(2, 2)}, str(new / "model.safetensors"))
    assert not is_standard_checkpoint(old) and is_standard_checkpoint(new)
