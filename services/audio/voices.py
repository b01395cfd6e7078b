"""The OpenAI voice names users ask for, and what each engine speaks them with.

espeak-ng gets a language plus one of its voice variants (``en-us+m3``: US English, male 3);
a multi-speaker VITS or Piper voice gets a speaker index, one per voice in catalogue order; a
single-speaker voice (Piper joe) speaks every name with its one speaker.
"""
from __future__ import annotations

from dataclasses import dataclass

from genmesh.errors import InvalidArgument


@dataclass(frozen=True)
class Voice:
    name: str
    espeak: str  # espeak-ng voice: language[+variant]
    speaker: int  # speaker index for multi-speaker neural models


_ESPEAK: dict[str, str] = {
    "alloy": "en-us+f3",
    "ash": "en-us+m3",
    "ballad": "en-gb-x-rp+m5",
    "coral": "en-us+f2",
    "echo": "en-us+m1",
    "fable": "en-gb+m2",
    "onyx": "en-us+m7",
    "nova": "en-us+f4",
    "sage": "en-us+f1",
    "shimmer": "en-gb+f2",
    "verse": "en-us+m4",
    "marin": "en-us+f5",
    "cedar": "en-us+m6",
}

VOICES: dict[str, Voice] = {
    name: Voice(name=name, espeak=espeak, speaker=index)
    for index, (name, espeak) in enumerate(_ESPEAK.items())
}


def resolve_voice(name: str, *, field: str = "voice") -> Voice:
    """The voice called ``name`` (case-insensitive), or InvalidArgument listing the allowed ones."""
    voice = VOICES.get(name.strip().lower()) if isinstance(name, str) else None
    if voice is None:
        raise InvalidArgument(f"unknown voice {name!r}; expected one of {', '.join(VOICES)}",
                              field=field)
    return voice
