"""Speech-to-text: the transcript types and the one interface every recogniser implements.

An engine yields segments in time order (``_segments``); this base validates the options,
resamples the input, numbers and clamps the segments so they are always well formed (ordered,
inside the audio), hands each to ``on_segment`` as soon as it exists and assembles the transcript.
"""
from __future__ import annotations

import dataclasses
import threading
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from genmesh.errors import Cancelled, InvalidArgument

from .decode import resample
from .params import (  # noqa: F401 - the limits are re-exported
    MAX_PROMPT_CHARS,
    TASKS,
    check_prompt,
    check_task,
    check_temperature,
)


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float | None = None


@dataclass(frozen=True)
class Segment:
    """One recognised stretch of speech; the optional fields are OpenAI's verbose_json extras."""

    id: int
    start: float
    end: float
    text: str
    words: tuple[Word, ...] | None = None
    seek: int = 0  # where the decoding window started, in 10 ms mel frames
    tokens: tuple[int, ...] = ()
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str  # ISO 639-1 code, e.g. "en"
    duration: float  # seconds of input audio
    segments: tuple[Segment, ...]
    words: tuple[Word, ...] | None = None
    task: str = "transcribe"


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None
    task: str
    prompt: str | None
    temperature: float
    word_timestamps: bool


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: raw bytes over zlib-compressed bytes."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


@lru_cache(maxsize=1)
def _language_tables() -> tuple[dict[str, str], dict[str, str]]:
    # Whisper's table is the de facto list of language codes and names for speech APIs.
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    return dict(LANGUAGES), dict(TO_LANGUAGE_CODE)


def language_name(code: str) -> str:
    """``"en"`` -> ``"english"`` (OpenAI's verbose_json spelling); unknown codes pass through."""
    return _language_tables()[0].get(code, code)


def language_code(value: str) -> str | None:
    """A language given as a code or an English name -> its code; None when unknown."""
    names, codes = _language_tables()
    value = value.strip().lower()
    if value in names:
        return value
    return codes.get(value)


class SpeechToText(ABC):
    """A recogniser of mono audio at ``sample_rate``."""

    sample_rate: int = 16000

    @property
    @abstractmethod
    def languages(self) -> frozenset[str]:
        """Codes of the languages this engine recognises."""

    @property
    def can_translate(self) -> bool:
        """Whether ``task="translate"`` (speech in any supported language -> English) works."""
        return self.languages == frozenset({"en"})  # English-only: translating is transcribing

    @abstractmethod
    def _detect_language(self, audio: np.ndarray, cancel: threading.Event) -> str:
        """The spoken language's code, when the caller did not say."""

    @abstractmethod
    def _segments(self, audio: np.ndarray, options: TranscribeOptions,
                  cancel: threading.Event) -> Iterator[Segment]:
        """Recognise ``audio`` (at ``sample_rate``), yielding segments in time order."""

    def transcribe(self, audio: np.ndarray, sample_rate: int, *, language: str | None = None,
                   task: str = "transcribe", prompt: str | None = None, temperature: float = 0.0,
                   word_timestamps: bool = False,
                   on_segment: Callable[[Segment], None] | None = None,
                   cancel: threading.Event | None = None) -> Transcript:
        """Recognise mono float32 ``audio``; ``on_segment`` sees each segment as it is final.

        Raises InvalidArgument for bad options and Cancelled when ``cancel`` is set.
        """
        options = self._validate(language, task, prompt, temperature, word_timestamps)
        cancel = cancel or threading.Event()
        audio = resample(np.asarray(audio, dtype=np.float32).reshape(-1), sample_rate,
                         self.sample_rate)
        if audio.size == 0:
            raise InvalidArgument("the audio is empty", field="file")
        duration = len(audio) / self.sample_rate
        if options.language is None:
            options = dataclasses.replace(options, language=self._detect_language(audio, cancel))
        segments: list[Segment] = []
        for raw in self._segments(audio, options, cancel):
            _check(cancel)
            segment = _clamp(raw, len(segments), segments[-1].end if segments else 0.0, duration)
            if not options.word_timestamps:
                segment = dataclasses.replace(segment, words=None)
            segments.append(segment)
            if on_segment is not None:
                on_segment(segment)
        _check(cancel)
        words = tuple(w for s in segments for w in s.words or ()) if word_timestamps else None
        return Transcript(text=" ".join(s.text for s in segments if s.text),
                          language=options.language, duration=duration,
                          segments=tuple(segments), words=words, task=options.task)

    def _validate(self, language: str | None, task: str, prompt: str | None, temperature: float,
                  word_timestamps: bool) -> TranscribeOptions:
        code = None
        if language is not None and language.strip():
            code = language_code(language)
            if code is None or code not in self.languages:
                allowed = ", ".join(sorted(self.languages))
                raise InvalidArgument(f"language {language!r} is not supported by this model; "
                                      f"supported: {allowed}", field="language")
        check_task(task)
        if task == "translate" and not self.can_translate:
            raise InvalidArgument("this model cannot translate", field="task")
        check_temperature(temperature)
        check_prompt(prompt)
        return TranscribeOptions(language=code, task=task, prompt=prompt or None,
                                 temperature=float(temperature),
                                 word_timestamps=bool(word_timestamps))


def _check(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise Cancelled("transcription was cancelled")


def _clamp(segment: Segment, index: int, not_before: float, duration: float) -> Segment:
    """Number the segment and keep its times ordered and inside [0, duration]."""
    def inside(t: float, low: float) -> float:
        return round(min(max(t, low), duration), 3)

    start = inside(segment.start, not_before)
    end = inside(segment.end, start)
    words = None
    if segment.words is not None:
        clamped, low = [], start
        for w in segment.words:
            w_start = min(inside(w.start, low), end)
            w_end = min(inside(w.end, w_start), end)
            clamped.append(dataclasses.replace(w, start=w_start, end=w_end))
            low = w_start
        words = tuple(clamped)
    return dataclasses.replace(segment, id=index, start=start, end=end, text=segment.text.strip(),
                               words=words)
