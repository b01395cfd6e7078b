"""Text-to-speech: request validation, sentence-by-sentence synthesis and streamed encoding.

An engine only turns one short piece of text into samples (``render``). This module validates the
request, cuts the text into sentences, renders them in order and pushes each through one
incremental encoder, yielding the bytes the output file gained after every sentence. The whole
file (``synthesize``) is by construction the concatenation of the stream.
"""
from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from genmesh.errors import Cancelled, InvalidArgument

from .encode import AudioFormat, StreamEncoder, audio_format, output_sample_rate
from .params import (  # noqa: F401 - the limits are re-exported
    MAX_INPUT_CHARS,
    MAX_SPEED,
    MIN_SPEED,
    check_input,
    check_speech_format,
    check_speed,
)
from .voices import Voice, resolve_voice

# on_piece(pieces done, pieces in all, samples the last piece rendered)
PieceCallback = Callable[[int, int, int], None]

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
    text = check_input(text)
    if not isinstance(voice, str):
        raise InvalidArgument("must be a voice name", field="voice")
    resolved = resolve_voice(voice)
    speed = check_speed(speed)
    return SpeechRequest(text=text, voice=resolved, speed=speed,
                         format=audio_format(check_speech_format(fmt)))


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
                          fmt: str = "mp3", cancel: threading.Event | None = None,
                          on_piece: PieceCallback | None = None) -> Iterator[bytes]:
        """Validate now, then yield the encoded file in chunks as sentences are rendered.

        Every chunk is non-empty; their concatenation is one complete file. Raises ``Cancelled``
        from the iterator when ``cancel`` is set between sentences. ``on_piece(done, total,
        samples)`` hears of each rendered piece (``samples`` at ``sample_rate``) before its bytes
        are yielded, so callers can report progress and the audio's duration.
        """
        request = validate_speech(text, voice, speed, fmt)
        return self._stream(request, cancel, on_piece)

    def synthesize(self, text: str, voice: str = "alloy", speed: float = 1.0, fmt: str = "mp3",
                   cancel: threading.Event | None = None) -> bytes:
        """The whole file; byte for byte the concatenation of ``synthesize_stream``."""
        return b"".join(self.synthesize_stream(text, voice, speed, fmt, cancel))

    def _stream(self, request: SpeechRequest, cancel: threading.Event | None,
                on_piece: PieceCallback | None = None) -> Iterator[bytes]:
        encoder = StreamEncoder(request.format, self.sample_rate)
        pieces = split_sentences(request.text)
        for done, piece in enumerate(pieces, start=1):
            if cancel is not None and cancel.is_set():
                raise Cancelled("speech synthesis was cancelled")
            samples = self.render(piece, request.voice, request.speed)
            if on_piece is not None:
                on_piece(done, len(pieces), len(samples))
            chunk = encoder.write(samples)
            if chunk:
                yield chunk
        tail = encoder.close()
        if tail:
            yield tail
