"""Chat messages -> prompt tokens through the tokenizer's chat template, and the context budget.

Owns rendering with tools, token counting, and the check that prompt + max_tokens fits the
model's context. The worker gets its `Message`s from the proto (convert.py), validated by the
router (params.py); `parse_messages` (OpenAI dicts in) serves callers of the engine itself.
"""
from __future__ import annotations

import json
import threading
from typing import Any, Mapping, Sequence

from transformers import PreTrainedTokenizerBase

from genmesh.errors import InvalidArgument

from .protocol import FunctionCall, FunctionTool, Message, ToolCall

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def parse_messages(raw: Sequence[Mapping[str, Any]]) -> tuple[Message, ...]:
    """OpenAI chat messages (dicts) -> validated `Message`s; errors name e.g. `messages[2].content`."""
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence) or not raw:
        raise InvalidArgument("must be a non-empty list of messages", field="messages")
    return tuple(_parse_message(item, f"messages[{i}]") for i, item in enumerate(raw))


def _parse_message(item: Any, where: str) -> Message:
    if not isinstance(item, Mapping):
        raise InvalidArgument("must be an object", field=where)
    role = _ROLES.get(item.get("role"))  # type: ignore[arg-type]
    if role is None:
        raise InvalidArgument(f"must be one of {sorted(_ROLES)}, got {item.get('role')!r}", field=f"{where}.role")
    content = _content(item.get("content"), f"{where}.content")
    calls = tuple(_tool_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(item.get("tool_calls") or ()))
    if calls and role != "assistant":
        raise InvalidArgument("only assistant messages carry tool_calls", field=f"{where}.tool_calls")
    if content is None and not calls:
        raise InvalidArgument("is required", field=f"{where}.content")
    tool_call_id = item.get("tool_call_id")
    if role == "tool" and not isinstance(tool_call_id, str):
        raise InvalidArgument("is required on tool messages", field=f"{where}.tool_call_id")
    name = item.get("name")
    return Message(role=role, content=content, name=name if isinstance(name, str) else None,  # type: ignore[arg-type]
                   tool_calls=calls, tool_call_id=tool_call_id if role == "tool" else None)


def _content(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        texts = []
        for j, part in enumerate(value):
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidArgument("this model takes text parts only ({\"type\": \"text\", \"text\": ...}); "
                                      "send images to a vision model", field=f"{where}[{j}]")
            texts.append(part["text"])
        return "\n".join(texts)
    raise InvalidArgument("must be a string or a list of text parts", field=where)


def _tool_call(value: Any, where: str) -> ToolCall:
    if not isinstance(value, Mapping):
        raise InvalidArgument("must be an object", field=where)
    function = value.get("function")
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise InvalidArgument("needs function.name", field=f"{where}.function")
    arguments = function.get("arguments", "{}")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return ToolCall(id=str(value.get("id") or ""), function=FunctionCall(function["name"], arguments))


def template_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """`Message`s in the dict shape chat templates read."""
    out: list[dict[str, Any]] = []
    for m in messages:
        entry: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.name:
            entry["name"] = m.name
        if m.tool_calls:
            entry["tool_calls"] = [{"id": c.id, "type": c.type,
                                    "function": {"name": c.function.name, "arguments": c.function.arguments}}
                                   for c in m.tool_calls]
        if m.tool_call_id is not None:
            entry["tool_call_id"] = m.tool_call_id
        out.append(entry)
    return out


def template_tools(tools: Sequence[FunctionTool]) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": dict(t.parameters)}} for t in tools]


class ChatFormatter:
    """Renders prompts for one model and enforces its context length. Thread-safe."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_context: int) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template")
        self._tokenizer = tokenizer
        self.max_context = max_context
        # A fast tokenizer's Rust core is not re-entrant (truncation/padding state): one caller at a time.
        self._lock = threading.Lock()

    def render(self, messages: Sequence[Message], tools: Sequence[FunctionTool] = ()) -> list[int]:
        """The prompt token ids: the template with tools and the assistant generation prompt.

        Control tokens a user writes (`<|im_end|>`) stay text, never a turn boundary.
        """
        with self._lock:
            encoded = self._tokenizer.apply_chat_template(
                template_messages(messages), tools=template_tools(tools), add_generation_prompt=True,
                tokenize=True, sanitize_control_tokens=True)
        ids = encoded["input_ids"] if isinstance(encoded, Mapping) or hasattr(encoded, "keys") else encoded
        return list(ids)

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        """A plain-completion prompt: text through the tokenizer, or token ids checked against the vocab."""
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidArgument("must not be empty", field="prompt")
            with self._lock:
                return list(self._tokenizer.encode(prompt, add_special_tokens=True))
        ids = list(prompt)
        vocab = len(self._tokenizer)
        if not ids or any(isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab for t in ids):
            raise InvalidArgument(f"must be a non-empty string or token ids in [0, {vocab})", field="prompt")
        return ids

    def count_tokens(self, messages: Sequence[Message] | None = None, prompt: str | Sequence[int] | None = None,
                     tools: Sequence[FunctionTool] = ()) -> int:
        if (messages is None) == (prompt is None):
            raise InvalidArgument("give exactly one of messages or prompt", field="messages")
        if messages is not None:
            return len(self.render(messages, tools))
        return len(self.encode(prompt))  # type: ignore[arg-type]

    def budget(self, prompt_tokens: int, max_tokens: int | None, *, prompt_field: str = "messages") -> int:
        """The completion budget: `max_tokens`, or all the room left; too big a request is rejected."""
        room = self.max_context - prompt_tokens
        if room < 1:
            raise InvalidArgument(f"the prompt is {prompt_tokens} tokens, but this model's context is "
                                  f"{self.max_context} tokens (prompt + completion)", field=prompt_field)
        if max_tokens is None:
            return room
        if max_tokens > room:
            raise InvalidArgument(f"is {max_tokens}, but the prompt uses {prompt_tokens} of this model's "
                                  f"{self.max_context} context tokens, leaving at most {room}",
                                  field="max_tokens")
        return max_tokens
