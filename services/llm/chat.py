"""Chat messages -> prompt tokens through the tokenizer's chat template, and the context budget.

Owns rendering with tools, token counting, and the check that prompt + max_tokens fits the
model's context. The worker gets its `Message`s from the proto (convert.py), validated by the
router (params.py); callers of the engine itself build `Message`s directly.
"""
from __future__ import annotations

import threading
from typing import Any, Mapping, Sequence

from transformers import PreTrainedTokenizerBase

from genmesh.errors import InvalidArgument

from .protocol import FunctionTool, Message

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
