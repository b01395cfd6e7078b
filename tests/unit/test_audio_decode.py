"""Decoding uploads: recognised by content, mono float32 at the model rate, bad input named."""
from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest

from genmesh.errors import InvalidArgument
from genmesh.services.audio.decode import decode_audio, resample, sniff_format
from genmesh.services.audio.encode import encode_audio

RATE = 22050
SECONDS = 1.5


def _tone(seconds: float = SECONDS, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _vorbis(samples: np.ndarray, rate: int) -> bytes:
    """Stereo Ogg Vorbis, with FFmpeg's own (experimental) encoder."""
    out = io.BytesIO()
    with av.open(out, "w", format="ogg") as container:
        stream = container.add_stream("vorbis", rate=rate, layout="stereo",
                                      options={"strict": "experimental"})
        frame = av.AudioFrame.from_ndarray(np.stack([samples, samples]), format="fltp",
                                           layout="stereo")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


@pytest.fixture(scope="module")
def uploads() -> dict[str, bytes]:
    tone = _tone()
    files = {fmt: encode_audio(tone, RATE, fmt) for fmt in ("wav", "mp3", "flac", "opus", "aac")}
    files["vorbis"] = _vorbis(tone, RATE)
    return files


@pytest.mark.parametrize("name, container", [
    ("wav", "wav"), ("mp3", "mp3"), ("flac", "flac"), ("opus", "ogg"), ("vorbis", "ogg"),
    ("aac", "aac"),
])
def test_each_format_decodes_to_mono_16k_float32_of_the_right_length(
        uploads: dict[str, bytes], name: str, container: str) -> None:
    audio = decode_audio(uploads[name], sample_rate=16000)
    assert audio.format == container
    assert audio.sample_rate == 16000
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    # Lossy codecs add encoder delay/padding of a frame or two.
    assert audio.duration == pytest.approx(SECONDS, abs=0.1)
    assert 0.15 < float(np.abs(audio.samples).max()) <= 1.0


def test_format_is_recognised_from_the_bytes_alone(uploads: dict[str, bytes]) -> None:
    assert sniff_format(uploads["wav"]) == "wav"
    assert sniff_format(uploads["mp3"]) == "mp3"
    assert sniff_format(uploads["flac"]) == "flac"
    assert sniff_format(uploads["opus"]) == "ogg"
    assert sniff_format(uploads["aac"]) == "aac"
    assert sniff_format(b"not audio at all") is None


def test_stereo_44k_is_downmixed_and_resampled() -> None:
    left, right = _tone(1.0, 44100), np.zeros(44100, np.float32)
    pcm = (np.stack([left, right], axis=1) * 32767).astype("<i2").tobytes()
    header = (b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt "
              + struct.pack("<IHHIIHH", 16, 1, 2, 44100, 44100 * 4, 4, 16)
              + b"data" + struct.pack("<I", len(pcm)))
    audio = decode_audio(header + pcm, sample_rate=16000)
    assert len(audio.samples) == pytest.approx(16000, abs=32)
    # Both channels mix into one (FFmpeg mixes each side in at -3 dB), not just the left kept.
    assert float(np.abs(audio.samples).max()) == pytest.approx(0.3 / np.sqrt(2), abs=0.03)


def test_truncated_upload_keeps_what_decodes(uploads: dict[str, bytes]) -> None:
    data = uploads["mp3"]
    audio = decode_audio(data[: len(data) // 2])
    assert 0.3 < audio.duration < SECONDS


@pytest.mark.parametrize("data, problem", [
    (b"", "empty"),
    (b"\x13\x37garbage bytes that are no audio container" * 20, "unrecognised audio format"),
    (b"RIFF\x00\x00\x00\x00WAVE" + bytes(range(256)) * 8, "could not"),
    (b"fLaC" + bytes(255 - i for i in range(256)) * 8, "could not"),
])
def test_unusable_uploads_are_rejected_naming_the_field(data: bytes, problem: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        decode_audio(data, field="file")
    assert err.value.field == "file"
    assert problem in err.value.message


def test_oversized_upload_is_rejected_before_decoding(uploads: dict[str, bytes]) -> None:
    with pytest.raises(InvalidArgument) as err:
        decode_audio(uploads["wav"], max_bytes=1000, field="audio")
    assert err.value.field == "audio"
    assert "limit is 1000 bytes" in err.value.message


def test_too_long_audio_is_rejected(uploads: dict[str, bytes]) -> None:
    with pytest.raises(InvalidArgument) as err:
        decode_audio(uploads["flac"], max_seconds=1.0)
    assert err.value.field == "file"
    assert "longer than the limit of 1 seconds" in err.value.message
    audio = decode_audio(uploads["flac"], max_seconds=2.0)
    assert audio.duration == pytest.approx(SECONDS, abs=0.01)


def test_resample_keeps_duration() -> None:
    out = resample(_tone(1.0, 22050), 22050, 16000)
    assert out.dtype == np.float32
    assert len(out) == pytest.approx(16000, abs=32)
