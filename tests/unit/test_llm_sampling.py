"""Sampling parameters, the batched sampling step, incremental detokenisation and stop strings."""
from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from genmesh.services.llm.detokenize import IncrementalDetokenizer, StopStrings, TokenBytes
from genmesh.services.llm.sampling import SamplingParams, SequenceSampler, sample


def test_a_single_stop_string_is_normalised_to_a_tuple() -> None:
    assert SamplingParams(stop="END").stop == ("END",)


def _samplers(params: SamplingParams, rows: int, vocab: int) -> list[SequenceSampler]:
    return [SequenceSampler(params, params.generator(i), [], vocab) for i in range(rows)]


def test_greedy_and_top_k_1_pick_the_argmax() -> None:
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    expected = logits.argmax(dim=-1).tolist()
    assert sample(logits.clone(), _samplers(SamplingParams(temperature=0), 3, 50)).tokens == expected
    assert sample(logits.clone(), _samplers(SamplingParams(top_k=1, seed=5), 3, 50)).tokens == expected


def test_a_row_samples_the_same_token_whatever_else_is_in_the_batch() -> None:
    vocab = 200
    logits = torch.randn(4, vocab, generator=torch.Generator().manual_seed(1))
    params = SamplingParams(seed=42, top_p=0.9, top_k=50, min_p=0.01)
    alone = sample(logits[1:2].clone(), [SequenceSampler(params, params.generator(0), [], vocab)]).tokens[0]
    others = [SamplingParams(seed=s, temperature=0.7) for s in (1, 2)] + [SamplingParams(temperature=0)]
    batch = [SequenceSampler(others[0], others[0].generator(0), [], vocab),
             SequenceSampler(params, params.generator(0), [], vocab),
             SequenceSampler(others[1], others[1].generator(0), [], vocab),
             SequenceSampler(others[2], None, [], vocab)]
    assert sample(logits.clone(), batch).tokens[1] == alone


def test_top_p_never_samples_outside_the_nucleus() -> None:
    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0, -2.0]])
    params = SamplingParams(top_p=0.5, seed=0)
    sampler = SequenceSampler(params, params.generator(0), [], 5)
    assert {sample(logits.clone(), [sampler]).tokens[0] for _ in range(50)} == {0}


def test_presence_penalty_lowers_seen_tokens_only() -> None:
    params = SamplingParams(presence_penalty=1.5, frequency_penalty=0.5)
    sampler = SequenceSampler(params, None, [], 4)
    sampler.observe(2)
    sampler.observe(2)
    row = torch.zeros(4)
    sampler.penalise(row)
    assert row.tolist() == [0.0, 0.0, -2.5, 0.0]


def test_logprobs_are_normalised_and_top_logprobs_sorted() -> None:
    logits = torch.randn(1, 30, generator=torch.Generator().manual_seed(3))
    params = SamplingParams(temperature=0, logprobs=True, top_logprobs=5)
    out = sample(logits.clone(), [SequenceSampler(params, None, [], 30)])
    expected = torch.log_softmax(logits[0], dim=-1)
    assert out.logprobs[0] == pytest.approx(float(expected.max()))
    values = [lp for _, lp in out.top_logprobs[0]]
    assert values == sorted(values, reverse=True) and len(values) == 5
    assert out.top_logprobs[0][0][0] == out.tokens[0]


@pytest.fixture(scope="module")
def byte_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["hello world, héllo wörld ✓ done"] * 3, trainer=trainer)
    return tokenizer


def test_incremental_detokenisation_joins_to_the_full_decode(byte_tokenizer: Tokenizer) -> None:
    text = "héllo ✓ wörld — ok"
    ids = byte_tokenizer.encode(text).ids
    detok = IncrementalDetokenizer(byte_tokenizer)
    pieces = [detok.add(i) for i in ids] + [detok.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)  # a split multi-byte character is held, not mangled


def test_token_bytes_recover_partial_utf8(byte_tokenizer: Tokenizer) -> None:
    ids = byte_tokenizer.encode("✓").ids
    token_bytes = TokenBytes(byte_tokenizer)
    assert b"".join(token_bytes(i) for i in ids) == "✓".encode()


def test_stop_string_spanning_pushes_is_cut_and_never_released() -> None:
    stops = StopStrings(["STOP"])
    released = [stops.push(p) for p in ["abc S", "T", "O", "Pxyz"]]
    assert "".join(released) == "abc "
    assert stops.stopped and stops.push("more") == ""


def test_held_back_text_is_released_when_it_is_not_a_stop() -> None:
    stops = StopStrings(["STOP", "\n\n"])
    assert stops.push("abc ST") == "abc "
    assert stops.push("AR\n") == "STAR"
    assert stops.flush() == "\n"
    assert not stops.stopped
