"""The audio requests' rules, shared by the worker and the router (which checks before enqueueing).

Deliberately free of torch, transformers, numpy and PyAV: the router imports this module. The
engine modules import their limits back from here, so both sides speak the same words. What only
the model knows (which languages it recognises, whether it translates) is checked on the worker.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from genmesh.errors import InvalidArgument
from genmesh.v1 import audio_pb2

from .voices import Voice, resolve_voice

# --- speech to text -------------------------------------------------------------------------------

DEFAULT_STT_MODEL = "openai/whisper-base"
MAX_AUDIO_BYTES = 25 * 1024 * 1024  # OpenAI's upload limit
TASKS = ("transcribe", "translate")
MAX_PROMPT_CHARS = 4096
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.0, 1.0
TRANSCRIPT_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
TIMESTAMP_GRANULARITIES = ("segment", "word")
AUDIO_URL_SCHEMES = ("data:", "http://", "https://")
SUPPORTED_AUDIO = "WAV, MP3, FLAC, OGG (Vorbis/Opus), AAC, M4A or WebM"
_LANGUAGE = re.compile(r"[A-Za-z][A-Za-z \-]{0,31}")

# --- text to speech -------------------------------------------------------------------------------

DEFAULT_TTS_MODEL = "rhasspy/piper-en_US-joe-medium"
DEFAULT_VOICE = "alloy"
MAX_INPUT_CHARS = 4096
MIN_SPEED, MAX_SPEED = 0.25, 4.0
# In the order error messages list them; services/audio/encode.py holds how each is written.
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


@dataclass(frozen=True)
class TranscribeParams:
    """A checked TranscribeRequest, proto3 defaults replaced by the documented ones."""

    audio: bytes
    audio_url: str
    language: str | None
    task: str
    prompt: str | None
    temperature: float
    response_format: str
    word_timestamps: bool

    @property
    def audio_field(self) -> str:
        """The request field the audio came in, for errors about its content."""
        return "audio" if self.audio else "audio_url"


@dataclass(frozen=True)
class SynthesizeParams:
    """A checked SynthesizeRequest, proto3 defaults replaced by the documented ones."""

    input: str
    voice: Voice
    speed: float
    response_format: str
    inline: bool


def validate_request(request: audio_pb2.TranscribeRequest | audio_pb2.SynthesizeRequest) -> None:
    """Raise InvalidArgument naming the first bad field of either audio request."""
    if isinstance(request, audio_pb2.TranscribeRequest):
        transcribe_params(request)
    elif isinstance(request, audio_pb2.SynthesizeRequest):
        synthesize_params(request)
    else:
        raise TypeError(f"not an audio request: {type(request).__name__}")


def transcribe_params(request: audio_pb2.TranscribeRequest) -> TranscribeParams:
    audio, url = check_audio_source(request.audio, request.audio_url)
    return TranscribeParams(
        audio=audio, audio_url=url,
        language=check_language(request.language),
        task=check_task(request.task or "transcribe"),
        prompt=check_prompt(request.prompt) or None,
        temperature=check_temperature(request.temperature if request.HasField("temperature")
                                      else 0.0),
        response_format=check_transcript_format(request.response_format or "json"),
        word_timestamps="word" in check_granularities(request.timestamp_granularities))


def synthesize_params(request: audio_pb2.SynthesizeRequest) -> SynthesizeParams:
    return SynthesizeParams(
        input=check_input(request.input),
        voice=resolve_voice(request.voice or DEFAULT_VOICE),
        speed=check_speed(request.speed if request.HasField("speed") else 1.0),
        response_format=check_speech_format(request.response_format or "mp3"),
        inline=request.inline)


# --- field checks (the engines use them too) ------------------------------------------------------

def check_audio_source(audio: bytes, audio_url: str) -> tuple[bytes, str]:
    """Exactly one of the uploaded bytes and a URL; the bytes must look like an audio file."""
    if audio and audio_url:
        raise InvalidArgument("send either the audio bytes or an audio_url, not both",
                              field="audio_url")
    if audio_url:
        if not audio_url.startswith(AUDIO_URL_SCHEMES):
            raise InvalidArgument("must be a data: URI or a file URL of this mesh",
                                  field="audio_url")
        return b"", audio_url
    if not audio:
        raise InvalidArgument("is required: send the audio bytes or an audio_url", field="audio")
    check_audio_bytes(audio, field="audio")
    return bytes(audio), ""


def check_audio_bytes(data: bytes, *, field: str, max_bytes: int = MAX_AUDIO_BYTES) -> str:
    """The container these bytes are in (by their magic numbers), or InvalidArgument."""
    if not data:
        raise InvalidArgument("the audio file is empty", field=field)
    if len(data) > max_bytes:
        raise InvalidArgument(f"the audio file is {len(data)} bytes; the limit is {max_bytes} "
                              "bytes", field=field)
    fmt = sniff_format(data)
    if fmt is None:
        raise InvalidArgument(f"unrecognised audio format; expected {SUPPORTED_AUDIO}",
                              field=field)
    return fmt


def sniff_format(data: bytes) -> str | None:
    """The demuxer for these bytes, recognised by magic numbers; None for anything else."""
    head = data[:16]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3":
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # MPEG audio frame sync; layer bits 00 mean ADTS (AAC), anything else MPEG layer I-III.
        return "aac" if head[1] & 0x06 == 0 else "mp3"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "matroska"
    if head[4:8] == b"ftyp":
        return "mp4"
    return None


def check_language(value: str) -> str | None:
    """The shape of a language (an ISO-639-1 code or an English name); the model decides the rest."""
    value = value.strip()
    if not value:
        return None
    if not _LANGUAGE.fullmatch(value):
        raise InvalidArgument(f"must be an ISO-639-1 code such as 'en' or a language name, "
                              f"got {value!r}", field="language")
    return value


def check_task(task: object) -> str:
    if task not in TASKS:
        raise InvalidArgument(f"must be one of {', '.join(TASKS)}, got {task!r}", field="task")
    return task  # type: ignore[return-value]


def check_temperature(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not MIN_TEMPERATURE <= value <= MAX_TEMPERATURE:
        raise InvalidArgument(f"must be a number from {MIN_TEMPERATURE:g} to "
                              f"{MAX_TEMPERATURE:g}, got {value!r}", field="temperature")
    return float(value)


def check_prompt(prompt: str | None) -> str | None:
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidArgument(f"is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}",
                              field="prompt")
    return prompt


def check_transcript_format(fmt: str, *, field: str = "response_format") -> str:
    if fmt not in TRANSCRIPT_FORMATS:
        raise InvalidArgument(f"must be one of {', '.join(TRANSCRIPT_FORMATS)}, got {fmt!r}",
                              field=field)
    return fmt


def check_granularities(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        if value not in TIMESTAMP_GRANULARITIES:
            raise InvalidArgument(f"must each be one of {', '.join(TIMESTAMP_GRANULARITIES)}, "
                                  f"got {value!r}", field="timestamp_granularities")
    return tuple(values)


def check_input(text: object) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgument("must be a non-empty string", field="input")
    if len(text) > MAX_INPUT_CHARS:
        raise InvalidArgument(f"is {len(text)} characters; the limit is {MAX_INPUT_CHARS}",
                              field="input")
    return text


def check_speed(speed: object) -> float:
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not math.isfinite(speed) \
            or not MIN_SPEED <= speed <= MAX_SPEED:
        raise InvalidArgument(f"must be a number from {MIN_SPEED} to {MAX_SPEED}, got {speed!r}",
                              field="speed")
    return float(speed)


def check_speech_format(fmt: object, *, field: str = "response_format") -> str:
    name = fmt.lower() if isinstance(fmt, str) else fmt
    if name not in SPEECH_FORMATS:
        raise InvalidArgument(f"unsupported format {fmt!r}; expected one of "
                              f"{', '.join(SPEECH_FORMATS)}", field=field)
    return name  # type: ignore[return-value]
