"""The VITS engine: neural speech from a ``transformers`` VitsModel (MMS-TTS or genmesh/tiny-vits).

VITS samples noise (flows and durations); every piece is seeded from its own text so the same
request always sounds, and encodes, the same.
"""
from __future__ import annotations

import threading
import zlib
from pathlib import Path

import numpy as np
import torch

from genmesh.errors import ModelUnavailable

from .tts import TextToSpeech
from .voices import Voice


class VitsTTS(TextToSpeech):
    """Speech from a VITS checkpoint; OpenAI voices pick speakers of multi-speaker models."""

    def __init__(self, model: object, tokenizer: object) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.sample_rate = int(model.config.sampling_rate)  # type: ignore[attr-defined]
        # The global torch RNG is forked and seeded per piece; one piece at a time per engine.
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu") -> VitsTTS:
        from transformers import VitsModel, VitsTokenizer

        if not (Path(path) / "config.json").is_file():
            raise ModelUnavailable(f"no VITS weights at {path}")
        model = VitsModel.from_pretrained(str(path)).to(device).eval()
        return cls(model, VitsTokenizer.from_pretrained(str(path)))

    def render(self, text: str, voice: Voice, speed: float) -> np.ndarray:
        inputs = self.tokenizer(text, return_tensors="pt")
        input_ids = inputs["input_ids"].to(self.model.device)
        if input_ids.shape[-1] == 0:
            return np.zeros(0, np.float32)  # nothing in the model's alphabet: silence
        speakers = int(self.model.config.num_speakers)
        speaker = voice.speaker % speakers if speakers > 1 else None
        with self._lock, torch.inference_mode(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(zlib.crc32(text.encode("utf-8")))
            output = self.model(input_ids=input_ids,
                                attention_mask=inputs["attention_mask"].to(self.model.device),
                                speaker_id=speaker, speaking_rate=speed)
        return output.waveform[0].float().cpu().numpy().astype(np.float32, copy=False)
