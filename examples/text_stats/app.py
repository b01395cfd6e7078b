"""text-stats: a tiny genmesh app. Word and character counts, the most common words, and a
streamed word-by-word transformation; deploy it with

    genmesh deploy examples/text_stats/app.py::TextStats
"""
from __future__ import annotations

import collections
import logging
import re
import time
from typing import Iterator, Literal

from pydantic import BaseModel, Field

import genmesh

log = logging.getLogger("text-stats")
WORD = re.compile(r"[\w']+")


class TextInput(BaseModel):
    text: str = Field(description="the text to analyse", max_length=100_000)
    top: int = Field(default=3, ge=0, le=50, description="how many of the most common words to list")


class TextStatsOutput(BaseModel):
    words: int
    characters: int
    lines: int
    top_words: list[tuple[str, int]]


class TransformInput(BaseModel):
    text: str = Field(max_length=100_000)
    mode: Literal["upper", "lower", "title", "reverse"] = "upper"
    delay_ms: int = Field(default=0, ge=0, le=1000, description="pause between streamed words")


class TransformOutput(BaseModel):
    text: str
    done: int = Field(description="words transformed so far")
    total: int


class TextStats(genmesh.App):
    """Counts words, characters and lines; transforms text, streaming it word by word."""

    name = "text-stats"
    machine_type = "CPU"
    keep_alive = 30
    min_concurrency = 0
    max_concurrency = 2

    def setup(self) -> None:
        # Real apps load their model here, once per runner.
        self.stopwords = {"a", "an", "and", "the", "of", "to", "in", "is", "it"}
        log.info("text-stats ready")

    @genmesh.endpoint("/")
    def stats(self, request: TextInput) -> TextStatsOutput:
        words = [w.lower() for w in WORD.findall(request.text)]
        common = collections.Counter(w for w in words if w not in self.stopwords).most_common(request.top)
        return TextStatsOutput(words=len(words), characters=len(request.text),
                               lines=request.text.count("\n") + 1 if request.text else 0,
                               top_words=common)

    @genmesh.endpoint("/transform")
    def transform(self, request: TransformInput) -> Iterator[TransformOutput]:
        words = request.text.split()
        out: list[str] = []
        for i, word in enumerate(words, 1):
            out.append(_apply(request.mode, word))
            if request.delay_ms:
                time.sleep(request.delay_ms / 1000)
            yield TransformOutput(text=" ".join(out), done=i, total=len(words))
        if not words:
            yield TransformOutput(text="", done=0, total=0)


def _apply(mode: str, word: str) -> str:
    if mode == "upper":
        return word.upper()
    if mode == "lower":
        return word.lower()
    if mode == "title":
        return word.title()
    return word[::-1]
