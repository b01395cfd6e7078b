"""Anthropic Messages JSON <-> genmesh's LLM chat protos: plain functions and a stream folder, no I/O.

A Messages request maps onto the same `ChatCompleteRequest` as an OpenAI chat: the system prompt
becomes a system message, `tool_result` blocks become tool messages (placed before the rest of
their user turn, right after the assistant turn that called the tools), `tool_use` blocks become
the assistant's tool calls, images become image parts. Answers and stream events are built from
the chat result and chunks, with Anthropic's event order: message_start, per block
content_block_start / content_block_delta / content_block_stop, message_delta, message_stop.
"""
from __future__ import annotations

import json
import secrets
from typing import Any, Callable

from genmesh.errors import GenmeshError, InvalidArgument
from genmesh.v1 import llm_pb2
from genmesh.services.edge.openai_convert import TOOL_CHOICE_MODES, finish_name, response_id, role
from genmesh.services.edge.result_replay import ResultReplay
from genmesh.services.edge.anthropic_protocol import (CountTokensRequest, ImageBlock, MessagesRequest,
                                                      TextBlock, ToolResultBlock, ToolUseBlock,
                                                      _Conversation)

# genmesh's finish reasons -> Anthropic's stop reasons.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
# HTTP status -> Anthropic error type.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def message_id() -> str:
    """A message's id, `msg_<the router's request id>` (see `response_id`): ask once the first
    event (or the result) is in."""
    return response_id("msg", "_")


def error_body(error: GenmeshError) -> dict[str, Any]:
    message = f"{error.field}: {error.message}" if error.field and error.field not in error.message else error.message
    return {"type": "error", "error": {"type": ERROR_TYPES.get(error.http_status, "api_error"),
                                       "message": message}}


# --- requests -------------------------------------------------------------------------------------

def _image_url(block: ImageBlock, field: str, is_accepted_url: Callable[[str], bool]) -> str:
    source = block.source
    if source.type == "base64":
        return f"data:{source.media_type};base64,{source.data}"
    if not (source.url.startswith("data:") or is_accepted_url(source.url)):
        raise InvalidArgument("only this mesh's file URLs are accepted (upload the image first, or "
                              "send it as a base64 source)", field=f"{field}.source.url")
    return source.url


def _tool_result_text(block: ToolResultBlock) -> str:
    if block.content is None:
        text = ""
    elif isinstance(block.content, str):
        text = block.content
    else:
        text = "\n".join(b.text for b in block.content if isinstance(b, TextBlock))
    return f"Error: {text}" if block.is_error else text


def chat_messages(body: _Conversation, is_accepted_url: Callable[[str], bool]) -> list[llm_pb2.ChatMessage]:
    out: list[llm_pb2.ChatMessage] = []
    if body.system:
        system = body.system if isinstance(body.system, str) else "\n".join(b.text for b in body.system)
        out.append(llm_pb2.ChatMessage(role=llm_pb2.ROLE_SYSTEM, content=system))
    for i, msg in enumerate(body.messages):
        if isinstance(msg.content, str):
            out.append(llm_pb2.ChatMessage(role=role(msg.role), content=msg.content))
            continue
        turn = llm_pb2.ChatMessage(role=role(msg.role))
        results: list[llm_pb2.ChatMessage] = []
        for j, block in enumerate(msg.content):
            field = f"messages[{i}].content[{j}]"
            if isinstance(block, TextBlock):
                turn.parts.add(type="text", text=block.text)
            elif isinstance(block, ImageBlock):
                if msg.role != "user":
                    raise InvalidArgument("images belong in user turns", field=field)
                turn.parts.add(type="image_url", image_url=_image_url(block, field, is_accepted_url))
            elif isinstance(block, ToolUseBlock):
                if msg.role != "assistant":
                    raise InvalidArgument("tool_use blocks belong in assistant turns", field=field)
                turn.tool_calls.add(id=block.id, type="function", function=llm_pb2.FunctionCall(
                    name=block.name, arguments=json.dumps(block.input)))
            elif isinstance(block, ToolResultBlock):
                if msg.role != "user":
                    raise InvalidArgument("tool_result blocks belong in user turns", field=field)
                results.append(llm_pb2.ChatMessage(role=llm_pb2.ROLE_TOOL, tool_call_id=block.tool_use_id,
                                                   content=_tool_result_text(block)))
        out += results
        if turn.parts or turn.tool_calls:
            if all(p.type == "text" for p in turn.parts):
                # Plain text turns travel as content (what every chat template reads).
                turn.content = "".join(p.text for p in turn.parts)
                del turn.parts[:]
            out.append(turn)
    return out


def _tools(body: _Conversation, req: Any) -> None:
    names = []
    for tool in body.tools or ():
        t = req.tools.add(type="function", function=llm_pb2.FunctionDefinition(
            name=tool.name, description=tool.description or ""))
        t.function.parameters.update(tool.input_schema)
        names.append(tool.name)
    choice = body.tool_choice
    if choice is None or not hasattr(req, "tool_choice"):
        return
    if choice.type == "tool":
        if not choice.name:
            raise InvalidArgument("is required with type 'tool'", field="tool_choice.name")
        if choice.name not in names:
            raise InvalidArgument(f"names '{choice.name}', which is not in tools", field="tool_choice.name")
        req.tool_choice.CopyFrom(llm_pb2.ToolChoice(mode=llm_pb2.TOOL_CHOICE_MODE_FUNCTION,
                                                    function_name=choice.name))
    elif choice.type == "any":
        if not names:
            raise InvalidArgument("'any' needs at least one tool", field="tool_choice")
        req.tool_choice.mode = llm_pb2.TOOL_CHOICE_MODE_REQUIRED
    else:
        req.tool_choice.mode = TOOL_CHOICE_MODES[choice.type]
    if choice.disable_parallel_tool_use is not None and hasattr(req, "parallel_tool_calls"):
        req.parallel_tool_calls = not choice.disable_parallel_tool_use


def chat_request(body: MessagesRequest, model_id: str,
                 is_accepted_url: Callable[[str], bool]) -> llm_pb2.ChatCompleteRequest:
    req = llm_pb2.ChatCompleteRequest(model_id=model_id, messages=chat_messages(body, is_accepted_url),
                                      sampling=llm_pb2.Sampling(max_tokens=body.max_tokens,
                                                                stop=body.stop_sequences or []),
                                      user=(body.metadata.user_id or "") if body.metadata else "")
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(body, name)
        if value is not None:
            setattr(req.sampling, name, value)
    _tools(body, req)
    return req


def count_request(body: CountTokensRequest, model_id: str,
                  is_accepted_url: Callable[[str], bool]) -> llm_pb2.CountTokensRequest:
    req = llm_pb2.CountTokensRequest(model_id=model_id, messages=chat_messages(body, is_accepted_url))
    _tools(body, req)
    return req


# --- answers --------------------------------------------------------------------------------------

def _input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def stop_reason(finish: int, has_tool_use: bool, stop_sequence: str = "") -> str:
    # Anthropic reports tool_use whenever the turn ends in tool calls, forced ones included.
    if has_tool_use:
        return "tool_use"
    if stop_sequence and finish == llm_pb2.FINISH_REASON_STOP:
        return "stop_sequence"
    return STOP_REASONS.get(finish_name(finish), "end_turn")


def usage_json(usage: llm_pb2.TokenUsage) -> dict[str, int]:
    return {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}


def message_json(result: llm_pb2.ChatCompleteResult, *, model: str, message_id: str) -> dict[str, Any]:
    choice = result.choices[0] if result.choices else llm_pb2.ChatChoice()
    content: list[dict[str, Any]] = []
    if choice.message.content:
        content.append({"type": "text", "text": choice.message.content})
    for call in choice.message.tool_calls:
        content.append({"type": "tool_use", "id": call.id or new_id("toolu"), "name": call.function.name,
                        "input": _input(call.function.arguments)})
    reason = stop_reason(choice.finish_reason, bool(choice.message.tool_calls), choice.stop_sequence)
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": reason, "stop_sequence": choice.stop_sequence if reason == "stop_sequence" else None,
            "usage": usage_json(result.usage)}


class MessageStream(ResultReplay):
    """Folds LLM.ChatComplete events into Anthropic stream events as (event name, data) pairs."""

    def __init__(self, *, model: str, message_id: str) -> None:
        self.model = model
        self.id = message_id
        self.index = -1           # the open block's index
        self.open: str | None = None  # "text" | "tool_use"
        self.streamed = False
        self.tool_use = False
        self.finish = llm_pb2.FINISH_REASON_UNSPECIFIED
        self.stop_sequence = ""

    def start(self) -> list[tuple[str, dict[str, Any]]]:
        message = {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                   "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}
        return [("message_start", {"type": "message_start", "message": message})]

    def _close(self) -> list[tuple[str, dict[str, Any]]]:
        if self.open is None:
            return []
        self.open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def _open(self, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        out = self._close()
        self.index += 1
        self.open = block["type"]
        return out + [("content_block_start", {"type": "content_block_start", "index": self.index,
                                               "content_block": block})]

    def _delta(self, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return ("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta})

    def _text(self, text: str) -> list[tuple[str, dict[str, Any]]]:
        if not text:
            return []
        self.streamed = True
        out = [] if self.open == "text" else self._open({"type": "text", "text": ""})
        return out + [self._delta({"type": "text_delta", "text": text})]

    def _tool(self, call: llm_pb2.ToolCallDelta) -> list[tuple[str, dict[str, Any]]]:
        self.streamed = True
        self.tool_use = True
        out = []
        if call.id or call.name or self.open != "tool_use":
            out += self._open({"type": "tool_use", "id": call.id or new_id("toolu"), "name": call.name,
                               "input": {}})
        if call.arguments:
            out.append(self._delta({"type": "input_json_delta", "partial_json": call.arguments}))
        return out

    def on_chunk(self, chunk: llm_pb2.ChatCompleteChunk) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        for d in chunk.choices:
            out += self._text(d.content)
            for call in d.tool_calls:
                out += self._tool(call)
            if d.finish_reason:
                self.finish = d.finish_reason
                self.stop_sequence = d.stop_sequence
        return out

    def on_result(self, result: llm_pb2.ChatCompleteResult) -> list[tuple[str, dict[str, Any]]]:
        """Replays what a worker sent only in its result, closes the last block, then ends."""
        choice, replayed = self.replay_result(result)
        out: list[tuple[str, dict[str, Any]]] = [*replayed, *self._close()]
        stop = choice.stop_sequence or self.stop_sequence
        reason = stop_reason(choice.finish_reason or self.finish, self.tool_use or bool(choice.message.tool_calls), stop)
        out.append(("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": reason,
                                                "stop_sequence": stop if reason == "stop_sequence" else None},
                                      "usage": usage_json(result.usage)}))
        out.append(("message_stop", {"type": "message_stop"}))
        return out
