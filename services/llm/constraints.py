"""Structured output by constrained decoding with llguidance.

Owns turning `response_format` (json_object / json_schema) into an llguidance grammar, compiling
grammars into per-sequence `LLMatcher`s, and masking a batch's logits so each constrained row can
only continue its own grammar. EOS is allowed exactly when a grammar accepts, so constrained
output always parses; a sequence whose grammar is complete stops at once.
"""
from __future__ import annotations

import json
import threading
from typing import Any, Mapping, Sequence

import llguidance
import llguidance.hf
import llguidance.torch
import torch
from llguidance import LLMatcher, LLTokenizer
from transformers import PreTrainedTokenizerFast

from genmesh.errors import InvalidArgument

from .params import check_schema
from .protocol import ResponseFormat

# Whitespace in JSON output: free in kind, bounded in length, so a weak model cannot pad forever.
JSON_WHITESPACE = r"[\x20\x0A\x0D\x09]{1,16}"
_DEFAULTS = {"whitespace_pattern": JSON_WHITESPACE}
_BIT = torch.arange(32, dtype=torch.int32)


def json_schema_grammar(schema: Mapping[str, Any]) -> str:
    return LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=_DEFAULTS)  # type: ignore[arg-type]


def response_format_grammar(fmt: ResponseFormat | None) -> str | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return json_schema_grammar({"type": "object"})
    return json_schema_grammar(check_schema(fmt.schema or {}, "response_format.json_schema.schema"))


class GrammarCompiler:
    """Compiles grammars against one model's tokenizer (the llguidance tokenizer is built once, lazily)."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, eos_token_ids: Sequence[int], vocab_size: int) -> None:
        self._hf_tokenizer = tokenizer
        self._eos = list(eos_token_ids)
        self.vocab_size = vocab_size
        self._tokenizer: LLTokenizer | None = None
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                # ~1 s for a 50k vocabulary: done on the first constrained request, then reused.
                self._tokenizer = llguidance.hf.from_tokenizer(self._hf_tokenizer, n_vocab=self.vocab_size,
                                                               eos_token=self._eos)
            return self._tokenizer

    def matcher(self, grammar: str, field: str) -> LLMatcher:
        error = LLMatcher.validate_grammar(grammar, self.tokenizer)
        if error and not error.startswith("WARNING"):
            raise InvalidArgument(f"cannot be enforced: {error}", field=field)
        matcher = LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise InvalidArgument(f"cannot be enforced: {matcher.get_error()}", field=field)
        return matcher


class TokenMasker:
    """Masks the logits of constrained rows in place: one bitmask per row, computed in parallel."""

    def __init__(self, vocab_size: int, eos_token_ids: Sequence[int]) -> None:
        self.vocab_size = vocab_size
        self._eos = list(eos_token_ids)
        self._executor = llguidance.LLExecutor(num_threads=1)

    def apply(self, logits: torch.Tensor, matchers: Sequence[LLMatcher | None]) -> None:
        rows = [i for i, m in enumerate(matchers) if m is not None]
        if not rows:
            return
        words = (self.vocab_size + 31) // 32
        bitmask = torch.full((len(rows), words), -1, dtype=torch.int32)
        llguidance.torch.fill_next_token_bitmask_par(
            self._executor, [(matchers[i], j) for j, i in enumerate(rows)], bitmask)  # type: ignore[misc]
        allowed = ((bitmask.unsqueeze(-1) >> _BIT) & 1).view(len(rows), words * 32).bool()
        vocab = logits.shape[1]
        if allowed.shape[1] < vocab:
            allowed = torch.cat([allowed, allowed.new_zeros(len(rows), vocab - allowed.shape[1])], dim=1)
        allowed = allowed[:, :vocab]
        # A matcher in an error state allows nothing: let it end instead of sampling from NaNs.
        for row in (~allowed.any(dim=1)).nonzero().flatten().tolist():
            allowed[row, self._eos] = True
        index = torch.tensor(rows)
        logits[index] = logits[index].masked_fill(~allowed, float("-inf"))
