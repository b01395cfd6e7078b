"""The audio request rules the router runs before queueing: fields named, defaults filled, torch-free."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from genmesh.catalog import Catalog
from genmesh.errors import InvalidArgument, ModelUnavailable
from genmesh.worker.weights import checkpoint_dir
from genmesh.services.audio.params import (
    SPEECH_FORMATS,
    synthesize_params,
    transcribe_params,
    validate_request,
)
from genmesh.tasks import TASKS
from genmesh.v1 import audio_pb2

WAV_HEAD = b"RIFF\xff\xff\xff\xffWAVEfmt " + bytes(32)


def test_params_import_neither_torch_nor_numpy_nor_pyav() -> None:
    code = ("import sys, genmesh.services.audio.params; "
            "print(sorted({'torch', 'transformers', 'numpy', 'av'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unset_fields_take_the_documented_defaults() -> None:
    speech = synthesize_params(audio_pb2.SynthesizeRequest(input="Hi."))
    assert (speech.voice.name, speech.speed, speech.response_format, speech.inline) == \
        ("alloy", 1.0, "mp3", False)
    stt = transcribe_params(audio_pb2.TranscribeRequest(audio=WAV_HEAD))
    assert (stt.language, stt.task, stt.prompt, stt.temperature, stt.response_format,
            stt.word_timestamps, stt.audio_field) == (None, "transcribe", None, 0.0, "json",
                                                       False, "audio")


def test_values_are_normalised() -> None:
    speech = synthesize_params(audio_pb2.SynthesizeRequest(
        input="Hi.", voice="Nova", speed=0.25, response_format="WAV", inline=True))
    assert (speech.voice.name, speech.speed, speech.response_format, speech.inline) == \
        ("nova", 0.25, "wav", True)
    stt = transcribe_params(audio_pb2.TranscribeRequest(
        audio_url="data:audio/wav;base64,AAAA", language="English", task="translate",
        temperature=1.0, response_format="verbose_json",
        timestamp_granularities=["segment", "word"]))
    assert (stt.language, stt.task, stt.temperature, stt.word_timestamps, stt.audio_field) == \
        ("English", "translate", 1.0, True, "audio_url")


@pytest.mark.parametrize("fields, field", [
    ({}, "audio"),
    ({"audio": b"\x13\x37 not audio at all"}, "audio"),
    ({"audio": WAV_HEAD, "audio_url": "data:audio/wav;base64,AAAA"}, "audio_url"),
    ({"audio_url": "ftp://elsewhere/a.wav"}, "audio_url"),
    ({"audio_url": "/etc/passwd"}, "audio_url"),
    ({"audio": WAV_HEAD, "task": "summarize"}, "task"),
    ({"audio": WAV_HEAD, "temperature": 1.5}, "temperature"),
    ({"audio": WAV_HEAD, "temperature": -0.1}, "temperature"),
    ({"audio": WAV_HEAD, "temperature": float("nan")}, "temperature"),
    ({"audio": WAV_HEAD, "response_format": "docx"}, "response_format"),
    ({"audio": WAV_HEAD, "timestamp_granularities": ["char"]}, "timestamp_granularities"),
    ({"audio": WAV_HEAD, "language": "en; DROP TABLE"}, "language"),
    ({"audio": WAV_HEAD, "prompt": "x" * 4097}, "prompt"),
])
def test_bad_transcribe_requests_name_the_field(fields: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_request(audio_pb2.TranscribeRequest(**fields))
    assert err.value.field == field and err.value.message.startswith(field)


@pytest.mark.parametrize("fields, field, fragment", [
    ({"input": ""}, "input", "non-empty"),
    ({"input": " \n "}, "input", "non-empty"),
    ({"input": "a" * 4097}, "input", "limit is 4096"),
    ({"voice": "darth"}, "voice", "alloy, ash"),
    ({"speed": 0.0}, "speed", "0.25 to 4.0"),  # set explicitly: not the default
    ({"speed": 4.01}, "speed", "0.25 to 4.0"),
    ({"speed": float("inf")}, "speed", "0.25 to 4.0"),
    ({"response_format": "midi"}, "response_format", "mp3, opus, aac, flac, wav, pcm"),
])
def test_bad_synthesize_requests_name_the_field(fields: dict, field: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_request(audio_pb2.SynthesizeRequest(**({"input": "Hi."} | fields)))
    assert err.value.field == field
    assert fragment in err.value.message


def test_the_router_runs_these_rules_for_both_tasks() -> None:
    with pytest.raises(InvalidArgument):
        TASKS["text-to-speech"].validate(audio_pb2.SynthesizeRequest(input="Hi.", speed=9))
    with pytest.raises(InvalidArgument):
        TASKS["speech-to-text"].validate(audio_pb2.TranscribeRequest(audio=b"junk"))
    TASKS["text-to-speech"].validate(audio_pb2.SynthesizeRequest(input="Hi."))


def test_the_encoder_writes_exactly_the_formats_the_router_accepts() -> None:
    from genmesh.services.audio.encode import FORMATS

    assert tuple(FORMATS) == SPEECH_FORMATS


def test_missing_weights_say_how_to_get_them(tmp_path: Path) -> None:
    catalog = Catalog.load()
    with pytest.raises(ModelUnavailable) as err:
        checkpoint_dir(catalog.get("genmesh/tiny-whisper"), tmp_path)
    assert "genmesh models build genmesh/tiny-whisper" in err.value.message
    with pytest.raises(ModelUnavailable) as err:
        checkpoint_dir(catalog.get("openai/whisper-large-v3-turbo"), tmp_path)
    assert str(tmp_path / "openai/whisper-large-v3-turbo") in err.value.message
    assert err.value.grpc_code.name == "FAILED_PRECONDITION"
