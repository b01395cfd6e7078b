"""The espeak-ng engine: formant speech from the system binary, no weights, any machine.

Speed maps to espeak's words per minute (175 at 1.0). espeak will not go below 80 wpm, so slower
requests are spoken at 80 and stretched in time with FFmpeg's ``atempo`` (pitch kept).
"""
from __future__ import annotations

import shutil
import struct
import subprocess

import av
import av.filter
import numpy as np

from genmesh.errors import Internal, ModelUnavailable

from .decode import resample
from .tts import TextToSpeech
from .voices import Voice

BASE_WPM = 175
MIN_WPM = 80
TIMEOUT_S = 60.0


class EspeakTTS(TextToSpeech):
    """Speech from the ``espeak-ng`` binary (``--stdout`` WAV, read from a pipe)."""

    sample_rate = 22050  # espeak-ng's fixed output rate

    def __init__(self, binary: str = "espeak-ng") -> None:
        path = shutil.which(binary)
        if path is None:
            raise ModelUnavailable(f"the espeak-ng engine needs the {binary!r} binary, which is "
                                   "not installed on this worker (apt-get install espeak-ng)")
        self.binary = path

    def render(self, text: str, voice: Voice, speed: float) -> np.ndarray:
        wpm = BASE_WPM * speed
        command = [self.binary, "--stdin", "--stdout", "-v", voice.espeak,
                   "-s", str(max(MIN_WPM, round(wpm)))]
        try:
            done = subprocess.run(command, input=text.encode("utf-8"), capture_output=True,
                                  timeout=TIMEOUT_S, check=False)
        except FileNotFoundError:
            raise ModelUnavailable(f"the espeak-ng binary {self.binary!r} is gone") from None
        if done.returncode != 0 or not done.stdout.startswith(b"RIFF"):
            reason = done.stderr.decode("utf-8", "replace").strip() or f"exit {done.returncode}"
            raise Internal(f"espeak-ng failed: {reason}")
        samples, rate = _read_wav(done.stdout)
        samples = resample(samples, rate, self.sample_rate)
        if wpm < MIN_WPM:
            samples = _stretch(samples, self.sample_rate, wpm / MIN_WPM)
        return samples


def _read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """espeak's 16-bit mono WAV; its sizes are placeholders, so the data runs to the end."""
    rate = 22050
    offset = 12
    while offset + 8 <= len(data):
        chunk, size = data[offset:offset + 4], struct.unpack("<I", data[offset + 4:offset + 8])[0]
        if chunk == b"fmt ":
            rate = struct.unpack("<I", data[offset + 12:offset + 16])[0]
        elif chunk == b"data":
            pcm = data[offset + 8:]
            pcm = pcm[:len(pcm) // 2 * 2]
            return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0, rate
        offset += 8 + size
    return np.zeros(0, np.float32), rate


def _stretch(samples: np.ndarray, rate: int, tempo: float) -> np.ndarray:
    """Play ``samples`` at ``tempo`` times the speed (0.5..2) without changing pitch."""
    if samples.size == 0:
        return samples
    graph = av.filter.Graph()
    source = graph.add_abuffer(format="flt", sample_rate=rate, layout="mono", time_base=f"1/{rate}")
    atempo = graph.add("atempo", f"{tempo:.6f}")
    sink = graph.add("abuffersink")
    source.link_to(atempo)
    atempo.link_to(sink)
    graph.configure()
    frame = av.AudioFrame.from_ndarray(samples[None, :].astype(np.float32), format="flt",
                                       layout="mono")
    frame.sample_rate = rate
    frame.pts = 0
    graph.push(frame)
    graph.push(None)
    out: list[np.ndarray] = []
    while True:
        try:
            out.append(graph.pull().to_ndarray().reshape(-1))
        except (av.error.EOFError, av.error.BlockingIOError):
            break
    return np.concatenate(out) if out else np.zeros(0, np.float32)
