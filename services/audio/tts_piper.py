"""The Piper engine: VITS voices exported to ONNX, run with onnxruntime on espeak-ng phonemes.

A voice is ``<name>.onnx`` plus ``<name>.onnx.json`` (sample rate, espeak voice, inference scales,
``phoneme_id_map``). Text becomes IPA (phonemes.py), IPA becomes ids the way Piper does it
(``^``, then each phoneme followed by the pad ``_``, then ``$``), and one ``session.run`` per
sentence renders it. Speed divides the voice's ``length_scale``. VITS samples noise (durations and
the prior) inside the ONNX graph from onnxruntime's own generator, so two renderings of one text
differ slightly; the stream of one request is still exactly its file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from genmesh.errors import ModelUnavailable

from .phonemes import phonemize
from .tts import TextToSpeech
from .voices import Voice

BOS, EOS, PAD = "^", "$", "_"
SENTENCE_SILENCE_S = 0.2  # a pause after each sentence, as Piper's own CLI leaves by default


class PiperTTS(TextToSpeech):
    """Speech from one Piper voice; multi-speaker voices map OpenAI voices onto speakers."""

    def __init__(self, session: Any, config: dict[str, Any]) -> None:
        self.session = session
        self.config = config
        self.sample_rate = int(config["audio"]["sample_rate"])
        self.espeak_voice = str(config.get("espeak", {}).get("voice", "en-us"))
        self.id_map: dict[str, list[int]] = config["phoneme_id_map"]
        inference = config.get("inference", {})
        self.noise_scale = float(inference.get("noise_scale", 0.667))
        self.length_scale = float(inference.get("length_scale", 1.0))
        self.noise_w = float(inference.get("noise_w", 0.8))
        self.num_speakers = int(config.get("num_speakers", 1))
        self._inputs = {i.name for i in session.get_inputs()}

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu", threads: int = 1) -> PiperTTS:
        """Open the one ``*.onnx`` voice (and its ``.onnx.json``) in ``directory``."""
        import onnxruntime as ort

        directory = Path(directory)
        voices = sorted(directory.glob("*.onnx"))
        if not voices or not Path(f"{voices[0]}.json").is_file():
            raise ModelUnavailable(f"no Piper voice (<name>.onnx and <name>.onnx.json) in "
                                   f"{directory}")
        config = json.loads(Path(f"{voices[0]}.json").read_text("utf-8"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        session = ort.InferenceSession(str(voices[0]), options, providers=providers)
        return cls(session, config)

    def phoneme_ids(self, phonemes: str) -> list[int]:
        """Piper's id sequence; phonemes the voice does not know are dropped, as Piper does."""
        ids = list(self.id_map[BOS]) + list(self.id_map[PAD])
        for phoneme in phonemes:
            mapped = self.id_map.get(phoneme)
            if mapped is not None:
                ids += mapped
                ids += self.id_map[PAD]
        return ids + list(self.id_map[EOS])

    def render(self, text: str, voice: Voice, speed: float) -> np.ndarray:
        phonemes = phonemize(text, self.espeak_voice)
        if not phonemes:
            return np.zeros(0, np.float32)
        ids = self.phoneme_ids(phonemes)
        feeds: dict[str, np.ndarray] = {
            "input": np.asarray([ids], dtype=np.int64),
            "input_lengths": np.asarray([len(ids)], dtype=np.int64),
            "scales": np.asarray([self.noise_scale, self.length_scale / speed, self.noise_w],
                                 dtype=np.float32),
        }
        if "sid" in self._inputs:
            feeds["sid"] = np.asarray([voice.speaker % max(1, self.num_speakers)], dtype=np.int64)
        audio = self.session.run(None, feeds)[0]  # InferenceSession.run is thread-safe
        audio = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
        pause = np.zeros(int(SENTENCE_SILENCE_S * self.sample_rate / speed), np.float32)
        return np.concatenate([audio, pause])
