"""Text -> espeak-ng IPA phonemes, clause by clause with their punctuation, as Piper voices expect.

Piper voices were trained on espeak-ng's IPA output with each clause's punctuation kept (", " after
a comma clause, "." "?" "!" at a sentence's end). The ``piper-tts`` package that does this is GPL and
espeak-ng is already a system dependency (the espeak engine runs its binary), so this module calls
the system's libespeak-ng through ctypes with the same ``espeak_TextToPhonemes`` loop Piper uses;
the command line (``espeak-ng -q --ipa``) would drop the punctuation Piper's voices expect.
libespeak-ng keeps global state: one lock serialises it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
import unicodedata

from genmesh.errors import ModelUnavailable

_AUDIO_OUTPUT_SYNCHRONOUS = 0x02
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02
_EE_OK = 0
# Clause punctuation kept in the phoneme string, and whether a space follows it inside a sentence.
_CLAUSE_PUNCTUATION = {",": ", ", ";": "; ", ":": ": ", ".": ".", "?": "?", "!": "!"}

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_voice: str | None = None


def _load() -> ctypes.CDLL:
    global _library
    if _library is not None:
        return _library
    name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        raise ModelUnavailable("Piper voices need espeak-ng's library (libespeak-ng), which is not "
                               "installed on this worker (apt-get install espeak-ng)") from None
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                                          ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    # Synchronous, no audio device: only the text -> phonemes half of espeak is used.
    if lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0) <= 0:
        raise ModelUnavailable("libespeak-ng failed to initialise (is espeak-ng-data installed?)")
    _library = lib
    return lib


def phonemize(text: str, voice: str = "en-us") -> str:
    """IPA phonemes of ``text`` in espeak-ng ``voice``, NFD-decomposed as Piper's id maps are."""
    global _voice
    raw = text.encode("utf-8")
    if not raw.strip():
        return ""
    with _lock:
        lib = _load()
        if voice != _voice:
            if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise ModelUnavailable(f"espeak-ng has no voice {voice!r}")
            _voice = voice
        buffer = ctypes.create_string_buffer(raw)
        base = ctypes.addressof(buffer)
        pointer = ctypes.c_void_p(base)
        out: list[str] = []
        while pointer.value:
            start = pointer.value - base
            phonemes = lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8,
                                                 _PHONEMES_IPA)
            end = pointer.value - base if pointer.value else len(raw)
            out.append((phonemes or b"").decode("utf-8", "replace").strip())
            out.append(_terminator(raw[start:end], at_end=not pointer.value))
    return unicodedata.normalize("NFD", "".join(out).strip())


def _terminator(consumed: bytes, *, at_end: bool) -> str:
    """The punctuation that closed a clause (espeak reads one character past the clause)."""
    text = consumed.decode("utf-8", "ignore")
    if not at_end:
        text = text[:-1]
    last = text.rstrip()[-1:]
    return _CLAUSE_PUNCTUATION.get(last, " ")
