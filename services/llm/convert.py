"""`genmesh.v1.llm` protos <-> the engine's plain dataclasses (protocol.py), in both directions.

No I/O and no model: requests become `GenerationRequest`s (validated again by the engine's own
parsers, whose errors name the field), deltas and completions become stream events.
"""
from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from genmesh.errors import InvalidArgument
from genmesh.jsonpb import struct_to_json
from genmesh.v1 import common_pb2, llm_pb2

from .chat import parse_messages
from .constraints import parse_response_format
from .protocol import (Completion, Delta, FunctionTool, GenerationRequest, Message, ResponseFormat,
                       TokenLogprob, ToolChoice, Usage)
from .sampling import SamplingParams
from .tools import parse_tool_choice, parse_tools

SamplingRequest = llm_pb2.ChatCompleteRequest | llm_pb2.CompleteRequest


# --- requests -------------------------------------------------------------------------------------

def has_images(messages: Iterable[llm_pb2.ChatMessage]) -> bool:
    return any(part.type == "image_url" for m in messages for part in m.parts)


def chat_messages(messages: Sequence[llm_pb2.ChatMessage]) -> tuple[Message, ...]:
    """Text-only chat messages for the text engine; an image part is refused naming its place."""
    raw = []
    for i, m in enumerate(messages):
        for j, part in enumerate(m.parts):
            if part.type == "image_url":
                raise InvalidArgument("this model reads text only; send images to a vision model "
                                      "(e.g. genmesh/tiny-llava)", field=f"messages[{i}].parts[{j}]")
        raw.append(_message_dict(m))
    return parse_messages(raw)


def _message_dict(m: llm_pb2.ChatMessage) -> dict[str, Any]:
    content: str | None = m.content
    if m.parts:
        content = "\n".join(p.text for p in m.parts if p.type == "text")
    if not content and m.tool_calls:
        content = None  # an assistant turn that only called tools
    out: dict[str, Any] = {"role": m.role, "content": content}
    if m.name:
        out["name"] = m.name
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": c.type or "function",
                              "function": {"name": c.function.name,
                                           "arguments": c.function.arguments or "{}"}}
                             for c in m.tool_calls]
    return out


def vision_messages(messages: Sequence[llm_pb2.ChatMessage],
                    images: Mapping[tuple[int, int], bytes]) -> list[dict[str, Any]]:
    """OpenAI-shaped messages for the vision engine; `images[(i, j)]` holds part j of message i
    when it was fetched from the blob store (data: URIs pass through and decode there)."""
    out = []
    for i, m in enumerate(messages):
        if not m.parts:
            out.append({"role": m.role, "content": m.content})
            continue
        parts: list[dict[str, Any]] = []
        for j, p in enumerate(m.parts):
            if p.type == "image_url":
                parts.append({"type": "image_url", "image_url": {"url": images.get((i, j), p.image_url)}})
            else:
                parts.append({"type": p.type, "text": p.text})
        out.append({"role": m.role, "content": parts})
    return out


def sampling_params(request: SamplingRequest, defaults: Mapping[str, Any] | None = None) -> SamplingParams:
    """Unset optional fields take the model's `defaults` (its generation config or catalog entry),
    else the engine's own (temperature 1, no filters, no limit)."""
    fields: dict[str, Any] = dict(defaults or {})
    fields.update({name: getattr(request, name) for name in (
        "temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty",
        "repetition_penalty", "seed", "max_tokens", "min_tokens") if request.HasField(name)})
    return SamplingParams(stop=tuple(request.stop), n=request.n or 1, logprobs=request.logprobs,
                          top_logprobs=request.top_logprobs, ignore_eos=request.ignore_eos,
                          stop_token_ids=tuple(request.stop_token_ids), **fields)


def response_format(fmt: llm_pb2.ResponseFormat) -> ResponseFormat | None:
    if fmt.type in ("", "text"):
        return None
    spec: dict[str, Any] = {"name": fmt.name, "strict": fmt.strict}
    if fmt.HasField("json_schema"):
        spec["schema"] = struct_to_json(fmt.json_schema)
    return parse_response_format({"type": fmt.type, "json_schema": spec})


def tools(raw: Iterable[llm_pb2.Tool]) -> tuple[FunctionTool, ...]:
    return parse_tools([{"type": t.type or "function", "function": {
        "name": t.function.name, "description": t.function.description, "strict": t.function.strict,
        "parameters": struct_to_json(t.function.parameters) if t.function.HasField("parameters") else None}}
        for t in raw])


def tool_choice(choice: llm_pb2.ToolChoice) -> ToolChoice | None:
    if not choice.mode:
        return None
    if choice.mode == "function":
        return parse_tool_choice({"type": "function", "function": {"name": choice.function_name}})
    return parse_tool_choice(choice.mode)


def chat_request(request: llm_pb2.ChatCompleteRequest,
                 defaults: Mapping[str, Any] | None = None) -> GenerationRequest:
    return GenerationRequest(messages=chat_messages(request.messages), sampling=sampling_params(request, defaults),
                             response_format=response_format(request.response_format),
                             tools=tools(request.tools), tool_choice=tool_choice(request.tool_choice))


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
    return [llm_pb2.TokenLogprob(token=e.token, logprob=e.logprob, top_logprobs=[
        llm_pb2.TopLogprob(token=t.token, logprob=t.logprob) for t in e.top_logprobs]) for e in entries]


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
        index=delta.index, role="assistant" if first else "", content=delta.text,
        tool_calls=[llm_pb2.ToolCallDelta(index=c.index, id=c.id or "", type=c.type or "", name=c.name or "",
                                          arguments=c.arguments) for c in delta.tool_calls],
        finish_reason=delta.finish_reason or "", logprobs=token_logprobs(delta.logprobs))


def is_empty(delta: Delta) -> bool:
    """Nothing a client could see: a token whose text is held back (partial character, maybe-stop)."""
    return not (delta.text or delta.tool_calls or delta.finish_reason or delta.logprobs)


def chat_result(completion: Completion) -> llm_pb2.ChatCompleteResult:
    return llm_pb2.ChatCompleteResult(
        id=completion.request_id, model=completion.model, usage=token_usage(completion.usage),
        choices=[llm_pb2.ChatChoice(
            index=c.index, finish_reason=c.finish_reason, logprobs=token_logprobs(c.logprobs),
            message=llm_pb2.ChatMessage(role="assistant", content=c.text, tool_calls=[
                llm_pb2.ToolCall(id=t.id, type=t.type, function=llm_pb2.FunctionCall(
                    name=t.function.name, arguments=t.function.arguments)) for t in c.tool_calls]))
            for c in completion.choices])


def completion_delta(delta: Delta) -> llm_pb2.CompletionDelta:
    return llm_pb2.CompletionDelta(index=delta.index, text=delta.text, finish_reason=delta.finish_reason or "",
                                   logprobs=token_logprobs(delta.logprobs))


def complete_result(completion: Completion, *, echo: str = "") -> llm_pb2.CompleteResult:
    return llm_pb2.CompleteResult(
        id=completion.request_id, model=completion.model, usage=token_usage(completion.usage),
        choices=[llm_pb2.CompletionChoice(index=c.index, text=echo + c.text, finish_reason=c.finish_reason,
                                          logprobs=token_logprobs(c.logprobs)) for c in completion.choices])
