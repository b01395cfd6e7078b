"""Speech to text: PocketSphinx on real (espeak-ng) speech and the tiny Whisper, end to end."""
from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from genmesh.errors import Cancelled, InvalidArgument
from genmesh.models.audio import build_tiny_whisper
from genmesh.services.audio.decode import decode_audio
from genmesh.services.audio.encode import encode_audio
from genmesh.services.audio.stt import Segment, SpeechToText, Transcript
from genmesh.services.audio.stt_pocketsphinx import PocketSphinxSTT
from genmesh.services.audio.stt_whisper import WhisperSTT
from genmesh.services.audio.subtitles import render_transcript
from genmesh.services.audio.tts_espeak import EspeakTTS
from genmesh.services.audio.voices import resolve_voice

LEAD_IN, PAUSE = 0.25, 1.2  # seconds of silence before the first and between the sentences

SRT_CUE = re.compile(r"\d+\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n[^\n]+")
VTT_CUE = re.compile(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\n[^\n]+")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # See test_audio_tts: a second intra-op thread only adds contention for tiny models.
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def spoken_wav() -> bytes:
    """Two sentences spoken by espeak-ng with a clear pause between, as an uploaded WAV."""
    tts = EspeakTTS()
    voice = resolve_voice("ash")
    first = tts.render("one two three four five", voice, 1.0)
    second = tts.render("seven eight nine ten", voice, 1.0)
    rate = tts.sample_rate
    audio = np.concatenate([np.zeros(int(LEAD_IN * rate), np.float32), first,
                            np.zeros(int(PAUSE * rate), np.float32), second,
                            np.zeros(int(LEAD_IN * rate), np.float32)])
    return encode_audio(audio, rate, "wav")


@pytest.fixture(scope="module")
def sphinx() -> PocketSphinxSTT:
    return PocketSphinxSTT()


@pytest.fixture(scope="module")
def whisper(tmp_path_factory: pytest.TempPathFactory) -> WhisperSTT:
    directory = tmp_path_factory.mktemp("tiny-whisper")
    build_tiny_whisper(directory)
    return WhisperSTT.from_pretrained(directory)


def noise(seconds: float) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)


def assert_well_formed(transcript: Transcript, emitted: list[Segment] | None = None) -> None:
    previous_end = 0.0
    for index, segment in enumerate(transcript.segments):
        assert segment.id == index
        assert previous_end <= segment.start <= segment.end <= transcript.duration
        assert segment.text and segment.text == segment.text.strip()
        for word in segment.words or ():
            assert segment.start <= word.start <= word.end <= segment.end
        previous_end = segment.end
    if emitted is not None:
        assert tuple(emitted) == transcript.segments
    srt = render_transcript(transcript, "srt").strip("\n")
    srt_cues = srt.split("\n\n") if srt else []
    assert len(srt_cues) == len(transcript.segments)
    assert all(SRT_CUE.fullmatch(cue) for cue in srt_cues), srt
    vtt = render_transcript(transcript, "vtt")
    assert vtt.startswith("WEBVTT\n\n")
    vtt_cues = vtt[len("WEBVTT\n\n"):].strip("\n")
    assert all(VTT_CUE.fullmatch(cue) for cue in vtt_cues.split("\n\n") if vtt_cues), vtt
    body = json.loads(render_transcript(transcript, "verbose_json"))
    assert len(body["segments"]) == len(transcript.segments)


# -- PocketSphinx -----------------------------------------------------------------------------

def test_pocketsphinx_transcribes_speech_into_timed_segments(sphinx: PocketSphinxSTT,
                                                             spoken_wav: bytes) -> None:
    audio = decode_audio(spoken_wav, sample_rate=16000)
    emitted: list[Segment] = []
    transcript = sphinx.transcribe(audio.samples, audio.sample_rate, word_timestamps=True,
                                   on_segment=emitted.append)
    assert transcript.language == "en" and transcript.task == "transcribe"
    assert transcript.duration == pytest.approx(audio.duration, abs=0.01)
    assert transcript.duration == pytest.approx(
        len(spoken_wav[44:]) / 2 / 22050, abs=0.01)
    assert_well_formed(transcript, emitted)
    # One segment per sentence, split at the pause, starting where the speech starts.
    assert len(transcript.segments) == 2
    first, second = transcript.segments
    assert first.start == pytest.approx(LEAD_IN, abs=0.15)
    assert first.end < second.start
    assert "three" in first.text.split()  # espeak's robot voice is hard; digits come through
    assert transcript.words and transcript.words[0].start >= first.start
    assert transcript.text == f"{first.text} {second.text}"


def test_pocketsphinx_splits_long_speech(spoken_wav: bytes) -> None:
    audio = decode_audio(spoken_wav)
    short = PocketSphinxSTT(max_utterance_s=0.6)
    transcript = short.transcribe(audio.samples, 16000)
    assert_well_formed(transcript)
    assert len(transcript.segments) >= 3


def test_pocketsphinx_accepts_english_and_rejects_other_languages(sphinx: PocketSphinxSTT) -> None:
    silence = np.zeros(16000, np.float32)
    assert sphinx.transcribe(silence, 16000, language="english").segments == ()
    assert sphinx.transcribe(silence, 16000, language="en", task="translate").language == "en"
    with pytest.raises(InvalidArgument) as err:
        sphinx.transcribe(silence, 16000, language="fr")
    assert err.value.field == "language" and "supported: en" in err.value.message
    with pytest.raises(InvalidArgument) as err:
        sphinx.transcribe(silence, 16000, language="klingon")
    assert err.value.field == "language"


@pytest.mark.parametrize("kwargs, field", [
    ({"task": "summarize"}, "task"),
    ({"temperature": 1.5}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"prompt": "x" * 5000}, "prompt"),
])
def test_bad_options_are_rejected(sphinx: PocketSphinxSTT, kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        sphinx.transcribe(np.zeros(1600, np.float32), 16000, **kwargs)
    assert err.value.field == field


def test_cancel_stops_after_the_current_segment(sphinx: PocketSphinxSTT, spoken_wav: bytes) -> None:
    audio = decode_audio(spoken_wav)
    cancel = threading.Event()
    seen: list[Segment] = []

    def on_segment(segment: Segment) -> None:
        seen.append(segment)
        cancel.set()

    with pytest.raises(Cancelled):
        sphinx.transcribe(audio.samples, 16000, on_segment=on_segment, cancel=cancel)
    assert len(seen) == 1
    # The pooled decoder is left reusable.
    assert len(sphinx.transcribe(audio.samples, 16000).segments) == 2


def test_input_at_another_rate_is_resampled(sphinx: PocketSphinxSTT, spoken_wav: bytes) -> None:
    audio = decode_audio(spoken_wav, sample_rate=22050)
    transcript = sphinx.transcribe(audio.samples, 22050)
    assert transcript.duration == pytest.approx(audio.duration, abs=0.01)
    assert len(transcript.segments) == 2


# -- Whisper (tiny, random weights) -----------------------------------------------------------

def test_tiny_whisper_yields_well_formed_segments(whisper: WhisperSTT) -> None:
    emitted: list[Segment] = []
    transcript = whisper.transcribe(noise(8.0), 16000, on_segment=emitted.append)
    assert transcript.language in whisper.languages  # detected
    assert transcript.duration == pytest.approx(8.0)
    assert transcript.segments
    assert_well_formed(transcript, emitted)
    body = json.loads(render_transcript(transcript, "verbose_json"))
    assert body["segments"][0]["tokens"] and body["segments"][0]["avg_logprob"] < 0


def test_whisper_reads_long_audio_window_by_window(whisper: WhisperSTT,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    window_lengths: list[int] = []
    features = whisper._features

    def spy(chunk: np.ndarray) -> object:
        window_lengths.append(len(chunk))
        return features(chunk)

    monkeypatch.setattr(whisper, "_features", spy)
    transcript = whisper.transcribe(noise(40.0), 16000, language="en")
    assert_well_formed(transcript)
    assert transcript.language == "en"
    # 40 s = a full 30 s window, then the rest (the tiny model's last segment closes each window).
    assert window_lengths == [30 * 16000, 10 * 16000]


def _ts(seconds: float, whisper: WhisperSTT) -> int:
    return whisper._timestamp_begin + round(seconds / 0.02)


def test_whisper_window_split_follows_openai_seek_rule(whisper: WhisperSTT) -> None:
    from genmesh.services.audio.stt_whisper import _Window

    a, b = whisper.tokenizer(" hi", add_special_tokens=False).input_ids, [ord("x") - 33]
    closed = [_ts(0, whisper), *a, _ts(2, whisper), _ts(2, whisper), *b, _ts(5, whisper)]
    segments, consumed = whisper._split(_Window(closed, -1.0, None), 30.0)
    assert [(s, e) for s, e, _, _ in segments] == [(0.0, 2.0), (2.0, 5.0)]
    assert consumed == 30.0  # ended on a single timestamp: the window is done
    open_ended = [_ts(0, whisper), *a, _ts(12, whisper), _ts(12, whisper), *b]
    segments, consumed = whisper._split(_Window(open_ended, -1.0, None), 30.0)
    assert [(s, e) for s, e, _, _ in segments] == [(0.0, 12.0)]
    assert consumed == 12.0  # the unfinished text is decoded again from 12 s
    beyond = [_ts(0, whisper), *a, _ts(3, whisper), _ts(9, whisper), *b, _ts(9.5, whisper)]
    segments, consumed = whisper._split(_Window(beyond, -1.0, None), 8.0)
    assert [(s, e) for s, e, _, _ in segments] == [(0.0, 3.0)]  # past the audio's end: dropped
    assert consumed == 8.0


def test_whisper_translates_with_prompt_and_word_timestamps(whisper: WhisperSTT) -> None:
    transcript = whisper.transcribe(noise(6.0), 16000, language="german", task="translate",
                                    prompt="Glossary: genmesh.", temperature=0.4,
                                    word_timestamps=True)
    assert transcript.task == "translate" and transcript.language == "de"
    assert_well_formed(transcript)
    assert transcript.words is not None
    assert all(s.temperature == 0.4 for s in transcript.segments)
    body = json.loads(render_transcript(transcript, "verbose_json"))
    assert body["language"] == "german" and "words" in body


def test_whisper_rejects_unknown_language(whisper: WhisperSTT) -> None:
    with pytest.raises(InvalidArgument) as err:
        whisper.transcribe(noise(1.0), 16000, language="xx")
    assert err.value.field == "language"


def test_whisper_cancel_stops_generation(whisper: WhisperSTT) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        whisper.transcribe(noise(2.0), 16000, language="en", cancel=cancel)


def test_engines_share_one_interface(sphinx: PocketSphinxSTT, whisper: WhisperSTT) -> None:
    assert isinstance(sphinx, SpeechToText) and isinstance(whisper, SpeechToText)
    assert sphinx.sample_rate == whisper.sample_rate == 16000
    assert sphinx.languages == frozenset({"en"}) and "fr" in whisper.languages


def test_missing_whisper_weights_are_model_unavailable(tmp_path: Path) -> None:
    from genmesh.errors import ModelUnavailable

    with pytest.raises(ModelUnavailable):
        WhisperSTT.from_pretrained(tmp_path / "absent")
