"""The faster-whisper engine: Whisper base (whisper-1) and tiny.en hear Piper's speech word for
word, with timestamps, language detection, translation, prompts, long audio and cancellation."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import jiwer
import numpy as np
import pytest

from genmesh.catalog import Catalog
from genmesh.errors import Cancelled, InvalidArgument
from genmesh.services.audio.engines import load_engine
from genmesh.services.audio.stt import Segment
from genmesh.services.audio.stt_faster_whisper import FasterWhisperSTT
from genmesh.services.audio.voices import resolve_voice

CATALOG = Catalog.load()
SENTENCE = "Please send the report to my office before noon tomorrow."


@dataclass(frozen=True)
class Clip:
    samples: np.ndarray
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def wer(reference: str, hypothesis: str) -> float:
    normalize = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(),
                               jiwer.RemoveMultipleSpaces(), jiwer.Strip(),
                               jiwer.ReduceToListOfListOfWords()])
    return jiwer.wer(reference, hypothesis, reference_transform=normalize,
                     hypothesis_transform=normalize)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - a models dir
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def clip(models) -> Clip:  # noqa: ANN001
    piper = load_engine(CATALOG.get("tts-1"), models, threads=1)
    return Clip(piper.render(SENTENCE, resolve_voice("alloy"), 1.0), piper.sample_rate)


@pytest.fixture(scope="module")
def base(models) -> FasterWhisperSTT:  # noqa: ANN001
    engine = load_engine(CATALOG.get("whisper-1"), models, threads=2)
    assert isinstance(engine, FasterWhisperSTT)
    return engine


@pytest.fixture(scope="module")
def tiny_en(models) -> FasterWhisperSTT:  # noqa: ANN001
    engine = load_engine(CATALOG.get("openai/whisper-tiny.en"), models, threads=2)
    assert isinstance(engine, FasterWhisperSTT)
    return engine


def test_whisper_1_is_whisper_base_on_faster_whisper() -> None:
    spec = CATALOG.get("whisper-1")
    assert (spec.id, spec.engine) == ("openai/whisper-base", "faster-whisper")
    assert CATALOG.get("gpt-4o-transcribe").id == spec.id


def test_base_hears_piper_word_for_word_with_word_timestamps(base: FasterWhisperSTT,
                                                            clip: Clip) -> None:
    streamed: list[Segment] = []
    transcript = base.transcribe(clip.samples, clip.rate, word_timestamps=True,
                                 on_segment=streamed.append)
    assert wer(SENTENCE, transcript.text) <= 0.1, transcript.text
    assert transcript.language == "en"  # detected: none was given
    assert list(transcript.segments) == streamed and transcript.duration == pytest.approx(
        clip.seconds, abs=0.01)
    words = transcript.words
    assert words and [w.word for w in words][:2] == ["Please", "send"]
    assert all(a.start <= b.start for a, b in zip(words, words[1:]))
    assert all(0 <= w.start <= w.end <= clip.seconds for w in words)
    assert streamed[0].tokens and streamed[0].avg_logprob < 0


def test_base_translates_and_takes_a_prompt_and_a_language(base: FasterWhisperSTT,
                                                           clip: Clip) -> None:
    transcript = base.transcribe(clip.samples, clip.rate, language="english", task="translate",
                                 prompt="An office memo.")
    assert transcript.task == "translate" and transcript.language == "en"
    assert wer(SENTENCE, transcript.text) <= 0.2, transcript.text
    assert "fr" in base.languages and base.can_translate


def test_tiny_en_is_english_only_and_fast_to_load(tiny_en: FasterWhisperSTT, clip: Clip) -> None:
    assert tiny_en.languages == frozenset({"en"})
    transcript = tiny_en.transcribe(clip.samples, clip.rate)
    assert wer(SENTENCE, transcript.text) <= 0.2, transcript.text
    with pytest.raises(InvalidArgument) as err:
        tiny_en.transcribe(clip.samples, clip.rate, language="fr")
    assert err.value.field == "language"


def test_long_audio_comes_back_window_by_window(tiny_en: FasterWhisperSTT, clip: Clip) -> None:
    silence = np.zeros(30 * clip.rate, np.float32)
    audio = np.concatenate([clip.samples, silence, clip.samples])  # ~37 s: two 30 s windows
    streamed: list[Segment] = []
    transcript = tiny_en.transcribe(audio, clip.rate, on_segment=streamed.append)
    assert transcript.duration > 30
    assert len({s.seek for s in streamed}) >= 2  # decoded from more than one 30 s window
    assert [s.id for s in streamed] == list(range(len(streamed)))
    assert all(a.end <= b.start for a, b in zip(streamed, streamed[1:]))
    assert streamed[-1].start >= 30  # the second sentence is placed where it was spoken
    assert transcript.text.lower().count("report") == 2


def test_cancel_stops_before_the_next_window(tiny_en: FasterWhisperSTT, clip: Clip) -> None:
    cancel = threading.Event()
    silence = np.zeros(28 * clip.rate, np.float32)
    audio = np.concatenate([clip.samples, silence, clip.samples, silence, clip.samples])
    seen: list[Segment] = []

    def cancel_after_first(segment: Segment) -> None:
        seen.append(segment)
        cancel.set()

    with pytest.raises(Cancelled):
        tiny_en.transcribe(audio, clip.rate, on_segment=cancel_after_first, cancel=cancel)
    assert len(seen) == 1 and seen[0].start < 10
