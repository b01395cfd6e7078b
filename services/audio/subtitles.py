"""A transcript in the response formats of OpenAI's transcription API: json, text, srt, vtt,
verbose_json. Pure functions of the transcript."""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .params import TRANSCRIPT_FORMATS as RESPONSE_FORMATS  # noqa: F401 - re-exported
from .params import check_transcript_format as check_response_format
from .stt import Segment, Transcript, Word, language_name

CONTENT_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def render_transcript(transcript: Transcript, fmt: str) -> str:
    """The response body for ``fmt``."""
    check_response_format(fmt)
    if fmt == "json":
        return json.dumps({"text": transcript.text}, ensure_ascii=False)
    if fmt == "text":
        return transcript.text + "\n"
    if fmt == "srt":
        return to_srt(transcript.segments)
    if fmt == "vtt":
        return to_vtt(transcript.segments)
    return json.dumps(verbose_json(transcript), ensure_ascii=False)


def verbose_json(transcript: Transcript) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": transcript.task,
        "language": language_name(transcript.language),
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
        "segments": [_segment(s) for s in transcript.segments],
    }
    if transcript.words is not None:
        body["words"] = [_word(w) for w in transcript.words]
    return body


def to_srt(segments: Iterable[Segment]) -> str:
    """SubRip: numbered cues from 1, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, blank line between."""
    cues = []
    for number, segment in enumerate(_cues(segments), start=1):
        start, end = timestamp(segment.start, ","), timestamp(segment.end, ",")
        cues.append(f"{number}\n{start} --> {end}\n{_cue_text(segment.text)}\n")
    return "\n".join(cues)


def to_vtt(segments: Iterable[Segment]) -> str:
    """WebVTT: the ``WEBVTT`` header, then ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` cues."""
    cues = [f"{timestamp(s.start, '.')} --> {timestamp(s.end, '.')}\n{_cue_text(s.text)}\n"
            for s in _cues(segments)]
    return "WEBVTT\n\n" + "\n".join(cues)


def timestamp(seconds: float, separator: str) -> str:
    """``3725.5`` -> ``01:02:05,500`` (SRT) or ``01:02:05.500`` (VTT)."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cues(segments: Iterable[Segment]) -> list[Segment]:
    # A cue with no text would read as a cue separator, so only segments with words become cues.
    return [s for s in segments if _cue_text(s.text)]


def _cue_text(text: str) -> str:
    # Cue payloads may not contain blank lines, and VTT forbids "-->" inside them.
    lines = [line.strip() for line in text.replace("-->", "->").splitlines()]
    return "\n".join(line for line in lines if line)


def _segment(s: Segment) -> dict[str, Any]:
    return {"id": s.id, "seek": s.seek, "start": s.start, "end": s.end, "text": s.text,
            "tokens": list(s.tokens), "temperature": s.temperature, "avg_logprob": s.avg_logprob,
            "compression_ratio": s.compression_ratio, "no_speech_prob": s.no_speech_prob}


def _word(w: Word) -> dict[str, Any]:
    return {"word": w.word, "start": w.start, "end": w.end}
