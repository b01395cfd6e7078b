"""Uploaded audio bytes -> mono float32 samples at the model's rate, with the input limits enforced.

The container is recognised from the bytes themselves (never from a file name or content type),
decoded with PyAV and resampled with libswresample. Every way the input can be unusable becomes an
``InvalidArgument`` naming the field, so a bad upload never reaches a model.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

from genmesh.errors import InvalidArgument

# The byte-level checks live in params: the router runs them on uploads before queueing.
from .params import MAX_AUDIO_BYTES as MAX_BYTES
from .params import check_audio_bytes, sniff_format  # noqa: F401 - sniff_format re-exported

MAX_SECONDS = 2 * 60 * 60.0


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32, mono, in [-1, 1]
    sample_rate: int
    format: str  # the container that was recognised: wav, mp3, flac, ogg, aac, mp4, matroska

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def decode_audio(data: bytes, *, sample_rate: int = 16000, max_bytes: int = MAX_BYTES,
                 max_seconds: float = MAX_SECONDS, field: str = "file") -> DecodedAudio:
    """Decode a whole upload to mono float32 at ``sample_rate``; reject what cannot be used."""
    fmt = check_audio_bytes(data, field=field, max_bytes=max_bytes)
    limit = int(max_seconds * sample_rate)
    try:
        container = av.open(io.BytesIO(data), mode="r", format=fmt)
    except (av.error.FFmpegError, ValueError) as exc:
        raise InvalidArgument(f"could not read the {fmt} audio: {_reason(exc)}",
                              field=field) from None
    with container:
        if not container.streams.audio:
            raise InvalidArgument(f"the {fmt} file contains no audio stream", field=field)
        stream = container.streams.audio[0]
        if container.duration and container.duration / av.time_base > max_seconds + 1.0:
            raise _too_long(container.duration / av.time_base, max_seconds, field)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        total = 0
        bad_packets = 0
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    # A damaged packet (say a truncated last frame) costs its samples, not the file.
                    bad_packets += 1
                    continue
                for frame in frames:
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
                        total += out.samples
                if total > limit:
                    raise _too_long(total / sample_rate, max_seconds, field)
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
                total += out.samples
        except (av.error.FFmpegError, ValueError) as exc:
            if total == 0:
                raise InvalidArgument(f"could not decode the {fmt} audio: {_reason(exc)}",
                                      field=field) from None
            # The container broke after some audio decoded (truncated upload): keep what decoded.
    if total == 0:
        detail = f" ({bad_packets} damaged packets)" if bad_packets else ""
        raise InvalidArgument(f"the {fmt} file contains no decodable audio{detail}", field=field)
    if total > limit:
        raise _too_long(total / sample_rate, max_seconds, field)
    samples = np.clip(np.concatenate(chunks), -1.0, 1.0).astype(np.float32, copy=False)
    return DecodedAudio(samples=samples, sample_rate=sample_rate, format=fmt)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Mono float32 from one rate to another (identity when the rates match)."""
    samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
    if from_rate == to_rate or samples.size == 0:
        return samples
    resampler = av.AudioResampler(format="flt", layout="mono", rate=to_rate)
    frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
    frame.sample_rate = from_rate
    frame.pts = 0
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _too_long(seconds: float, max_seconds: float, field: str) -> InvalidArgument:
    return InvalidArgument(f"the audio is longer than the limit of {max_seconds:g} seconds "
                           f"(at least {seconds:.1f} s)", field=field)


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
