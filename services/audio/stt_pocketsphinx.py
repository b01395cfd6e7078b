"""The PocketSphinx engine: the US English model shipped inside the PyPI wheel, fully offline.

Audio is cut into utterances by PocketSphinx's voice-activity endpointer (long ones are split
every ``max_utterance_s``); each utterance is decoded as it closes and becomes one segment, its
word alignment giving the word timestamps. Decoders are not thread-safe and take ~0.4 s to load,
so idle ones are pooled and each transcription borrows one.
"""
from __future__ import annotations

import math
import queue
import re
import threading
from collections.abc import Iterator

import numpy as np

from genmesh.errors import Cancelled

from .stt import Segment, SpeechToText, TranscribeOptions, Word, compression_ratio

FRAME_RATE = 100  # PocketSphinx's feature frames per second (-frate)
_ALTERNATE = re.compile(r"\(\d+\)$")


class PocketSphinxSTT(SpeechToText):
    """US English recognition with the wheel's acoustic model, dictionary and language model."""

    sample_rate = 16000

    def __init__(self, *, max_utterance_s: float = 20.0, **decoder_config: object) -> None:
        self.max_utterance_s = max_utterance_s
        self._decoder_config = {"samprate": self.sample_rate, "loglevel": "FATAL", **decoder_config}
        self._idle: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._idle.put(self._new_decoder())  # load once up front: bad config fails at load time

    @property
    def languages(self) -> frozenset[str]:
        return frozenset({"en"})

    def _new_decoder(self) -> object:
        from pocketsphinx import Decoder

        return Decoder(**self._decoder_config)

    def _detect_language(self, audio: np.ndarray, cancel: threading.Event) -> str:
        return "en"

    def _segments(self, audio: np.ndarray, options: TranscribeOptions,
                  cancel: threading.Event) -> Iterator[Segment]:
        try:
            decoder = self._idle.get_nowait()
        except queue.Empty:
            decoder = self._new_decoder()
        try:
            yield from self._decode(decoder, audio, cancel)
        finally:
            try:
                decoder.end_utt()  # a cancelled run may leave an utterance open
            except RuntimeError:
                pass
            self._idle.put(decoder)

    def _decode(self, decoder: object, audio: np.ndarray,
                cancel: threading.Event) -> Iterator[Segment]:
        from pocketsphinx import Endpointer

        endpointer = Endpointer(sample_rate=self.sample_rate)
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
        step = endpointer.frame_bytes // 2
        limit = int(self.max_utterance_s * self.sample_rate)
        start: float | None = None  # start time of the open utterance
        fed = 0  # samples fed to the open utterance
        for offset in range(0, len(pcm), step):
            if cancel.is_set():
                raise Cancelled("transcription was cancelled")
            frame = pcm[offset:offset + step].tobytes()
            last = offset + step >= len(pcm)
            speech = endpointer.end_stream(frame) if last else endpointer.process(frame)
            if speech is not None:
                if start is None:
                    decoder.start_utt()
                    start, fed = endpointer.speech_start, 0
                decoder.process_raw(speech, False, False)
                fed += len(speech) // 2
                if last or not endpointer.in_speech or fed >= limit:
                    segment = self._close(decoder, start, start + fed / self.sample_rate)
                    if segment is not None:
                        yield segment
                    # A long stretch of speech continues in a new utterance where this one ended.
                    start = start + fed / self.sample_rate if endpointer.in_speech and not last \
                        else None
                    if start is not None:
                        decoder.start_utt()
                        fed = 0
            if last:
                break
        if start is not None:
            segment = self._close(decoder, start, start + fed / self.sample_rate)
            if segment is not None:
                yield segment

    def _close(self, decoder: object, start: float, end: float) -> Segment | None:
        decoder.end_utt()
        words = []
        for seg in decoder.seg():
            word = _ALTERNATE.sub("", seg.word)
            if word.startswith(("<", "[")):
                continue  # silence, sentence markers and noise fillers
            words.append(Word(word=word, start=start + seg.start_frame / FRAME_RATE,
                              end=start + (seg.end_frame + 1) / FRAME_RATE,
                              probability=round(min(max(seg.prob, 0.0), 1.0), 4)))
        if not words:
            return None
        text = " ".join(w.word for w in words)
        avg_logprob = sum(math.log(max(w.probability or 0.0, 1e-6)) for w in words) / len(words)
        return Segment(id=0, start=start, end=max(end, words[-1].end), text=text,
                       words=tuple(words), seek=int(round(start * FRAME_RATE)),
                       avg_logprob=round(avg_logprob, 4),
                       compression_ratio=round(compression_ratio(text), 4))
