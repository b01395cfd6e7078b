"""The Piper engine: espeak-ng phonemes with their clause punctuation, Piper's id layout, and the
joe voice speaking through onnxruntime, streamed sentence by sentence in every format."""
from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from genmesh.catalog import Catalog
from genmesh.services.audio.encode import FORMATS
from genmesh.services.audio.engines import load_engine
from genmesh.services.audio.phonemes import phonemize
from genmesh.services.audio.tts_piper import PiperTTS
from genmesh.services.audio.voices import VOICES, resolve_voice

PIPER = Catalog.load().get("tts-1")
TEXT = "Hello there. It works!"


@pytest.fixture(scope="module")
def piper(tmp_path_factory: pytest.TempPathFactory) -> PiperTTS:
    engine = load_engine(PIPER, tmp_path_factory.mktemp("models"), threads=1)
    assert isinstance(engine, PiperTTS)
    return engine


def seconds_of(data: bytes) -> tuple[int, float]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        return stream.rate, sum(f.samples for f in container.decode(stream)) / stream.rate


def test_tts_1_is_the_piper_joe_voice() -> None:
    assert PIPER.id == "rhasspy/piper-en_US-joe-medium" and PIPER.engine == "piper"


def test_phonemes_keep_each_clauses_punctuation_as_piper_voices_expect() -> None:
    phonemes = phonemize("Hello, world. Are you there?")
    assert phonemes.count(", ") == 1 and phonemes.endswith("?")
    first, rest = phonemes.split(", ", 1)
    assert first == phonemize("Hello")  # one clause, no punctuation: just its phonemes
    assert "." in rest and "ɹ" in rest  # IPA, not espeak's ASCII mnemonics
    assert phonemize("  ") == ""


def test_phoneme_ids_follow_pipers_layout(piper: PiperTTS) -> None:
    ids = piper.phoneme_ids("ab")
    bos, eos, pad = (piper.id_map[k][0] for k in ("^", "$", "_"))
    a, b = piper.id_map["a"][0], piper.id_map["b"][0]
    assert ids == [bos, pad, a, pad, b, pad, eos]
    assert piper.phoneme_ids("a\u2603") == piper.phoneme_ids("a")  # unknown symbols are dropped


def test_speaks_a_sentence_at_the_voices_rate(piper: PiperTTS) -> None:
    audio = piper.render("The weather is nice today.", resolve_voice("alloy"), 1.0)
    assert piper.sample_rate == 22050 and audio.dtype == np.float32
    assert 0.8 < len(audio) / piper.sample_rate < 4.0
    assert 0.05 < float(np.abs(audio).max()) <= 1.0  # audible, never clipped past full scale


def test_speed_shortens_the_speech(piper: PiperTTS) -> None:
    voice = resolve_voice("echo")
    normal = len(piper.render("Please send the report before noon.", voice, 1.0))
    fast = len(piper.render("Please send the report before noon.", voice, 2.0))
    assert 0.35 < fast / normal < 0.7


def test_every_openai_voice_name_speaks() -> None:
    assert len(VOICES) == 13
    for name in VOICES:
        assert resolve_voice(name).name == name  # single-speaker joe: all of them speak as joe


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_streams_one_growing_file_per_sentence_in_every_format(piper: PiperTTS, fmt: str) -> None:
    pieces: list[tuple[int, int]] = []
    chunks = list(piper.synthesize_stream(TEXT, "nova", 1.0, fmt,
                                          on_piece=lambda done, total, _n: pieces.append(
                                              (done, total))))
    assert pieces == [(1, 2), (2, 2)]
    assert len(chunks) >= 2 and all(chunks)
    data = b"".join(chunks)
    if fmt == "pcm":
        seconds = len(data) / 2 / piper.sample_rate
    else:
        rate, seconds = seconds_of(data)
        assert rate == piper.output_sample_rate(fmt)
    assert 1.0 < seconds < 6.0


def test_missing_voice_files_are_model_unavailable(tmp_path: Path) -> None:
    from genmesh.errors import ModelUnavailable

    with pytest.raises(ModelUnavailable, match="no Piper voice"):
        PiperTTS.load(tmp_path)
