"""Request limits, defined once: the router's validators, the edge's wire models and the workers'
engines all read them from here, so a range cannot disagree between two places.

Torch-free and import-light: the edge and the router import it on their hot paths.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """A closed numeric range, optionally open at the low end (`top_p` may not be 0)."""

    low: float
    high: float
    low_open: bool = False

    def __contains__(self, value: float) -> bool:
        return (math.isfinite(value) and self.low <= value <= self.high
                and not (self.low_open and value == self.low))

    def __str__(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"


# Sampling, shared by chat and completions. OpenAI's ranges; top_k, min_p and repetition_penalty
# are vLLM's extensions (repetition_penalty: 1 = off; above 2 degenerates on every model we serve).
SAMPLING_RANGES: dict[str, Range] = {
    "temperature": Range(0.0, 2.0),
    "top_p": Range(0.0, 1.0, low_open=True),
    "min_p": Range(0.0, 1.0),
    "frequency_penalty": Range(-2.0, 2.0),
    "presence_penalty": Range(-2.0, 2.0),
    "repetition_penalty": Range(0.0, 2.0, low_open=True),
}

MAX_N = 16                   # choices per request (an engine may allow fewer: its batch size)
MAX_TOP_LOGPROBS = 20        # chat's top_logprobs, as OpenAI
MAX_LEGACY_LOGPROBS = 5      # the completions API's integer `logprobs`, as OpenAI
MAX_STOP_SEQUENCES = 4       # as OpenAI
MAX_STOP_TOKEN_IDS = 64
MAX_EMBED_INPUTS = 2048      # as OpenAI
MAX_FUNCTION_NAME = 64       # tool and json_schema names, as OpenAI

# What the protos can carry: token counts, top_k and dimensions are int32, seeds int64.
INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
