"""The incremental detokenizer (tokenizers' DecodeStream underneath): what it releases token by
token joins to the full decode, a character split across tokens is held until it is whole, and
the end releases what is left."""
from __future__ import annotations

import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from genmesh.services.llm.detokenize import IncrementalDetokenizer


@pytest.fixture(scope="module")
def bytes_tokenizer() -> Tokenizer:
    """One token per byte: every non-ASCII character is split across tokens."""
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Tokenizer(models.BPE(vocab, []))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken("<eos>", special=True)])
    return tokenizer


@pytest.mark.parametrize("text", ["héllo ✓ wörld", "絵文字 🎉👍🏽 ok", "  spaces\n\nand\ttabs "])
def test_pieces_join_to_the_full_decode_and_never_split_a_character(
        bytes_tokenizer: Tokenizer, text: str) -> None:
    ids = bytes_tokenizer.encode(text).ids
    assert len(ids) == len(text.encode())  # byte tokens: multi-byte characters span tokens
    detok = IncrementalDetokenizer(bytes_tokenizer)
    pieces = [detok.add(i) for i in ids]
    assert "".join(pieces) + detok.flush() == text
    assert all("\ufffd" not in p for p in pieces)
    # A 4-byte emoji releases nothing for its first three bytes, then the whole character.
    if "🎉" in text:
        start = len(text[:text.index("🎉")].encode())
        assert pieces[start:start + 4] == ["", "", "", "🎉"]


def test_special_tokens_are_skipped_and_a_dangling_byte_is_flushed_as_a_replacement(
        bytes_tokenizer: Tokenizer) -> None:
    eos = bytes_tokenizer.token_to_id("<eos>")
    ids = bytes_tokenizer.encode("a✓").ids
    detok = IncrementalDetokenizer(bytes_tokenizer)
    released = [detok.add(i) for i in [*ids[:-1], eos]]  # the check mark's last byte never comes
    assert "".join(released) == "a"
    assert detok.flush() == "\ufffd"
    assert detok.flush() == ""  # nothing is released twice
