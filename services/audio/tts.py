"""Text-to-speech: request validation, sentence-by-sentence synthesis and streamed encoding.

An engine only turns one short piece of text into samples (``render``). This module validates the
request, cuts the text into sentences, renders them in order and pushes each through one
incremental encoder, yielding the bytes the output file gained after every sentence. The whole
file (``synthesize``) is by construction the concatenation of the stream.
"""
from __future__ import annotations

import math
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from genmesh.errors import Cancelled, InvalidArgument

from .encode import AudioFormat, StreamEncoder, audio_format, output_sample_rate
from .voices import Voice, resolve_voice

MAX_INPUT_CHARS = 4096
MIN_SPEED, MAX_SPEED = 0.25, 4.0
# Longest piece rendered at once: bounds latency to first audio and engine memory.
MAX_PIECE_CHARS = 300

_SENTENCE_END = re.compile(r"(?<=[.!?;:。！？])\s+|\n\s*")
_SOFT_BREAK = re.compile(r"(?<=[,—–])\s+|\s+")


@dataclass(frozen=True)
class SpeechRequest:
    """A validated speech request."""

    text: str
    voice: Voice
    speed: float
    format: AudioFormat

    @property
    def characters(self) -> int:
        """What the request is billed by: characters of input."""
        return len(self.text)


def validate_speech(text: object, voice: object, speed: object, fmt: object) -> SpeechRequest:
    """Check every field of a speech request; raise InvalidArgument naming the first bad one."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgument("must be a non-empty string", field="input")
    if len(text) > MAX_INPUT_CHARS:
        raise InvalidArgument(f"is {len(text)} characters; the limit is {MAX_INPUT_CHARS}",
                              field="input")
    if not isinstance(voice, str):
        raise InvalidArgument("must be a voice name", field="voice")
    resolved = resolve_voice(voice)
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not math.isfinite(speed) \
            or not MIN_SPEED <= speed <= MAX_SPEED:
        raise InvalidArgument(f"must be a number from {MIN_SPEED} to {MAX_SPEED}, got {speed!r}",
                              field="speed")
    if not isinstance(fmt, str):
        raise InvalidArgument("must be a format name", field="response_format")
    return SpeechRequest(text=text, voice=resolved, speed=float(speed),
                         format=audio_format(fmt.lower()))


def split_sentences(text: str, max_chars: int = MAX_PIECE_CHARS) -> list[str]:
    """Cut text into speakable pieces: sentences, and overlong sentences at commas or spaces."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip()
        while len(sentence) > max_chars:
            cut = max((m.end() for m in _SOFT_BREAK.finditer(sentence, 0, max_chars)), default=0)
            cut = cut or max_chars  # one unbroken run of characters: cut it anywhere
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    return [piece for piece in pieces if piece]


class TextToSpeech(ABC):
    """A speech engine: renders text to mono float32 samples at ``sample_rate``."""

    sample_rate: int

    @abstractmethod
    def render(self, text: str, voice: Voice, speed: float) -> np.ndarray:
        """Speak one short piece of text; float32 mono samples at ``self.sample_rate``."""

    def output_sample_rate(self, fmt: str) -> int:
        """The sample rate of the audio this engine produces in ``fmt``."""
        return output_sample_rate(audio_format(fmt), self.sample_rate)

    def synthesize_stream(self, text: str, voice: str = "alloy", speed: float = 1.0,
                          fmt: str = "mp3", cancel: threading.Event | None = None
                          ) -> Iterator[bytes]:
        """Validate now, then yield the encoded file in chunks as sentences are rendered.

        Every chunk is non-empty; their concatenation is one complete file. Raises ``Cancelled``
        from the iterator when ``cancel`` is set between sentences.
        """
        request = validate_speech(text, voice, speed, fmt)
        return self._stream(request, cancel)

    def synthesize(self, text: str, voice: str = "alloy", speed: float = 1.0, fmt: str = "mp3",
                   cancel: threading.Event | None = None) -> bytes:
        """The whole file; byte for byte the concatenation of ``synthesize_stream``."""
        return b"".join(self.synthesize_stream(text, voice, speed, fmt, cancel))

    def _stream(self, request: SpeechRequest, cancel: threading.Event | None) -> Iterator[bytes]:
        encoder = StreamEncoder(request.format, self.sample_rate)
        for piece in split_sentences(request.text):
            if cancel is not None and cancel.is_set():
                raise Cancelled("speech synthesis was cancelled")
            chunk = encoder.write(self.render(piece, request.voice, request.speed))
            if chunk:
                yield chunk
        tail = encoder.close()
        if tail:
            yield tail
