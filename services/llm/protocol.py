"""The text engine's data shapes: what a request carries in and what a stream of deltas carries out.

Plain frozen dataclasses, independent of gRPC and HTTP: the worker maps `genmesh.v1.llm` messages
to these and back, the edge maps OpenAI JSON. `CompletionBuilder` folds a delta stream into the
non-streamed result, so streamed and non-streamed answers are one code path.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from .sampling import SamplingParams

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls"]
ToolChoiceMode = Literal["none", "auto", "required", "function"]


def new_request_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def new_tool_call_id() -> str:
    return "call_" + secrets.token_hex(12)


@dataclass(frozen=True)
class FunctionCall:
    name: str
    arguments: str  # a JSON object as text, as OpenAI sends and returns it


@dataclass(frozen=True)
class ToolCall:
    id: str
    function: FunctionCall
    type: str = "function"


@dataclass(frozen=True)
class Message:
    """One chat turn. `content` is None only for an assistant turn that made tool calls."""

    role: Role
    content: str | None = None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # on role "tool": the call this is the result of


@dataclass(frozen=True)
class FunctionTool:
    """A callable function the model may use; `parameters` is the JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool = False


@dataclass(frozen=True)
class ToolChoice:
    mode: ToolChoiceMode = "auto"
    function_name: str | None = None  # with mode "function"


@dataclass(frozen=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: Mapping[str, Any] | None = None  # the JSON schema itself, with type "json_schema"
    name: str = ""
    strict: bool = False


@dataclass(frozen=True)
class GenerationRequest:
    """A chat (`messages`) or a plain completion (`prompt`, text or token ids): exactly one is set."""

    messages: tuple[Message, ...] | None = None
    prompt: str | tuple[int, ...] | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    response_format: ResponseFormat | None = None
    tools: tuple[FunctionTool, ...] = ()
    tool_choice: ToolChoice | None = None  # None: "auto" with tools, "none" without
    # With a forced tool_choice ("required"), may the model make several calls? None means one:
    # under a forcing grammar a small model rarely chooses to stop, and would repeat its call.
    parallel_tool_calls: bool | None = None
    request_id: str = field(default_factory=new_request_id)


@dataclass(frozen=True)
class TopLogprob:
    token: str
    token_id: int
    logprob: float
    bytes: tuple[int, ...]


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    token_id: int
    logprob: float
    bytes: tuple[int, ...]
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class ToolCallDelta:
    """A streamed piece of a tool call: the first carries id, type and name, later ones arguments."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None
    type: str | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Delta:
    """What one choice produced in one engine step.

    `text` is content released at this step: it can lag the tokens (a partial UTF-8 character or
    a possible stop string is held back) and never contains a stop string or tool-call markup.
    `finish_reason` is set exactly once per choice, on its last delta; the stream's very last
    delta also carries `usage` for the whole request (all choices).
    """

    index: int
    text: str = ""
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    prompt_tokens: int | None = None  # on the request's first delta: what a cut-short stream is billed
    stop_sequence: str | None = None  # with finish_reason "stop": the stop string that ended the choice


@dataclass(frozen=True)
class Choice:
    index: int
    text: str
    finish_reason: FinishReason
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    token_ids: tuple[int, ...] = ()
    stop_sequence: str | None = None


@dataclass(frozen=True)
class Completion:
    request_id: str
    model: str
    choices: tuple[Choice, ...]
    usage: Usage


class CompletionBuilder:
    """Folds a request's deltas into its `Completion` (the non-streamed answer)."""

    def __init__(self, request_id: str, model: str, n: int) -> None:
        self.request_id = request_id
        self.model = model
        self._text: list[list[str]] = [[] for _ in range(n)]
        self._tokens: list[list[int]] = [[] for _ in range(n)]
        self._logprobs: list[list[TokenLogprob]] = [[] for _ in range(n)]
        self._calls: list[dict[int, dict[str, Any]]] = [{} for _ in range(n)]
        self._finish: list[FinishReason | None] = [None] * n
        self._stop: list[str | None] = [None] * n
        self._usage: Usage | None = None

    def add(self, delta: Delta) -> None:
        i = delta.index
        self._text[i].append(delta.text)
        self._tokens[i].extend(delta.token_ids)
        self._logprobs[i].extend(delta.logprobs)
        for call in delta.tool_calls:
            entry = self._calls[i].setdefault(call.index, {"id": "", "name": "", "arguments": []})
            entry["id"] = call.id or entry["id"]
            entry["name"] = call.name or entry["name"]
            entry["arguments"].append(call.arguments)
        if delta.finish_reason is not None:
            self._finish[i] = delta.finish_reason
            self._stop[i] = delta.stop_sequence
        if delta.usage is not None:
            self._usage = delta.usage

    def result(self) -> Completion:
        if self._usage is None or any(reason is None for reason in self._finish):
            raise RuntimeError("the delta stream ended before every choice finished")
        choices = []
        for i, reason in enumerate(self._finish):
            calls = tuple(ToolCall(id=c["id"], function=FunctionCall(c["name"], "".join(c["arguments"])))
                          for _, c in sorted(self._calls[i].items()))
            choices.append(Choice(index=i, text="".join(self._text[i]), finish_reason=reason,  # type: ignore[arg-type]
                                  tool_calls=calls, logprobs=tuple(self._logprobs[i]),
                                  token_ids=tuple(self._tokens[i]), stop_sequence=self._stop[i]))
        return Completion(request_id=self.request_id, model=self.model, choices=tuple(choices), usage=self._usage)
