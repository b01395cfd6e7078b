"""Incremental audio encoding: mono float32 PCM in, bytes of one growing file out, chunk by chunk.

Each ``write`` returns exactly the bytes the file gained, so a stream of chunks concatenates to
the same file a one-shot encode produces. Muxers therefore write to a sink that cannot seek:
nothing already handed out is ever patched. For WAV that means the header carries the
"unknown length" sizes (0xFFFFFFFF) that streaming WAV producers use; every decoder we ship
(FFmpeg/PyAV, libsndfile, Python's ``wave``) reads such a file to its end.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import av
import numpy as np

from genmesh.errors import InvalidArgument


@dataclass(frozen=True)
class AudioFormat:
    name: str
    content_type: str
    container: str | None  # PyAV muxer; None for the formats written here directly
    codec: str | None
    bit_rate: int | None = None
    fixed_rate: int | None = None  # the codec's only output rate (Opus decodes at 48 kHz)


FORMATS: dict[str, AudioFormat] = {
    "mp3": AudioFormat("mp3", "audio/mpeg", "mp3", "libmp3lame", 64_000),
    "opus": AudioFormat("opus", "audio/ogg; codecs=opus", "ogg", "libopus", 32_000, 48_000),
    "aac": AudioFormat("aac", "audio/aac", "adts", "aac", 64_000),
    "flac": AudioFormat("flac", "audio/flac", "flac", "flac"),
    "wav": AudioFormat("wav", "audio/wav", None, None),
    "pcm": AudioFormat("pcm", "audio/pcm", None, None),
}

# libmp3lame and AAC only take MPEG rates; anything else is resampled to the next one up.
_MPEG_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

# Ogg pages are cut every 100 ms of audio instead of FFmpeg's 1 s, so audio leaves sooner.
_OGG_PAGE_US = "100000"


def audio_format(name: str, *, field: str = "response_format") -> AudioFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise InvalidArgument(f"unsupported format {name!r}; expected one of {', '.join(FORMATS)}",
                              field=field) from None


def output_sample_rate(fmt: AudioFormat, sample_rate: int) -> int:
    """The rate a decoder reports for ``fmt`` when fed audio at ``sample_rate``."""
    if fmt.fixed_rate:
        return fmt.fixed_rate
    if fmt.codec in ("libmp3lame", "aac"):
        return next((r for r in _MPEG_RATES if r >= sample_rate), _MPEG_RATES[-1])
    return sample_rate


class _Sink:
    """A write-only, non-seekable file object: muxers append, never rewrite."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


class StreamEncoder:
    """Encode mono float32 audio into ``fmt`` incrementally; each call returns the new bytes."""

    def __init__(self, fmt: AudioFormat | str, sample_rate: int) -> None:
        self.format = audio_format(fmt) if isinstance(fmt, str) else fmt
        self.input_rate = sample_rate
        self.sample_rate = output_sample_rate(self.format, sample_rate)
        self._pts = 0
        self._started = False
        self._closed = False
        self._sink: _Sink | None = None
        self._container = None
        self._stream = None
        if self.format.container is not None:
            self._open_container()

    def _open_container(self) -> None:
        fmt = self.format
        self._sink = _Sink()
        # flush_packets hands every muxed packet to the sink at once; bitexact keeps library
        # version strings out of the file so the same audio gives the same bytes everywhere.
        options = {"flush_packets": "1", "fflags": "+bitexact"}
        if fmt.container == "ogg":
            options["page_duration"] = _OGG_PAGE_US
        if fmt.container == "mp3":
            options["id3v2_version"] = "0"
        self._container = av.open(self._sink, mode="w", format=fmt.container, options=options)
        stream = self._container.add_stream(fmt.codec, rate=self.sample_rate, layout="mono")
        if fmt.bit_rate:
            stream.codec_context.bit_rate = fmt.bit_rate
        self._stream = stream

    def write(self, samples: np.ndarray) -> bytes:
        """Encode more audio (float32 mono at the input rate); return the bytes the file gained."""
        if self._closed:
            raise RuntimeError("encoder is closed")
        samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        if self._container is None:
            return self._header() + _pcm16(samples)
        if samples.size:
            frame = av.AudioFrame.from_ndarray(np.clip(samples, -1.0, 1.0)[None, :], format="flt",
                                               layout="mono")
            frame.sample_rate = self.input_rate
            frame.pts = self._pts
            self._pts += samples.size
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.take()

    def close(self) -> bytes:
        """Flush the encoder and the muxer; return the file's last bytes."""
        if self._closed:
            return b""
        self._closed = True
        if self._container is None:
            return self._header()
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._sink.take()

    def _header(self) -> bytes:
        if self._started or self.format.name != "wav":
            self._started = True
            return b""
        self._started = True
        return wav_header(self.sample_rate)


def wav_header(sample_rate: int, channels: int = 1, bits: int = 16) -> bytes:
    """A 44-byte PCM WAV header whose sizes say "unknown, read to the end" (0xFFFFFFFF)."""
    unknown = 0xFFFFFFFF
    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate,
                                    sample_rate * block, block, bits)
            + b"data" + struct.pack("<I", unknown))


def _pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def encode_audio(samples: np.ndarray, sample_rate: int, fmt: AudioFormat | str) -> bytes:
    """One-shot encode (the same bytes as streaming the samples through ``StreamEncoder``)."""
    encoder = StreamEncoder(fmt, sample_rate)
    return encoder.write(samples) + encoder.close()
