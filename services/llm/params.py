"""The llm requests' rules: the one place a chat, completion, embedding or token count is checked.

Torch-free: the router runs `validate_request` (through `genmesh.tasks`) before it queues or
proxies anything; the edge only maps its wire format onto the proto, and the worker trusts what
the router sends (mTLS makes the router its only caller) and maps it straight to its engine.
What only a loaded model can know (the context budget, the batch size, whether a grammar
compiles for its tokenizer) stays with the engine. Ranges come from genmesh/limits.py.

Errors name the field as the caller spelled it: sampling fields by their own names
(`temperature`, not `sampling.temperature`), since every wire format sends them flat.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import jsonschema
from google.protobuf.message import Message

from genmesh.errors import InvalidArgument
from genmesh.jsonpb import enum_short_name, struct_to_json
from genmesh.limits import (MAX_EMBED_INPUTS, MAX_FUNCTION_NAME, MAX_N, MAX_STOP_SEQUENCES, MAX_STOP_TOKEN_IDS,
                            MAX_TOP_LOGPROBS, SAMPLING_RANGES)
from genmesh.v1 import llm_pb2

ROLES = tuple(enum_short_name(llm_pb2.Role, n) for n in llm_pb2.Role.values() if n)
PART_TYPES = ("text", "image_url")
RESPONSE_FORMATS = ("", "text", "json_object", "json_schema")
FUNCTION_NAME = re.compile(rf"^[A-Za-z0-9_.-]{{1,{MAX_FUNCTION_NAME}}}$")

def validate_request(request: Message) -> None:
    """Raise `InvalidArgument(field=...)` for the first rule `request` breaks."""
    if isinstance(request, llm_pb2.ChatCompleteRequest):
        validate_chat(request)
    elif isinstance(request, llm_pb2.CompleteRequest):
        validate_complete(request)
    elif isinstance(request, llm_pb2.EmbedRequest):
        validate_embed(request)
    elif isinstance(request, llm_pb2.CountTokensRequest):
        validate_count_tokens(request)
    elif isinstance(request, llm_pb2.TokenizeRequest):
        validate_tokenize(request)


def validate_chat(request: llm_pb2.ChatCompleteRequest) -> None:
    _messages(request.messages)
    _sampling(request.sampling)
    _response_format(request.response_format)
    _tools(request)


def validate_complete(request: llm_pb2.CompleteRequest) -> None:
    if not request.prompt:
        raise InvalidArgument("must not be empty", field="prompt")
    _sampling(request.sampling)
    _response_format(request.response_format)


def validate_embed(request: llm_pb2.EmbedRequest) -> None:
    if request.token_input:
        _token_input(request)
        return
    if not request.input:
        raise InvalidArgument("must not be empty", field="input")
    if len(request.input) > MAX_EMBED_INPUTS:
        raise InvalidArgument(f"at most {MAX_EMBED_INPUTS} inputs, got {len(request.input)}",
                              field="input")
    for i, text in enumerate(request.input):
        if not text:
            raise InvalidArgument("must not be an empty string", field=f"input[{i}]")
    if request.HasField("dimensions") and request.dimensions < 1:
        raise InvalidArgument(f"must be >= 1, got {request.dimensions}", field="dimensions")


def _token_input(request: llm_pb2.EmbedRequest) -> None:
    if request.input:
        raise InvalidArgument("give text input or token ids, not both", field="input")
    if len(request.token_input) > MAX_EMBED_INPUTS:
        raise InvalidArgument(f"at most {MAX_EMBED_INPUTS} inputs, got {len(request.token_input)}", field="input")
    for i, ids in enumerate(request.token_input):
        if not ids.ids:
            raise InvalidArgument("must not be an empty token list", field=f"input[{i}]")
    if request.HasField("dimensions") and request.dimensions < 1:
        raise InvalidArgument(f"must be >= 1, got {request.dimensions}", field="dimensions")


def validate_count_tokens(request: llm_pb2.CountTokensRequest) -> None:
    if bool(request.messages) == bool(request.prompt):
        raise InvalidArgument("give exactly one of messages or prompt", field="messages")
    if request.messages:
        _messages(request.messages)
    for i, tool in enumerate(request.tools):
        _tool(tool, i)


def validate_tokenize(request: llm_pb2.TokenizeRequest) -> None:
    """A chat to tokenize is rendered like one to answer, so its messages and tools follow the same rules."""
    if bool(request.messages) == bool(request.prompt):
        raise InvalidArgument("give exactly one of prompt or messages", field="prompt")
    if request.messages:
        _messages(request.messages)
    for i, tool in enumerate(request.tools):
        _tool(tool, i)


# --- pieces ---------------------------------------------------------------------------------------

def _messages(messages: Any) -> None:
    if not messages:
        raise InvalidArgument("must be a non-empty list of messages", field="messages")
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not enum_short_name(llm_pb2.Role, m.role):
            raise InvalidArgument(f"must be one of {', '.join(ROLES)}, got {m.role}", field=f"{where}.role")
        for j, part in enumerate(m.parts):
            if part.type not in PART_TYPES:
                raise InvalidArgument(f"must be text or image_url, got {part.type!r}",
                                      field=f"{where}.parts[{j}].type")
            if part.type == "image_url":
                if m.role != llm_pb2.ROLE_USER:
                    raise InvalidArgument("images are only allowed in user messages, not "
                                          f"{enum_short_name(llm_pb2.Role, m.role)}",
                                          field=f"{where}.parts[{j}]")
                if not part.image_url:
                    raise InvalidArgument("is required", field=f"{where}.parts[{j}].image_url")
        if m.tool_calls and m.role != llm_pb2.ROLE_ASSISTANT:
            raise InvalidArgument("only assistant messages carry tool_calls", field=f"{where}.tool_calls")
        for j, call in enumerate(m.tool_calls):
            if not call.function.name:
                raise InvalidArgument("is required", field=f"{where}.tool_calls[{j}].function.name")
        if m.role == llm_pb2.ROLE_TOOL and not m.tool_call_id:
            raise InvalidArgument("is required on tool messages", field=f"{where}.tool_call_id")


def _sampling(request: llm_pb2.Sampling) -> None:
    for name, allowed in SAMPLING_RANGES.items():
        if request.HasField(name) and getattr(request, name) not in allowed:
            raise InvalidArgument(f"must be in {allowed}, got {getattr(request, name):g}", field=name)
    if request.HasField("top_k") and request.top_k < 0:
        raise InvalidArgument(f"must be >= 0, got {request.top_k}", field="top_k")
    if request.HasField("max_tokens") and request.max_tokens < 1:
        raise InvalidArgument(f"must be >= 1, got {request.max_tokens}", field="max_tokens")
    if request.HasField("min_tokens"):
        if request.min_tokens < 0:
            raise InvalidArgument(f"must be >= 0, got {request.min_tokens}", field="min_tokens")
        if request.HasField("max_tokens") and request.min_tokens > request.max_tokens:
            raise InvalidArgument(f"must be at most max_tokens ({request.max_tokens}), got {request.min_tokens}",
                                  field="min_tokens")
    if len(request.stop_token_ids) > MAX_STOP_TOKEN_IDS:
        raise InvalidArgument(f"at most {MAX_STOP_TOKEN_IDS} token ids, got {len(request.stop_token_ids)}",
                              field="stop_token_ids")
    for i, token in enumerate(request.stop_token_ids):
        if token < 0:
            raise InvalidArgument(f"must be >= 0, got {token}", field=f"stop_token_ids[{i}]")
    if request.HasField("n") and not 1 <= request.n <= MAX_N:
        raise InvalidArgument(f"must be in [1, {MAX_N}], got {request.n}", field="n")
    if not 0 <= request.top_logprobs <= MAX_TOP_LOGPROBS:
        raise InvalidArgument(f"must be in [0, {MAX_TOP_LOGPROBS}], got {request.top_logprobs}",
                              field="top_logprobs")
    if request.top_logprobs and not request.logprobs:
        raise InvalidArgument("requires logprobs to be true", field="top_logprobs")
    if len(request.stop) > MAX_STOP_SEQUENCES:
        raise InvalidArgument(f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(request.stop)}",
                              field="stop")
    for i, stop in enumerate(request.stop):
        if not stop:
            raise InvalidArgument("must be a non-empty string", field=f"stop[{i}]")



def _response_format(fmt: llm_pb2.ResponseFormat) -> None:
    if fmt.type not in RESPONSE_FORMATS:
        raise InvalidArgument(f"must be text, json_object or json_schema, got {fmt.type!r}",
                              field="response_format.type")
    if fmt.type == "json_schema" and not fmt.HasField("json_schema"):
        raise InvalidArgument("is required with type json_schema", field="response_format.json_schema")
    if fmt.HasField("json_schema"):
        _schema(fmt.json_schema, "response_format.json_schema")


def _tools(request: llm_pb2.ChatCompleteRequest) -> None:
    names = []
    for i, tool in enumerate(request.tools):
        _tool(tool, i)
        names.append(tool.function.name)
    for name in names:
        if names.count(name) > 1:
            raise InvalidArgument(f"function name {name!r} appears more than once", field="tools")
    choice = request.tool_choice
    if choice.mode not in llm_pb2.ToolChoiceMode.values():
        raise InvalidArgument(f"unknown mode {choice.mode}", field="tool_choice")
    mode = enum_short_name(llm_pb2.ToolChoiceMode, choice.mode)
    if mode in ("required", "function") and not names:
        raise InvalidArgument(f"is {mode!r} but no tools were given", field="tool_choice")
    if mode == "function" and choice.function_name not in names:
        raise InvalidArgument(f"names {choice.function_name!r}, which is not in tools",
                              field="tool_choice.function.name")


def _tool(tool: llm_pb2.Tool, index: int) -> None:
    if tool.type not in ("", "function"):
        raise InvalidArgument(f"must be function, got {tool.type!r}", field=f"tools[{index}].type")
    if not FUNCTION_NAME.match(tool.function.name):
        raise InvalidArgument(f"must match {FUNCTION_NAME.pattern}, got {tool.function.name!r}",
                              field=f"tools[{index}].function.name")
    if tool.function.HasField("parameters"):
        schema = _schema(tool.function.parameters, f"tools[{index}].function.parameters")
        if schema.get("type", "object") != "object":
            raise InvalidArgument('must be an object schema ({"type": "object", ...})',
                                  field=f"tools[{index}].function.parameters")


def _schema(struct: Any, field: str) -> dict[str, Any]:
    return check_schema(struct_to_json(struct), field)


def check_schema(schema: Any, field: str) -> dict[str, Any]:
    """A JSON schema its validator accepts, so a bad one fails at submit (INVALID_ARGUMENT), not
    mid-stream. Defined here, not beside the grammars, so the router needs no torch to use it."""
    if not isinstance(schema, Mapping):
        raise InvalidArgument("must be a JSON schema object", field=field)
    schema = dict(schema)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidArgument(f"is not a valid JSON schema: {exc.message}", field=field) from None
    return schema
