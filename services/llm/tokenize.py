"""LLM.Tokenize and LLM.Detokenize on a loaded text engine: the model's own tokenizer, as vLLM's
/tokenize and /detokenize use it. Chats render through the engine's chat template (tools
included), so the ids are exactly the prompt the model would read. Blocking: run in a thread."""
from __future__ import annotations

import threading

from genmesh.errors import InvalidArgument
from genmesh.v1 import llm_pb2

from . import convert
from .engine import LLMEngine
from .protocol import GenerationRequest

# Fast tokenizers are not re-entrant; the engine's own calls hold its chat lock, these hold this one.
_LOCK = threading.Lock()


def tokenize(engine: LLMEngine, request: llm_pb2.TokenizeRequest) -> llm_pb2.TokenizeResponse:
    if bool(request.messages) == bool(request.prompt):
        raise InvalidArgument("give exactly one of prompt or messages", field="prompt")
    if request.messages:
        ids = engine.prompt_ids(GenerationRequest(messages=convert.chat_messages(request.messages),
                                                  tools=convert.tools(request.tools)))
    elif request.add_special_tokens:
        ids = engine.prompt_ids(GenerationRequest(prompt=request.prompt))
    else:
        with _LOCK:
            ids = list(engine.tokenizer.encode(request.prompt, add_special_tokens=False))
    out = llm_pb2.TokenizeResponse(tokens=ids, max_model_len=engine.max_context)
    if request.return_token_strs:
        with _LOCK:
            out.token_strs.extend(engine.tokenizer.convert_ids_to_tokens(ids))
    return out


def detokenize(engine: LLMEngine, request: llm_pb2.DetokenizeRequest) -> llm_pb2.DetokenizeResponse:
    vocab = len(engine.tokenizer)
    for i, token in enumerate(request.tokens):
        if not 0 <= token < vocab:
            raise InvalidArgument(f"token id {token} is outside this model's vocabulary [0, {vocab})",
                                  field=f"tokens[{i}]")
    with _LOCK:
        return llm_pb2.DetokenizeResponse(prompt=engine.tokenizer.decode(list(request.tokens)))
