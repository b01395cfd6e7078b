"""OpenAI JSON <-> genmesh's typed messages: plain functions and small stream folders, no I/O.

Requests (validated protocol models) become `genmesh.v1` requests; typed results and event
streams become OpenAI response bodies and SSE chunks, with the wire facts the SDK relies on: the
first delta of a choice is `{"role":"assistant","content":""}`, each choice finishes exactly once,
and a named tool_choice finishes with `stop`.
"""
from __future__ import annotations

import base64
import re
import secrets
import struct
from typing import Any, Callable, Iterable

from google.protobuf import struct_pb2

from genmesh.errors import InvalidArgument
from genmesh.jsonpb import enum_from_short_name, enum_short_name
from genmesh.v1 import audio_pb2, llm_pb2
from genmesh.services.edge.mesh_client import current_request_id
from genmesh.services.edge.openai_protocol import (ChatCompletionRequest, CompletionRequest,
                                                   EmbeddingRequest, NamedToolChoice)

MAX_SIDE = 4096
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def response_id(prefix: str, sep: str = "-", fallback: str = "") -> str:
    """A response body's id: the router's id for this request (the `x-request-id` header, the
    id of billing's request log), so a client can quote either. Outside a request a mesh call
    has named (a batch, a deferred result read back later) `fallback` or a random one. A stream
    reads it at its first chunk, after the router's initial metadata."""
    request_id = current_request_id()
    if request_id:
        return f"{prefix}{sep}{request_id}"
    return fallback or f"{prefix}{sep}{secrets.token_hex(12)}"


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


# --- requests -------------------------------------------------------------------------------------

def role(name: str) -> int:
    """A wire format's role ("user", "developer", ...) as the proto's enum."""
    return enum_from_short_name(llm_pb2.Role, name)


def finish_name(reason: int) -> str:
    """The proto's finish reason by its wire name ("stop", "length", "tool_calls"); unset: "stop"."""
    return enum_short_name(llm_pb2.FinishReason, reason) or "stop"


TOOL_CHOICE_MODES = {"none": llm_pb2.TOOL_CHOICE_MODE_NONE, "auto": llm_pb2.TOOL_CHOICE_MODE_AUTO,
                     "required": llm_pb2.TOOL_CHOICE_MODE_REQUIRED}


def chat_request(body: ChatCompletionRequest, model_id: str,
                 is_accepted_url: Callable[[str], bool]) -> llm_pb2.ChatCompleteRequest:
    """The body mapped onto the proto, field for field. Ranges and cross-field rules are the
    router's (llm/params.py, one definition); only what the proto cannot say is refused here."""
    req = llm_pb2.ChatCompleteRequest(model_id=model_id, user=body.user or "",
                                      safety_identifier=body.safety_identifier or "",
                                      prompt_cache_key=body.prompt_cache_key or "")
    _sampling(req.sampling, body)
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if max_tokens is not None:
        req.sampling.max_tokens = max_tokens
    req.sampling.logprobs = bool(body.logprobs)
    if body.top_logprobs is not None:
        req.sampling.top_logprobs = body.top_logprobs
    if body.parallel_tool_calls is not None:
        req.parallel_tool_calls = body.parallel_tool_calls
    for i, msg in enumerate(body.messages):
        out = req.messages.add(role=role(msg.role),
                               name=msg.name or "", tool_call_id=msg.tool_call_id or "")
        if isinstance(msg.content, str):
            out.content = msg.content
        elif msg.content is not None:
            for j, part in enumerate(msg.content):
                if part.type == "text":
                    out.parts.add(type="text", text=part.text)
                else:
                    # Which URLs name this mesh's files only the edge knows (the router sees blobs).
                    url = part.image_url.url
                    if not (url.startswith("data:") or is_accepted_url(url)):
                        raise InvalidArgument(
                            "only data: URIs and this mesh's file URLs are accepted (upload the image "
                            "first, or send it inline as data:image/png;base64,...)",
                            field=f"messages[{i}].content[{j}].image_url.url")
                    out.parts.add(type="image_url", image_url=url)
        for call in msg.tool_calls or ():
            out.tool_calls.add(id=call.id, type="function", function=llm_pb2.FunctionCall(
                name=call.function.name, arguments=call.function.arguments))
    for tool in body.tools or ():
        fn = tool.function
        t = req.tools.add(type="function", function=llm_pb2.FunctionDefinition(
            name=fn.name, description=fn.description or "", strict=bool(fn.strict)))
        t.function.parameters.update(fn.parameters or {"type": "object", "properties": {}})
    choice = body.tool_choice
    if isinstance(choice, NamedToolChoice):
        req.tool_choice.mode = llm_pb2.TOOL_CHOICE_MODE_FUNCTION
        req.tool_choice.function_name = choice.function.name
    elif choice is not None:
        req.tool_choice.mode = TOOL_CHOICE_MODES[choice]
    fmt = body.response_format
    if fmt is not None:
        req.response_format.type = fmt.type
        if fmt.type == "json_schema" and fmt.json_schema is not None:
            req.response_format.name = fmt.json_schema.name
            req.response_format.strict = bool(fmt.json_schema.strict)
            req.response_format.json_schema.update(fmt.json_schema.schema_ or {})
    return req


def completion_request(body: CompletionRequest, prompt: str, model_id: str) -> llm_pb2.CompleteRequest:
    # The legacy API's fields the proto has no place for.
    if body.suffix:
        raise InvalidArgument("is not supported", field="suffix")
    if body.best_of not in (None, 1, body.n or 1):
        raise InvalidArgument("must equal n (returning the best of several runs is not supported)",
                              field="best_of")
    req = llm_pb2.CompleteRequest(model_id=model_id, prompt=prompt, echo=bool(body.echo), user=body.user or "",
                                  safety_identifier=body.safety_identifier or "",
                                  prompt_cache_key=body.prompt_cache_key or "")
    _sampling(req.sampling, body)
    if body.max_tokens is not None:
        req.sampling.max_tokens = body.max_tokens
    if body.logprobs is not None:
        req.sampling.logprobs = True
        req.sampling.top_logprobs = body.logprobs
    return req


def _sampling(out: llm_pb2.Sampling, body: Any) -> None:
    for name in ("temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty",
                 "repetition_penalty", "seed", "min_tokens", "n"):
        value = getattr(body, name)
        if value is not None:
            setattr(out, name, value)
    out.stop.extend(body.stop_list())
    out.ignore_eos = bool(body.ignore_eos)
    out.stop_token_ids.extend(body.stop_token_ids or ())


def completion_prompts(body: CompletionRequest) -> list[str]:
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not prompts:
        raise InvalidArgument("must not be empty", field="prompt")
    return prompts


def embed_request(body: EmbeddingRequest, model_id: str) -> llm_pb2.EmbedRequest:
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise InvalidArgument("must not be empty", field="input")
    if all(isinstance(t, int) for t in texts):
        texts = [texts]  # one input as token ids
    if all(isinstance(t, list) for t in texts):
        # Token ids of the embedding model's own vocabulary (as vLLM reads them).
        req = llm_pb2.EmbedRequest(model_id=model_id, token_input=[llm_pb2.TokenIds(ids=t) for t in texts])
        if body.dimensions is not None:
            req.dimensions = body.dimensions
        return req
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidArgument("mixes text and token ids", field="input")
        if not text:
            raise InvalidArgument("must not be an empty string",
                                  field="input" if isinstance(body.input, str) else f"input[{i}]")
    req = llm_pb2.EmbedRequest(model_id=model_id, input=texts)
    if body.dimensions is not None:
        req.dimensions = body.dimensions
    return req


def image_size(size: str | None) -> tuple[int, int]:
    """(width, height) from OpenAI's "WxH"; (0, 0) = the model's default."""
    if size in (None, "", "auto"):
        return 0, 0
    match = _SIZE.match(size)
    if not match:
        raise InvalidArgument(f"must be 'WIDTHxHEIGHT' (e.g. 512x512) or 'auto', got {size!r}", field="size")
    w, h = int(match[1]), int(match[2])
    if not (8 <= w <= MAX_SIDE and 8 <= h <= MAX_SIDE):
        raise InvalidArgument(f"sides must be between 8 and {MAX_SIDE} pixels", field="size")
    return w, h


# --- shared pieces of answers ---------------------------------------------------------------------

def usage_json(usage: llm_pb2.TokenUsage) -> dict[str, int]:
    total = usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": total}


def add_usage(a: dict[str, int] | None, b: dict[str, int]) -> dict[str, int]:
    if a is None:
        return dict(b)
    return {k: a.get(k, 0) + v for k, v in b.items()}


def chat_logprobs(entries: Iterable[llm_pb2.TokenLogprob]) -> list[dict[str, Any]]:
    """`bytes` are the engine's (a token can be part of a UTF-8 character its text cannot show)."""
    return [{"token": e.token, "logprob": e.logprob, "bytes": list(e.token_bytes),
             "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.token_bytes)}
                              for t in e.top_logprobs]} for e in entries]


def legacy_logprobs(entries: Iterable[llm_pb2.TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """The completions API's logprobs: parallel lists, with text offsets from `offset`."""
    out: dict[str, Any] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for e in entries:
        out["tokens"].append(e.token)
        out["token_logprobs"].append(e.logprob)
        out["top_logprobs"].append({t.token: t.logprob for t in e.top_logprobs})
        out["text_offset"].append(offset)
        offset += len(e.token)
    return out


def finish_reason(reason: int, named_tool: bool) -> str:
    name = finish_name(reason)
    # OpenAI: a call forced by naming the function finishes with "stop", not "tool_calls".
    return "stop" if named_tool and name == "tool_calls" else name


def tool_calls_json(calls: Iterable[llm_pb2.ToolCall]) -> list[dict[str, Any]]:
    return [{"id": c.id or new_id("call"), "type": "function",
             "function": {"name": c.function.name, "arguments": c.function.arguments or "{}"}}
            for c in calls]


# --- chat -----------------------------------------------------------------------------------------

def chat_completion_json(result: llm_pb2.ChatCompleteResult, *, model: str, created: int,
                         logprobs: bool, named_tool: bool) -> dict[str, Any]:
    choices = []
    for c in result.choices:
        calls = tool_calls_json(c.message.tool_calls)
        message: dict[str, Any] = {"role": "assistant",
                                   "content": c.message.content if (c.message.content or not calls) else None,
                                   "refusal": None}
        if calls:
            message["tool_calls"] = calls
        choices.append({"index": c.index, "message": message,
                        "logprobs": {"content": chat_logprobs(c.logprobs), "refusal": None} if logprobs else None,
                        "finish_reason": finish_reason(c.finish_reason, named_tool)})
    return {"id": response_id("chatcmpl", fallback=result.id if result.id.startswith("chatcmpl") else ""),
            "object": "chat.completion", "created": created, "model": result.model or model,
            "choices": choices, "usage": usage_json(result.usage), "system_fingerprint": None}


class ChatStream:
    """Folds LLM.ChatComplete events into OpenAI chunks (dicts), one choice state per index."""

    def __init__(self, *, model: str, created: int, n: int, logprobs: bool, named_tool: bool,
                 include_usage: bool) -> None:
        self._id: str | None = None
        self.model = model
        self.created = created
        self.n = n
        self.logprobs = logprobs
        self.named_tool = named_tool
        self.include_usage = include_usage
        self.started: set[int] = set()
        self.streamed: set[int] = set()
        self.finished: set[int] = set()

    @property
    def id(self) -> str:
        """Fixed at the first chunk, when the router has named the request (see `response_id`)."""
        if self._id is None:
            self._id = response_id("chatcmpl")
        return self._id

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                               "model": self.model, "system_fingerprint": None, "choices": choices}
        if usage is not None:
            out["usage"] = usage
        return out

    def _choice(self, index: int, delta: dict[str, Any], *, logprobs: Any = None,
                finish: str | None = None) -> dict[str, Any]:
        return self._chunk([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}])

    def _start(self, index: int) -> list[dict[str, Any]]:
        if index in self.started:
            return []
        self.started.add(index)
        return [self._choice(index, {"role": "assistant", "content": ""})]

    def _finish(self, index: int, reason: int) -> list[dict[str, Any]]:
        if index in self.finished:
            return []
        self.finished.add(index)
        return [self._choice(index, {}, finish=finish_reason(reason, self.named_tool))]

    def _content(self, index: int, text: str, logprobs: Iterable[llm_pb2.TokenLogprob]) -> list[dict[str, Any]]:
        entries = list(logprobs)
        if not text and not entries:
            return []
        self.streamed.add(index)
        lp = {"content": chat_logprobs(entries), "refusal": None} if self.logprobs else None
        return [self._choice(index, {"content": text}, logprobs=lp)]

    def _tool_call(self, index: int, call: llm_pb2.ToolCallDelta) -> list[dict[str, Any]]:
        self.streamed.add(index)
        out = []
        if call.id or call.name:
            out.append(self._choice(index, {"tool_calls": [{
                "index": call.index, "id": call.id or new_id("call"), "type": "function",
                "function": {"name": call.name, "arguments": ""}}]}))
        if call.arguments:
            out.append(self._choice(index, {"tool_calls": [{
                "index": call.index, "function": {"arguments": call.arguments}}]}))
        return out

    def on_chunk(self, chunk: llm_pb2.ChatCompleteChunk) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for d in chunk.choices:
            out += self._start(d.index)
            if d.index in self.finished:
                continue
            out += self._content(d.index, d.content, d.logprobs)
            for call in d.tool_calls:
                out += self._tool_call(d.index, call)
            if d.finish_reason:
                out += self._finish(d.index, d.finish_reason)
        return out

    def on_result(self, result: llm_pb2.ChatCompleteResult) -> list[dict[str, Any]]:
        """Closes every choice (replaying what a worker sent only in its result) and adds usage."""
        out: list[dict[str, Any]] = []
        for c in result.choices:
            out += self._start(c.index)
            if c.index not in self.streamed and c.index not in self.finished:
                out += self._content(c.index, c.message.content, c.logprobs)
                for k, call in enumerate(c.message.tool_calls):
                    out += self._tool_call(c.index, llm_pb2.ToolCallDelta(
                        index=k, id=call.id, type="function", name=call.function.name,
                        arguments=call.function.arguments))
            out += self._finish(c.index, c.finish_reason)
        for i in range(self.n):
            out += self._start(i)
            out += self._finish(i, llm_pb2.FINISH_REASON_STOP)
        if self.include_usage:
            out.append(self._chunk([], usage=usage_json(result.usage)))
        return out


# --- completions ----------------------------------------------------------------------------------

def completion_json(results: list[llm_pb2.CompleteResult], *, model: str, created: int, n: int,
                    logprobs: bool) -> dict[str, Any]:
    choices = []
    usage: dict[str, int] | None = None
    for p, result in enumerate(results):
        for c in result.choices:
            choices.append({"index": p * n + c.index, "text": c.text,
                            "logprobs": legacy_logprobs(c.logprobs) if logprobs else None,
                            "finish_reason": finish_name(c.finish_reason)})
        usage = add_usage(usage, usage_json(result.usage))
    model_name = (results[0].model if results else "") or model
    return {"id": response_id("cmpl"), "object": "text_completion", "created": created, "model": model_name,
            "choices": choices, "usage": usage or usage_json(llm_pb2.TokenUsage()),
            "system_fingerprint": None}


class CompletionStream:
    """Folds LLM.Complete events of one prompt (of several) into OpenAI completion chunks."""

    def __init__(self, *, model: str, created: int, n: int, logprobs: bool) -> None:
        self._id: str | None = None
        self.model = model
        self.created = created
        self.n = n
        self.logprobs = logprobs
        self.prompt = 0
        self.streamed: set[int] = set()
        self.finished: set[int] = set()
        self.offsets: dict[int, int] = {}
        self.usage: dict[str, int] | None = None

    @property
    def id(self) -> str:
        """Fixed at the first chunk, when the router has named the request (see `response_id`)."""
        if self._id is None:
            self._id = response_id("cmpl")
        return self._id

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "object": "text_completion", "created": self.created,
                               "model": self.model, "system_fingerprint": None, "choices": choices}
        if usage is not None:
            out["usage"] = usage
        return out

    def _text(self, index: int, text: str, logprobs: Iterable[llm_pb2.TokenLogprob]) -> list[dict[str, Any]]:
        entries = list(logprobs)
        if not text and not entries:
            return []
        i = self.prompt * self.n + index
        self.streamed.add(i)
        lp = None
        if self.logprobs:
            lp = legacy_logprobs(entries, self.offsets.get(i, 0))
        self.offsets[i] = self.offsets.get(i, 0) + len(text)
        return [self._chunk([{"index": i, "text": text, "logprobs": lp, "finish_reason": None}])]

    def _finish(self, index: int, reason: int) -> list[dict[str, Any]]:
        i = self.prompt * self.n + index
        if i in self.finished:
            return []
        self.finished.add(i)
        return [self._chunk([{"index": i, "text": "", "logprobs": None, "finish_reason": finish_name(reason)}])]

    def on_chunk(self, chunk: llm_pb2.CompleteChunk) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for d in chunk.choices:
            if self.prompt * self.n + d.index in self.finished:
                continue
            out += self._text(d.index, d.text, d.logprobs)
            if d.finish_reason:
                out += self._finish(d.index, d.finish_reason)
        return out

    def on_result(self, result: llm_pb2.CompleteResult) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for c in result.choices:
            if self.prompt * self.n + c.index not in self.streamed:
                out += self._text(c.index, c.text, c.logprobs)
            out += self._finish(c.index, c.finish_reason)
        for index in range(self.n):
            out += self._finish(index, llm_pb2.FINISH_REASON_STOP)
        self.usage = add_usage(self.usage, usage_json(result.usage))
        self.prompt += 1
        return out

    def usage_chunk(self) -> dict[str, Any]:
        return self._chunk([], usage=self.usage or usage_json(llm_pb2.TokenUsage()))


# --- embeddings -----------------------------------------------------------------------------------

def embedding_json(resp: llm_pb2.EmbedResponse, *, model: str, encoding_format: str) -> dict[str, Any]:
    data = []
    for e in sorted(resp.data, key=lambda e: e.index):
        values = list(e.embedding)
        if encoding_format == "base64":
            encoded: Any = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        else:
            encoded = values
        data.append({"object": "embedding", "index": e.index, "embedding": encoded})
    return {"object": "list", "data": data, "model": resp.model or model,
            "usage": {"prompt_tokens": resp.usage.prompt_tokens,
                      "total_tokens": resp.usage.total_tokens or resp.usage.prompt_tokens}}


# --- audio ----------------------------------------------------------------------------------------

SPEECH_CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac",
                        "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}


def _segment_json(s: audio_pb2.TranscriptSegment) -> dict[str, Any]:
    return {"id": s.id, "seek": s.seek, "start": s.start, "end": s.end, "text": s.text,
            "tokens": list(s.tokens), "temperature": s.temperature, "avg_logprob": s.avg_logprob,
            "compression_ratio": s.compression_ratio, "no_speech_prob": s.no_speech_prob}


def _word_json(w: audio_pb2.Word) -> dict[str, Any]:
    return {"word": w.word, "start": w.start, "end": w.end}


def _clock(seconds: float, separator: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def subtitles(result: audio_pb2.TranscribeResult, fmt: str) -> str:
    """SRT or WebVTT from the segments (used when a worker did not render them itself)."""
    segments = list(result.segments) or [audio_pb2.TranscriptSegment(
        start=0.0, end=result.duration_seconds, text=result.text)]
    cues = []
    for n, s in enumerate(segments, 1):
        if fmt == "srt":
            cues.append(f"{n}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n")
        else:
            cues.append(f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n")
    body = "\n".join(cues)
    return body if fmt == "srt" else "WEBVTT\n\n" + body


def transcription_body(result: audio_pb2.TranscribeResult, fmt: str, granularities: list[str],
                       task: str = "transcribe") -> tuple[Any, str]:
    """(body, content type): a JSON object for json/verbose_json, text for text/srt/vtt."""
    if fmt == "json":
        return {"text": result.text, "usage": {"type": "duration", "seconds": result.duration_seconds}}, \
            "application/json"
    if fmt == "verbose_json":
        body: dict[str, Any] = {"task": result.task or task, "language": result.language or "english",
                                "duration": result.duration_seconds, "text": result.text,
                                "segments": [_segment_json(s) for s in result.segments],
                                "usage": {"type": "duration", "seconds": result.duration_seconds}}
        if "word" in granularities:
            words = list(result.words) or [w for s in result.segments for w in s.words]
            body["words"] = [_word_json(w) for w in words]
        return body, "application/json"
    if result.formatted:
        text = result.formatted
    elif fmt == "text":
        text = result.text + "\n"
    else:
        text = subtitles(result, fmt)
    return text, "text/plain; charset=utf-8"
