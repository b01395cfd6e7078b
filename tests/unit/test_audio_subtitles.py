"""Transcript response formats: OpenAI's json/text/verbose_json, and valid SRT and WebVTT."""
from __future__ import annotations

import json
import re

import pytest

from genmesh.errors import InvalidArgument
from genmesh.services.audio.stt import Segment, Transcript, Word
from genmesh.services.audio.subtitles import render_transcript, timestamp

SRT_CUE = re.compile(r"^(\d+)\n(\d{2}:\d{2}:\d{2},\d{3}) --> (\d{2}:\d{2}:\d{2},\d{3})\n(.+)$",
                     re.S)
VTT_CUE = re.compile(r"^(\d{2}:\d{2}:\d{2}\.\d{3}) --> (\d{2}:\d{2}:\d{2}\.\d{3})\n(.+)$", re.S)


def parse_srt(body: str) -> list[tuple[int, str, str, str]]:
    """Parse SubRip strictly; fail on anything malformed."""
    assert body.endswith("\n") and "\n\n\n" not in body
    cues = []
    for block in body.strip("\n").split("\n\n"):
        match = SRT_CUE.match(block)
        assert match, f"malformed SRT cue: {block!r}"
        cues.append((int(match[1]), match[2], match[3], match[4]))
    assert [c[0] for c in cues] == list(range(1, len(cues) + 1))
    return cues


def parse_vtt(body: str) -> list[tuple[str, str, str]]:
    """Parse WebVTT strictly; fail on anything malformed."""
    assert body.startswith("WEBVTT\n\n")
    cues = []
    for block in body[len("WEBVTT\n\n"):].strip("\n").split("\n\n"):
        match = VTT_CUE.match(block)
        assert match, f"malformed VTT cue: {block!r}"
        assert "-->" not in match[3]
        cues.append((match[1], match[2], match[3]))
    return cues


@pytest.fixture
def transcript() -> Transcript:
    words = (Word("hello", 0.5, 0.9), Word("world", 0.9, 1.4))
    segments = (
        Segment(id=0, start=0.5, end=1.4, text="hello world", words=words, tokens=(1, 2),
                avg_logprob=-0.25, compression_ratio=0.9, no_speech_prob=0.01),
        Segment(id=1, start=2.0, end=2.0, text="", words=()),
        Segment(id=2, start=3725.5, end=3727.25, text="a --> b\n\nsecond line"),
    )
    return Transcript(text="hello world a --> b second line", language="en", duration=3728.0,
                      segments=segments, words=words, task="transcribe")


def test_timestamps_use_hours_minutes_seconds_millis() -> None:
    assert timestamp(0, ",") == "00:00:00,000"
    assert timestamp(3725.5, ",") == "01:02:05,500"
    assert timestamp(59.9996, ".") == "00:01:00.000"


def test_srt_is_numbered_cues_skipping_empty_segments(transcript: Transcript) -> None:
    cues = parse_srt(render_transcript(transcript, "srt"))
    assert cues == [(1, "00:00:00,500", "00:00:01,400", "hello world"),
                    (2, "01:02:05,500", "01:02:07,250", "a -> b\nsecond line")]


def test_vtt_has_header_and_dot_millis(transcript: Transcript) -> None:
    cues = parse_vtt(render_transcript(transcript, "vtt"))
    assert cues[0] == ("00:00:00.500", "00:00:01.400", "hello world")
    assert cues[1][0] == "01:02:05.500"


def test_json_and_text(transcript: Transcript) -> None:
    assert json.loads(render_transcript(transcript, "json")) == {"text": transcript.text}
    assert render_transcript(transcript, "text") == transcript.text + "\n"


def test_verbose_json_matches_openai_shape(transcript: Transcript) -> None:
    body = json.loads(render_transcript(transcript, "verbose_json"))
    assert body["task"] == "transcribe"
    assert body["language"] == "english"
    assert body["duration"] == 3728.0
    assert body["text"] == transcript.text
    first = body["segments"][0]
    assert set(first) == {"id", "seek", "start", "end", "text", "tokens", "temperature",
                          "avg_logprob", "compression_ratio", "no_speech_prob"}
    assert first["tokens"] == [1, 2] and first["avg_logprob"] == -0.25
    assert body["words"] == [{"word": "hello", "start": 0.5, "end": 0.9},
                             {"word": "world", "start": 0.9, "end": 1.4}]


def test_verbose_json_omits_words_unless_requested(transcript: Transcript) -> None:
    from dataclasses import replace

    body = json.loads(render_transcript(replace(transcript, words=None), "verbose_json"))
    assert "words" not in body


def test_unknown_response_format_is_rejected(transcript: Transcript) -> None:
    with pytest.raises(InvalidArgument) as err:
        render_transcript(transcript, "docx")
    assert err.value.field == "response_format"
