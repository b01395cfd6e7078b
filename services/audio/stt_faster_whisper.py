"""The faster-whisper engine: Whisper checkpoints converted for CTranslate2, int8 on CPU.

faster-whisper already reads long audio the reference way (30 s windows, timestamp tokens,
temperature fallback, word alignment) and yields segments lazily, one decoded window at a time;
this adapter maps its segments onto genmesh's and checks for cancellation between them.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from genmesh.errors import Cancelled, ModelUnavailable

from .stt import Segment, SpeechToText, TranscribeOptions, Word

# OpenAI's temperature=0: start greedy-ish (beam search at 0) and fall back to sampling at rising
# temperatures when a window decodes badly (repetitive or improbable), as the reference decoder.
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
BEAM_SIZE = 5  # faster-whisper's and the reference CLI's default


class FasterWhisperSTT(SpeechToText):
    """Recognition and translation with a CTranslate2 Whisper model directory."""

    sample_rate = 16000

    def __init__(self, model: object) -> None:
        self.model = model
        self._multilingual = bool(model.model.is_multilingual)  # type: ignore[attr-defined]
        # One generate() per model at a time: CTranslate2 serialises them anyway, and this keeps
        # a cancelled request's lazy generator from interleaving with the next request's.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", threads: int = 1) -> FasterWhisperSTT:
        """Open a CTranslate2 Whisper directory (model.bin, config.json, tokenizer, vocabulary)."""
        from faster_whisper import WhisperModel

        path = Path(path)
        if not (path / "model.bin").is_file():
            raise ModelUnavailable(f"no CTranslate2 Whisper model at {path} (model.bin missing)")
        kind, _, index = device.partition(":")
        if kind == "cuda":
            model = WhisperModel(str(path), device="cuda", device_index=int(index or 0),
                                 compute_type="int8_float16", local_files_only=True)
        else:
            model = WhisperModel(str(path), device="cpu", compute_type="int8",
                                 cpu_threads=max(1, threads), num_workers=1,
                                 local_files_only=True)
        return cls(model)

    @property
    def languages(self) -> frozenset[str]:
        if not self._multilingual:
            return frozenset({"en"})
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        return frozenset(_LANGUAGE_CODES)

    @property
    def can_translate(self) -> bool:
        return True  # multilingual checkpoints translate; English-only ones only "translate" English

    def _detect_language(self, audio: np.ndarray, cancel: threading.Event) -> str:
        if not self._multilingual:
            return "en"
        with self._lock:
            language, _probability, _all = self.model.detect_language(audio)  # type: ignore[attr-defined]
        return language

    def _segments(self, audio: np.ndarray, options: TranscribeOptions,
                  cancel: threading.Event) -> Iterator[Segment]:
        temperature = FALLBACK_TEMPERATURES if options.temperature == 0 else options.temperature
        with self._lock:
            segments, _info = self.model.transcribe(  # type: ignore[attr-defined]
                audio, language=options.language or None,
                # English-only checkpoints have no task tokens: translating English is transcribing.
                task=options.task if self._multilingual else "transcribe",
                initial_prompt=options.prompt, temperature=temperature, beam_size=BEAM_SIZE,
                word_timestamps=options.word_timestamps, vad_filter=False)
            for s in segments:  # each step decodes the next 30 s window
                if cancel.is_set():
                    raise Cancelled("transcription was cancelled")
                if not s.text.strip():
                    continue
                words = None
                if options.word_timestamps and s.words:
                    words = tuple(Word(word=w.word.strip(), start=float(w.start), end=float(w.end),
                                       probability=round(float(w.probability), 4))
                                  for w in s.words if w.word.strip())
                yield Segment(
                    id=0, start=float(s.start), end=float(s.end), text=s.text.strip(), words=words,
                    seek=int(s.seek), tokens=tuple(int(t) for t in s.tokens),
                    temperature=float(s.temperature or 0.0),
                    avg_logprob=round(float(s.avg_logprob), 4),
                    compression_ratio=round(float(s.compression_ratio), 4),
                    no_speech_prob=round(float(s.no_speech_prob), 6))
                # Checked again before asking for the next segment, which may decode a window.
                if cancel.is_set():
                    raise Cancelled("transcription was cancelled")
