"""Text to speech: espeak-ng and the tiny VITS, streamed sentence by sentence in every format."""
from __future__ import annotations

import io
import threading
import wave
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile

from genmesh.errors import Cancelled, InvalidArgument, ModelUnavailable
from genmesh.models.audio import build_tiny_vits
from genmesh.services.audio.encode import FORMATS
from genmesh.services.audio.tts import MAX_INPUT_CHARS, TextToSpeech, split_sentences
from genmesh.services.audio.tts_espeak import EspeakTTS
from genmesh.services.audio.tts_vits import VitsTTS
from genmesh.services.audio.voices import VOICES, Voice

TEXT = "Hello there. Streaming speech arrives one sentence at a time! Does it work? It does."
ALL_FORMATS = sorted(FORMATS)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # Tiny models are all per-op overhead: on a shared 2-core box a second intra-op thread only
    # adds contention (measured 3-8x slower), so these tests run torch single-threaded.
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def espeak() -> EspeakTTS:
    return EspeakTTS()


@pytest.fixture(scope="module")
def vits(tmp_path_factory: pytest.TempPathFactory) -> VitsTTS:
    directory = tmp_path_factory.mktemp("tiny-vits")
    build_tiny_vits(directory)
    return VitsTTS.from_pretrained(directory)


@pytest.fixture(params=["espeak", "vits"])
def engine(request: pytest.FixtureRequest) -> TextToSpeech:
    return request.getfixturevalue(request.param)


def _decode(data: bytes) -> tuple[int, float]:
    """Decode a whole file with PyAV; return (sample rate, seconds)."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.rate, samples / stream.rate


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_stream_concatenates_to_the_whole_file(engine: TextToSpeech, fmt: str) -> None:
    chunks = list(engine.synthesize_stream(TEXT, "nova", 1.0, fmt))
    assert len(chunks) > 1 and all(chunks)
    assert b"".join(chunks) == engine.synthesize(TEXT, "nova", 1.0, fmt)


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_every_format_decodes_at_the_stated_sample_rate(engine: TextToSpeech, fmt: str) -> None:
    data = engine.synthesize("Testing one two three.", "alloy", 1.0, fmt)
    rate = engine.output_sample_rate(fmt)
    if fmt == "pcm":  # headerless 16-bit little-endian mono
        assert len(data) % 2 == 0
        seconds = len(data) / 2 / rate
    else:
        decoded_rate, seconds = _decode(data)
        assert decoded_rate == rate
    assert seconds > 0.3


def test_stated_rates() -> None:
    class Fixed(TextToSpeech):
        sample_rate = 22050

        def render(self, text: str, voice: Voice, speed: float) -> np.ndarray:
            return np.zeros(10, np.float32)

    rates = {fmt: Fixed().output_sample_rate(fmt) for fmt in ALL_FORMATS}
    assert rates == {"aac": 22050, "flac": 22050, "mp3": 22050, "opus": 48000, "pcm": 22050,
                     "wav": 22050}


def test_first_chunk_is_ready_after_the_first_sentence() -> None:
    rendered: list[str] = []

    class Spy(TextToSpeech):
        sample_rate = 16000

        def render(self, text: str, voice: Voice, speed: float) -> np.ndarray:
            rendered.append(text)
            return np.full(1600, 0.1, np.float32)

    stream = Spy().synthesize_stream("One. Two. Three.", "echo", 1.0, "wav")
    assert rendered == []  # nothing rendered before the consumer asks
    first = next(stream)
    assert rendered == ["One."]
    assert first.startswith(b"RIFF") and len(first) == 44 + 3200
    assert len(list(stream)) == 2 and rendered == ["One.", "Two.", "Three."]


def test_wav_header_says_unknown_length_and_reads_to_the_end(espeak: EspeakTTS) -> None:
    data = espeak.synthesize("Short and sweet.", "ash", 1.0, "wav")
    assert data[4:8] == b"\xff\xff\xff\xff" and data[40:44] == b"\xff\xff\xff\xff"
    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16")
    assert rate == 22050 and len(samples) == (len(data) - 44) // 2
    with wave.open(io.BytesIO(data)) as w:
        assert len(w.readframes(10**9)) == len(data) - 44
    pcm = espeak.synthesize("Short and sweet.", "ash", 1.0, "pcm")
    assert pcm == data[44:]


def test_speed_changes_duration(espeak: EspeakTTS) -> None:
    def seconds(speed: float) -> float:
        return len(espeak.synthesize("The quick brown fox jumps over the lazy dog.", "onyx", speed,
                                     "pcm")) / 2 / 22050

    normal = seconds(1.0)
    assert seconds(2.0) < 0.7 * normal
    # Below espeak's 80 wpm floor the audio is time-stretched: still slower than the floor.
    assert seconds(0.25) > 2.5 * normal


def test_vits_speed_changes_duration(vits: VitsTTS) -> None:
    slow = len(vits.synthesize("speed test", "sage", 0.5, "pcm"))
    fast = len(vits.synthesize("speed test", "sage", 2.0, "pcm"))
    assert fast < slow


def test_voices_sound_different(espeak: EspeakTTS, vits: VitsTTS) -> None:
    for engine in (espeak, vits):
        assert engine.synthesize("Hello.", "onyx", 1.0, "pcm") != \
            engine.synthesize("Hello.", "shimmer", 1.0, "pcm")


@pytest.mark.parametrize("kwargs, field, fragment", [
    ({"text": ""}, "input", "non-empty"),
    ({"text": "   \n"}, "input", "non-empty"),
    ({"text": "a" * (MAX_INPUT_CHARS + 1)}, "input", "limit is 4096"),
    ({"voice": "darth"}, "voice", "alloy, ash, ballad, coral, echo, fable, onyx, nova, sage"),
    ({"speed": 0.1}, "speed", "0.25 to 4.0"),
    ({"speed": 4.5}, "speed", "0.25 to 4.0"),
    ({"speed": float("nan")}, "speed", "0.25 to 4.0"),
    ({"speed": "fast"}, "speed", "0.25 to 4.0"),
    ({"fmt": "midi"}, "response_format", "mp3, opus, aac, flac, wav, pcm"),
])
def test_bad_requests_are_rejected_before_any_audio(espeak: EspeakTTS, kwargs: dict,
                                                     field: str, fragment: str) -> None:
    args = {"text": "Hi.", "voice": "alloy", "speed": 1.0, "fmt": "mp3"} | kwargs
    with pytest.raises(InvalidArgument) as err:
        espeak.synthesize_stream(**args)  # raises at the call, not at the first chunk
    assert err.value.field == field
    assert fragment in err.value.message


def test_voice_names_are_case_insensitive(espeak: EspeakTTS) -> None:
    assert espeak.synthesize("Hi.", "Alloy", 1.0, "pcm") == \
        espeak.synthesize("Hi.", "alloy", 1.0, "pcm")
    assert {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
            "verse"} <= set(VOICES)


def test_missing_espeak_binary_is_model_unavailable() -> None:
    with pytest.raises(ModelUnavailable) as err:
        EspeakTTS(binary="/nonexistent/espeak-ng")
    assert "espeak-ng" in err.value.message


def test_cancel_stops_between_sentences(espeak: EspeakTTS) -> None:
    cancel = threading.Event()
    stream = espeak.synthesize_stream(TEXT, "coral", 1.0, "mp3", cancel)
    next(stream)
    cancel.set()
    with pytest.raises(Cancelled):
        list(stream)


def test_long_sentences_are_cut_at_soft_breaks() -> None:
    pieces = split_sentences("word " * 200 + "end. Next one!\nThird line")
    assert all(len(p) <= 300 for p in pieces)
    assert pieces[-2:] == ["Next one!", "Third line"]
    assert " ".join(pieces).split() == ("word " * 200 + "end. Next one! Third line").split()


def test_vits_is_deterministic(tmp_path: Path, vits: VitsTTS) -> None:
    first = vits.synthesize("Same text, same audio.", "verse", 1.0, "flac")
    assert vits.synthesize("Same text, same audio.", "verse", 1.0, "flac") == first
