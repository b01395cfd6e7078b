"""Tool calling: the effective tool_choice, the grammar that forces calls, and the parser
that turns generated text into OpenAI-style tool-call deltas.

Calls use the Hermes format the chat template renders (`<tool_call>\\n{"name": ..., "arguments":
{...}}\\n</tool_call>`), so a model sees its earlier calls exactly as it is asked to write new
ones. With tool_choice "required" or a named function the output is constrained by llguidance to
that format with arguments matching the function's parameter schema; with "auto" the model writes
freely and calls are parsed out of its text.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable, Sequence

from .protocol import FunctionCall, FunctionTool, ToolCall, ToolCallDelta, ToolChoice, new_tool_call_id

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
# The JSON layout the template renders; forced calls use it too, so history and output agree.
_CALL_FORMAT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')


def resolve_tool_choice(tools: Sequence[FunctionTool], choice: ToolChoice | None) -> ToolChoice:
    """The effective choice: default "auto" with tools, "none" without. The router has checked
    it against the tools (llm/params.py)."""
    if choice is None:
        return ToolChoice(mode="auto" if tools else "none")
    return choice


def tool_call_grammar(tools: Sequence[FunctionTool], choice: ToolChoice, *, parallel: bool = False) -> str | None:
    """The compiled llguidance grammar of `tool_call_lark`, or None when the model may answer in text."""
    from llguidance import LLMatcher

    lark = tool_call_lark(tools, choice, parallel=parallel)
    return LLMatcher.grammar_from_lark(lark) if lark is not None else None


def tool_call_lark(tools: Sequence[FunctionTool], choice: ToolChoice, *, parallel: bool = False) -> str | None:
    """A Lark grammar (llguidance's dialect, as vLLM's guidance backend takes it) forcing tool calls
    (several, newline-separated, if `parallel` and "required"), or None when the model may answer in text."""
    if choice.mode == "function":
        chosen = [t for t in tools if t.name == choice.function_name]
        start = "start: call"
    elif choice.mode == "required":
        chosen = list(tools)
        start = 'start: call ("\\n" call)*' if parallel else "start: call"
    else:
        return None
    bodies = [{"type": "object", "properties": {"name": {"const": t.name}, "arguments": dict(t.parameters)},
               "required": ["name", "arguments"], "additionalProperties": False} for t in chosen]
    schema: dict[str, Any] = bodies[0] if len(bodies) == 1 else {"anyOf": bodies}
    schema = {"x-guidance": _CALL_FORMAT, **schema}
    return "\n".join([start, f'call: "{OPEN}\\n" body "\\n{CLOSE}"', f"body: %json {json.dumps(schema)}"])


class ToolCallParser:
    """Splits one choice's released text into content and tool-call deltas, as it streams.

    Outside a call, text is content (a possible start of `<tool_call>` and trailing whitespace are
    held back). Inside, the call's id, type and name go out as soon as the name is complete, then
    the arguments JSON in fragments as it is generated; the closing brace and tag are swallowed.
    With `parallel` False (the request's parallel_tool_calls), the first call is the answer: what
    the model writes after it closes is dropped, since an auto-mode model may write several.
    """

    def __init__(self, new_id: Callable[[], str] = new_tool_call_id, *, parallel: bool = True) -> None:
        self._new_id = new_id
        self._parallel = parallel
        self._buffer = ""
        self._state = "text"  # text | head | args | tail
        self._calls: list[dict[str, Any]] = []
        self._scan = _JsonScanner()
        self._content_started = False

    @property
    def calls(self) -> tuple[ToolCall, ...]:
        return tuple(ToolCall(id=c["id"], function=FunctionCall(c["name"], "".join(c["arguments"])))
                     for c in self._calls)

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        self._buffer += text
        content: list[str] = []
        deltas: list[ToolCallDelta] = []
        while self._step(content, deltas):
            pass
        return "".join(content), deltas

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        content, deltas = self.feed("")
        rest, self._buffer = self._buffer, ""
        if self._state == "text":
            if rest.strip() or (not self._calls and self._content_started):
                content += rest
        elif self._state == "head":
            # The model opened a call but never produced a recognisable header: try the whole block.
            parsed = _parse_call(rest)
            if parsed is None:
                content += OPEN + rest
            else:
                deltas.extend(self._start_call(parsed[0]))
                deltas.append(ToolCallDelta(index=len(self._calls) - 1, arguments=parsed[1]))
                self._calls[-1]["arguments"].append(parsed[1])
        elif self._state == "args" and rest:
            deltas.append(ToolCallDelta(index=len(self._calls) - 1, arguments=rest))
            self._calls[-1]["arguments"].append(rest)
        self._state = "text"
        return content, deltas

    def _step(self, content: list[str], deltas: list[ToolCallDelta]) -> bool:
        buf = self._buffer
        if self._state == "text" and self._calls and not self._parallel:
            self._buffer = ""
            return False
        if self._state == "text":
            at = buf.find(OPEN)
            if at >= 0:
                if buf[:at].strip() or not self._calls:  # whitespace between two calls is layout
                    self._emit_content(buf[:at], content)
                self._buffer, self._state = buf[at + len(OPEN):], "head"
                return True
            hold = _hold_back(buf)
            if self._emit_content(buf[:len(buf) - hold], content):
                self._buffer = buf[len(buf) - hold:]
            return False
        if self._state == "head":
            match = _HEADER.match(buf)
            if match is None:
                close = buf.find(CLOSE)
                if close >= 0:  # a complete block in another layout (e.g. arguments first)
                    parsed = _parse_call(buf[:close])
                    if parsed is not None:
                        deltas.extend(self._start_call(parsed[0]))
                        deltas.append(ToolCallDelta(index=len(self._calls) - 1, arguments=parsed[1]))
                        self._calls[-1]["arguments"].append(parsed[1])
                    else:
                        content.append(OPEN + buf[:close + len(CLOSE)])
                    self._buffer, self._state = buf[close + len(CLOSE):], "text"
                    return True
                return False
            name = json.loads(f'"{match.group(1)}"')
            deltas.extend(self._start_call(name))
            self._buffer, self._state = buf[match.end():], "args"
            self._scan = _JsonScanner()
            return True
        if self._state == "args":
            if not self._scan.started:
                buf = self._buffer = buf.lstrip()  # layout between `"arguments":` and the value
            end = self._scan.feed(buf)
            piece = buf if end is None else buf[:end]
            if piece:
                deltas.append(ToolCallDelta(index=len(self._calls) - 1, arguments=piece))
                self._calls[-1]["arguments"].append(piece)
            if end is None:
                self._buffer = ""
                return False
            self._buffer, self._state = buf[end:], "tail"
            return True
        # tail: the rest of the wrapper ("}\n</tool_call>"), up to and including the closing tag
        close = buf.find(CLOSE)
        if close < 0:
            return False
        self._buffer, self._state = buf[close + len(CLOSE):].lstrip("\n"), "text"
        return True

    def _start_call(self, name: str) -> list[ToolCallDelta]:
        call_id = self._new_id()
        self._calls.append({"id": call_id, "name": name, "arguments": []})
        return [ToolCallDelta(index=len(self._calls) - 1, id=call_id, type="function", name=name, arguments="")]

    def _emit_content(self, text: str, content: list[str]) -> bool:
        """Release `text` as content unless it is leading whitespace (layout before a call)."""
        if not self._content_started and not text.strip():
            return False
        self._content_started = True
        content.append(text)
        return True


def _hold_back(text: str) -> int:
    """How much of the end of `text` to keep: a partial `<tool_call>` and the whitespace before it."""
    hold = 0
    for k in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if text.endswith(OPEN[:k]):
            hold = k
            break
    stripped = text[:len(text) - hold]
    return hold + (len(stripped) - len(stripped.rstrip()))


def _parse_call(block: str) -> tuple[str, str] | None:
    block = block.strip()
    if block.endswith(CLOSE):
        block = block[:-len(CLOSE)].strip()
    try:
        value = json.loads(block)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    return value["name"], arguments if isinstance(arguments, str) else json.dumps(arguments)


class _JsonScanner:
    """Finds where one JSON value ends in a stream of text (string- and escape-aware)."""

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self.started = False
        self._scalar = False

    def feed(self, text: str) -> int | None:
        """Index just past the end of the value within `text`, or None if it continues."""
        for i, ch in enumerate(text):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
                    if self._depth == 0:
                        return i + 1
                continue
            if not self.started:
                if ch.isspace():
                    continue
                self.started = True
                if ch not in "{[\"":
                    self._scalar = True
            if self._scalar:
                if ch in ",}]" or ch.isspace():
                    return i
                continue
            if ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return i + 1
        return None
