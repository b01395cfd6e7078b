"""Per-sequence sampling: parameters with OpenAI's ranges, and one batched sampling step.

Every row of a batch keeps its own parameters and its own seeded `torch.Generator`, and each row
draws exactly one uniform number per sampled token, so a seeded request produces the same tokens
alone or batched with any others. Logprobs are those of the model's distribution after penalties
and any grammar mask, before temperature and truncation (what vLLM reports by default).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Sequence

import torch

_UINT64 = 2**64


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens for one request. Not validated here: the router checked the request
    (llm/params.py, against genmesh/limits.py) before a worker saw it; direct callers (tests,
    benchmarks) pass values in range.

    `max_tokens=None` means "up to the model's context". `temperature=0` is greedy. `top_k=0`,
    `top_p=1`, `min_p=0` and penalties of 0 (repetition 1) switch those filters off. Choice `i` of
    `n` samples with seed `seed + i`, so choice 0 of a seeded request matches the same request
    with `n=1`.
    """

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    ignore_eos: bool = False  # benchmarks: generate exactly max_tokens
    min_tokens: int = 0  # end-of-sequence (and stop_token_ids) masked until this many tokens
    stop_token_ids: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        # Sequences as tuples, so the frozen params hash and compare by value.
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids or ()))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def penalised(self) -> bool:
        return bool(self.frequency_penalty or self.presence_penalty or self.repetition_penalty != 1.0)

    def generator(self, choice: int) -> torch.Generator | None:
        """The generator for choice `choice`: seeded when a seed was given, random otherwise."""
        if self.greedy:
            return None
        seed = (self.seed + choice) % _UINT64 if self.seed is not None else secrets.randbits(63)
        generator = torch.Generator(device="cpu")
        generator.manual_seed(seed)
        return generator


class SequenceSampler:
    """One sequence's sampling state: parameters, generator and the token counts penalties need."""

    def __init__(self, params: SamplingParams, generator: torch.Generator | None, prompt_ids: Sequence[int],
                 vocab_size: int) -> None:
        self.params = params
        self.generator = generator
        self._vocab_size = vocab_size
        self._counts: torch.Tensor | None = None  # generated-token counts (frequency/presence)
        self._seen: torch.Tensor | None = None  # prompt + generated tokens (repetition penalty)
        if params.penalised:
            self._counts = torch.zeros(vocab_size, dtype=torch.float32)
            if params.repetition_penalty != 1.0:
                self._seen = torch.zeros(vocab_size, dtype=torch.bool)
                ids = torch.tensor([t for t in prompt_ids if 0 <= t < vocab_size], dtype=torch.long)
                self._seen[ids] = True

    def clone(self, generator: torch.Generator | None) -> "SequenceSampler":
        other = SequenceSampler.__new__(SequenceSampler)
        other.params, other.generator, other._vocab_size = self.params, generator, self._vocab_size
        other._counts = None if self._counts is None else self._counts.clone()
        other._seen = None if self._seen is None else self._seen.clone()
        return other

    def observe(self, token: int) -> None:
        if self._counts is not None and 0 <= token < self._vocab_size:
            self._counts[token] += 1
            if self._seen is not None:
                self._seen[token] = True

    def penalise(self, logits: torch.Tensor) -> None:
        """Apply this sequence's penalties to its row of logits, in place."""
        p = self.params
        if self._counts is None:
            return
        row = logits[: self._vocab_size]
        if self._seen is not None:
            seen = row[self._seen]
            row[self._seen] = torch.where(seen > 0, seen / p.repetition_penalty, seen * p.repetition_penalty)
        if p.frequency_penalty:
            row -= p.frequency_penalty * self._counts
        if p.presence_penalty:
            row -= p.presence_penalty * (self._counts > 0).to(row.dtype)


@dataclass
class SampleOutput:
    tokens: list[int]
    logprobs: list[float | None]
    top_logprobs: list[list[tuple[int, float]]]


def sample(logits: torch.Tensor, samplers: Sequence[SequenceSampler]) -> SampleOutput:
    """Pick one token per row of `logits` ([rows, vocab], float32, penalties and masks applied)."""
    rows = logits.shape[0]
    tokens = [0] * rows
    want_lp = [i for i, s in enumerate(samplers) if s.params.logprobs]
    logprobs: list[float | None] = [None] * rows
    tops: list[list[tuple[int, float]]] = [[] for _ in range(rows)]
    lp_rows = torch.log_softmax(logits[want_lp], dim=-1) if want_lp else None

    greedy = [i for i, s in enumerate(samplers) if s.params.greedy]
    if greedy:
        picked = logits[greedy].argmax(dim=-1).tolist()
        for i, token in zip(greedy, picked):
            tokens[i] = token
    sampled = [i for i, s in enumerate(samplers) if not s.params.greedy]
    if sampled:
        for i, token in zip(sampled, _sample_rows(logits[sampled], [samplers[i] for i in sampled])):
            tokens[i] = token

    if lp_rows is not None:
        for j, i in enumerate(want_lp):
            logprobs[i] = float(lp_rows[j, tokens[i]])
            k = samplers[i].params.top_logprobs
            if k:
                values, ids = lp_rows[j].topk(k)
                tops[i] = list(zip(ids.tolist(), values.tolist()))
    return SampleOutput(tokens=tokens, logprobs=logprobs, top_logprobs=tops)


def _sample_rows(logits: torch.Tensor, samplers: Sequence[SequenceSampler]) -> list[int]:
    params = [s.params for s in samplers]
    temperature = torch.tensor([p.temperature for p in params], dtype=logits.dtype).unsqueeze(1)
    x = logits / temperature
    if any(p.top_k or p.top_p < 1.0 or p.min_p > 0.0 for p in params):
        x = _truncate(x, params)
    probs = torch.softmax(x, dim=-1)
    cdf = probs.cumsum(dim=-1)
    # One uniform draw per row from that row's own generator: the draw count never depends on the batch.
    uniform = torch.stack([torch.rand((), generator=s.generator, dtype=torch.float64) for s in samplers])
    target = (uniform.to(cdf.dtype) * cdf[:, -1]).unsqueeze(1)
    picked = torch.searchsorted(cdf, target, right=True).squeeze(1)
    picked = torch.minimum(picked, torch.full_like(picked, cdf.shape[1] - 1))
    # Floating-point ties at the top of the CDF could land on a zero-probability token; step back.
    out = picked.tolist()
    for r, token in enumerate(out):
        while probs[r, token] <= 0 and token > 0:
            token -= 1
        out[r] = token
    return out


def _truncate(x: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """top-k, top-p (nucleus) and min-p on temperature-scaled logits, each row with its own values."""
    vocab = x.shape[1]
    values, order = x.sort(dim=-1, descending=True)
    probs = torch.softmax(values, dim=-1)
    keep = torch.ones_like(values, dtype=torch.bool)
    ranks = torch.arange(vocab).unsqueeze(0)
    top_k = torch.tensor([p.top_k if p.top_k else vocab for p in params]).unsqueeze(1)
    keep &= ranks < top_k
    top_p = torch.tensor([p.top_p for p in params], dtype=probs.dtype).unsqueeze(1)
    keep &= (probs.cumsum(dim=-1) - probs) < top_p  # the most likely token always stays
    min_p = torch.tensor([p.min_p for p in params], dtype=probs.dtype).unsqueeze(1)
    keep &= probs >= min_p * probs[:, :1]
    keep[:, 0] = True
    values = values.masked_fill(~keep, float("-inf"))
    return torch.full_like(x, float("-inf")).scatter(1, order, values)
