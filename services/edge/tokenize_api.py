"""Tokenizer routes: vLLM's `/tokenize` and `/detokenize` (prompt or chat, as the model reads it)
and xAI's `/v1/tokenize-text`. The tokenizer lives with the model in the llm worker: these call
LLM.Tokenize / LLM.Detokenize through the router, which places, bills and logs them like any call."""
from __future__ import annotations

import functools
from typing import Any, Optional

from fastapi import APIRouter, Request
from pydantic import Field

from genmesh.errors import InvalidArgument
from genmesh.services.edge import openai_convert
from genmesh.services.edge.auth import authorization
from genmesh.services.edge.openai_api import accepted_url, catalog, mesh
from genmesh.services.edge.openai_protocol import ChatCompletionRequest, ChatMessageParam, ToolParam, _Body
from genmesh.services.edge.responses import JSON
from genmesh.v1 import llm_pb2

router = APIRouter(tags=["tokenize"])
TEXT_TASKS = ("chat", "completion")


class TokenizeRequest(_Body):
    """POST /tokenize (vLLM): a prompt, or chat messages rendered with the model's template."""

    model: str = Field(min_length=1)
    prompt: Optional[str] = Field(default=None, min_length=1)
    messages: Optional[list[ChatMessageParam]] = Field(default=None, min_length=1)
    tools: Optional[list[ToolParam]] = None
    add_special_tokens: Optional[bool] = None
    add_generation_prompt: Optional[bool] = True
    return_token_strs: Optional[bool] = False


class DetokenizeRequest(_Body):
    """POST /detokenize (vLLM)."""

    model: str = Field(min_length=1)
    tokens: list[int] = Field(min_length=1, max_length=1_000_000)


class TokenizeTextRequest(_Body):
    """POST /v1/tokenize-text (xAI)."""

    model: str = Field(min_length=1)
    text: str = Field(min_length=1)
    user: Optional[str] = None


async def _tokenize(request: Request, model: str, msg: llm_pb2.TokenizeRequest, route: str) -> llm_pb2.TokenizeResponse:
    auth = authorization(request)
    found = await catalog(request).for_task(model, TEXT_TASKS, auth, route=route)
    msg.model_id = found.model.id
    client = mesh(request)
    return await client.unary(client.llm.Tokenize, msg, auth, timeout=60)


@router.post("/tokenize", summary="Tokenize a prompt or a chat (vLLM's shape)")
async def tokenize(body: TokenizeRequest, request: Request) -> JSON:
    msg = llm_pb2.TokenizeRequest(return_token_strs=bool(body.return_token_strs),
                                  add_generation_prompt=body.add_generation_prompt is not False)
    if (body.prompt is None) == (body.messages is None):
        raise InvalidArgument("give exactly one of prompt or messages", field="prompt")
    if body.prompt is not None:
        msg.prompt = body.prompt
        msg.add_special_tokens = body.add_special_tokens is not False  # vLLM's default for prompts
    else:
        # The same mapping a chat completion uses, so the ids are the prompt a chat would read.
        chat = openai_convert.chat_request(ChatCompletionRequest(model=body.model, messages=body.messages,
                                                                 tools=body.tools),
                                           body.model, accepted_url(request))
        msg.messages.extend(chat.messages)
        msg.tools.extend(chat.tools)
    resp = await _tokenize(request, body.model, msg, "/tokenize")
    return JSON({"count": len(resp.tokens), "max_model_len": resp.max_model_len, "tokens": list(resp.tokens),
                 "token_strs": list(resp.token_strs) if body.return_token_strs else None})


@router.post("/detokenize", summary="Turn token ids back into text (vLLM's shape)")
async def detokenize(body: DetokenizeRequest, request: Request) -> JSON:
    auth = authorization(request)
    found = await catalog(request).for_task(body.model, TEXT_TASKS, auth, route="/detokenize")
    client = mesh(request)
    resp = await client.unary(client.llm.Detokenize, llm_pb2.DetokenizeRequest(
        model_id=found.model.id, tokens=body.tokens), auth, timeout=60)
    return JSON({"prompt": resp.prompt})


@functools.cache
def _byte_decoder() -> dict[str, int]:
    # Byte-level BPE spells bytes as printable characters; this is transformers' own table.
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def token_bytes(token: str) -> bytes:
    """The bytes a tokenizer's token string stands for (byte-level BPE or SentencePiece)."""
    if token.startswith("<0x") and token.endswith(">") and len(token) == 6:  # SentencePiece byte fallback
        return bytes([int(token[3:5], 16)])
    table = _byte_decoder()
    if token and all(c in table for c in token):
        return bytes(table[c] for c in token)
    return token.replace("\u2581", " ").encode()


@router.post("/v1/tokenize-text", summary="Tokenize text (xAI's shape)")
async def tokenize_text(body: TokenizeTextRequest, request: Request) -> JSON:
    msg = llm_pb2.TokenizeRequest(prompt=body.text, add_special_tokens=False, return_token_strs=True)
    resp = await _tokenize(request, body.model, msg, "/v1/tokenize-text")
    out: list[dict[str, Any]] = []
    for token_id, token in zip(resp.tokens, resp.token_strs, strict=True):
        raw = token_bytes(token)
        out.append({"token_id": token_id, "string_token": raw.decode("utf-8", errors="replace"),
                    "token_bytes": list(raw)})
    return JSON({"token_ids": out})

