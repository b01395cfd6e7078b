"""`genmesh.v1.llm` protos <-> the engine's plain dataclasses (protocol.py), in both directions.

No I/O and no model. Requests arrive checked by the router (llm/params.py, the one definition;
the router is a worker's only caller) and map field for field onto `GenerationRequest`, with no
JSON in between and no second validation; what is refused here is what only this worker knows
(a text model given an image). Deltas and completions become stream events.
"""
from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from genmesh.errors import InvalidArgument
from genmesh.jsonpb import enum_from_short_name, enum_short_name, struct_to_json
from genmesh.v1 import common_pb2, llm_pb2

from .protocol import (Completion, Delta, FunctionCall, FunctionTool, GenerationRequest, Message, ResponseFormat,
                       TokenLogprob, ToolCall, ToolChoice, Usage)
from .sampling import SamplingParams

SamplingRequest = llm_pb2.ChatCompleteRequest | llm_pb2.CompleteRequest
# Optional sampling fields: unset ones take the model's defaults, then the engine's own.
_OPTIONAL_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty",
                      "repetition_penalty", "seed", "max_tokens", "min_tokens", "n")


# --- requests -------------------------------------------------------------------------------------

def role_name(role: int) -> str:
    """The engine's (and chat templates') role; developer is OpenAI's newer name for system."""
    name = enum_short_name(llm_pb2.Role, role)
    return "system" if name == "developer" else name


def finish_reason(name: str | None) -> int:
    """The engine's finish reason ("stop", "length", "tool_calls") as the proto's enum; None: unfinished."""
    return enum_from_short_name(llm_pb2.FinishReason, name or "")


def has_images(messages: Iterable[llm_pb2.ChatMessage]) -> bool:
    return any(part.type == "image_url" for m in messages for part in m.parts)


def chat_messages(messages: Sequence[llm_pb2.ChatMessage]) -> tuple[Message, ...]:
    """Text-only chat messages for the text engine; an image part is refused naming its place."""
    out = []
    for i, m in enumerate(messages):
        for j, part in enumerate(m.parts):
            if part.type == "image_url":
                raise InvalidArgument("this model reads text only; send images to a vision model "
                                      "(e.g. genmesh/tiny-llava)", field=f"messages[{i}].parts[{j}]")
        calls = tuple(ToolCall(id=c.id, function=FunctionCall(c.function.name, c.function.arguments or "{}"))
                      for c in m.tool_calls)
        content: str | None = "\n".join(p.text for p in m.parts) if m.parts else m.content
        if not content and calls:
            content = None  # an assistant turn that only called tools
        role = role_name(m.role)
        out.append(Message(role=role, content=content, name=m.name or None,  # type: ignore[arg-type]
                           tool_calls=calls, tool_call_id=m.tool_call_id if role == "tool" else None))
    return tuple(out)


def vision_messages(messages: Sequence[llm_pb2.ChatMessage],
                    images: Mapping[tuple[int, int], bytes]) -> list[dict[str, Any]]:
    """OpenAI-shaped messages for the vision engine; `images[(i, j)]` holds part j of message i
    when it was fetched from the blob store (data: URIs pass through and decode there)."""
    out = []
    for i, m in enumerate(messages):
        if not m.parts:
            out.append({"role": role_name(m.role), "content": m.content})
            continue
        parts: list[dict[str, Any]] = []
        for j, p in enumerate(m.parts):
            if p.type == "image_url":
                parts.append({"type": "image_url", "image_url": {"url": images.get((i, j), p.image_url)}})
            else:
                parts.append({"type": p.type, "text": p.text})
        out.append({"role": role_name(m.role), "content": parts})
    return out


def sampling_params(request: SamplingRequest, defaults: Mapping[str, Any] | None = None) -> SamplingParams:
    """Unset optional fields take the model's `defaults` (its generation config or catalog entry),
    else the engine's own (temperature 1, no filters, no limit)."""
    sampling = request.sampling
    fields: dict[str, Any] = dict(defaults or {})
    fields.update({name: getattr(sampling, name) for name in _OPTIONAL_SAMPLING if sampling.HasField(name)})
    return SamplingParams(stop=tuple(sampling.stop), logprobs=sampling.logprobs,
                          top_logprobs=sampling.top_logprobs, ignore_eos=sampling.ignore_eos,
                          stop_token_ids=tuple(sampling.stop_token_ids), **fields)


def response_format(fmt: llm_pb2.ResponseFormat) -> ResponseFormat | None:
    if fmt.type in ("", "text"):
        return None
    if fmt.type == "json_object":
        return ResponseFormat(type="json_object")
    return ResponseFormat(type="json_schema", schema=struct_to_json(fmt.json_schema), name=fmt.name,
                          strict=fmt.strict)


def tools(raw: Iterable[llm_pb2.Tool]) -> tuple[FunctionTool, ...]:
    return tuple(FunctionTool(name=t.function.name, description=t.function.description, strict=t.function.strict,
                              parameters=struct_to_json(t.function.parameters) if t.function.HasField("parameters")
                              else {"type": "object", "properties": {}}) for t in raw)


def tool_choice(choice: llm_pb2.ToolChoice) -> ToolChoice | None:
    mode = enum_short_name(llm_pb2.ToolChoiceMode, choice.mode)
    if not mode:
        return None  # unspecified: "auto" with tools, "none" without
    return ToolChoice(mode=mode, function_name=choice.function_name if mode == "function" else None)  # type: ignore[arg-type]


def chat_request(request: llm_pb2.ChatCompleteRequest,
                 defaults: Mapping[str, Any] | None = None) -> GenerationRequest:
    return GenerationRequest(messages=chat_messages(request.messages), sampling=sampling_params(request, defaults),
                             response_format=response_format(request.response_format),
                             tools=tools(request.tools), tool_choice=tool_choice(request.tool_choice),
                             parallel_tool_calls=(request.parallel_tool_calls
                                                  if request.HasField("parallel_tool_calls") else None))


def complete_request(request: llm_pb2.CompleteRequest,
                     defaults: Mapping[str, Any] | None = None) -> GenerationRequest:
    return GenerationRequest(prompt=request.prompt, sampling=sampling_params(request, defaults),
                             response_format=response_format(request.response_format),
                             request_id="cmpl-" + secrets.token_hex(12))


def count_request(request: llm_pb2.CountTokensRequest) -> GenerationRequest:
    if request.messages:
        return GenerationRequest(messages=chat_messages(request.messages), tools=tools(request.tools))
    return GenerationRequest(prompt=request.prompt, tools=tools(request.tools))


# --- results and events ---------------------------------------------------------------------------

def token_logprobs(entries: Iterable[TokenLogprob]) -> list[llm_pb2.TokenLogprob]:
    """The engine's bytes go along: a token may be part of a UTF-8 character, which its text cannot show."""
    return [llm_pb2.TokenLogprob(token=e.token, logprob=e.logprob, token_bytes=bytes(e.bytes), top_logprobs=[
        llm_pb2.TopLogprob(token=t.token, logprob=t.logprob, token_bytes=bytes(t.bytes)) for t in e.top_logprobs])
        for e in entries]


def token_usage(usage: Usage) -> llm_pb2.TokenUsage:
    return llm_pb2.TokenUsage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                              total_tokens=usage.total_tokens)


def usage_proto(usage: Usage) -> common_pb2.Usage:
    """What billing meters: input and output tokens."""
    return common_pb2.Usage(items=[
        common_pb2.UsageItem(unit="input_tokens", quantity=usage.prompt_tokens),
        common_pb2.UsageItem(unit="output_tokens", quantity=usage.completion_tokens)])


def choice_delta(delta: Delta, *, first: bool) -> llm_pb2.ChoiceDelta:
    """One streamed piece of a choice; its first piece carries the role."""
    return llm_pb2.ChoiceDelta(
        index=delta.index, role=llm_pb2.ROLE_ASSISTANT if first else llm_pb2.ROLE_UNSPECIFIED, content=delta.text,
        tool_calls=[llm_pb2.ToolCallDelta(index=c.index, id=c.id or "", type=c.type or "", name=c.name or "",
                                          arguments=c.arguments) for c in delta.tool_calls],
        finish_reason=finish_reason(delta.finish_reason), logprobs=token_logprobs(delta.logprobs),
        stop_sequence=delta.stop_sequence or "")


def is_empty(delta: Delta) -> bool:
    """Nothing a client could see: a token whose text is held back (partial character, maybe-stop)."""
    return not (delta.text or delta.tool_calls or delta.finish_reason or delta.logprobs)


def chat_result(completion: Completion) -> llm_pb2.ChatCompleteResult:
    return llm_pb2.ChatCompleteResult(
        id=completion.request_id, model=completion.model, usage=token_usage(completion.usage),
        choices=[llm_pb2.ChatChoice(
            index=c.index, finish_reason=finish_reason(c.finish_reason), logprobs=token_logprobs(c.logprobs),
            stop_sequence=c.stop_sequence or "", message=llm_pb2.ChatMessage(role=llm_pb2.ROLE_ASSISTANT, content=c.text, tool_calls=[
                llm_pb2.ToolCall(id=t.id, type=t.type, function=llm_pb2.FunctionCall(
                    name=t.function.name, arguments=t.function.arguments)) for t in c.tool_calls]))
            for c in completion.choices])


def completion_delta(delta: Delta) -> llm_pb2.CompletionDelta:
    return llm_pb2.CompletionDelta(index=delta.index, text=delta.text, finish_reason=finish_reason(delta.finish_reason),
                                   logprobs=token_logprobs(delta.logprobs))


def complete_result(completion: Completion, *, echo: str = "") -> llm_pb2.CompleteResult:
    return llm_pb2.CompleteResult(
        id=completion.request_id, model=completion.model, usage=token_usage(completion.usage),
        choices=[llm_pb2.CompletionChoice(index=c.index, text=echo + c.text, finish_reason=finish_reason(c.finish_reason),
                                          logprobs=token_logprobs(c.logprobs)) for c in completion.choices])
