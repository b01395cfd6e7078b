"""Vision-language chat: OpenAI-format messages with image parts in, streamed text out.

Owns message validation and conversion, sampling with a per-request seeded generator, stop
sequences and cancellation. Any image-text-to-text checkpoint whose processor has a chat template
loads here (LLaVA and kin); `genmesh/models/vision.py` builds a tiny one for offline use.
"""
from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
from transformers import (AutoModelForImageTextToText, AutoProcessor, GenerationConfig, LogitsProcessor,
                          LogitsProcessorList, StoppingCriteria, StoppingCriteriaList)

from genmesh.errors import InvalidArgument, ModelUnavailable
from genmesh.limits import MAX_STOP_SEQUENCES, SAMPLING_RANGES

from .images import ImageLimits, UrlResolver, decode_image

FinishReason = Literal["stop", "length", "cancelled"]
Message = Mapping[str, Any]

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class VisionResult:
    text: str
    finish_reason: FinishReason  # "cancelled" when `cancel` was set; the text is what was produced by then
    prompt_tokens: int  # includes the image placeholder tokens
    completion_tokens: int


@dataclass(frozen=True)
class PreparedPrompt:
    """Model inputs for one conversation; `prompt_tokens` is known before any compute."""

    inputs: Mapping[str, torch.Tensor]
    prompt_tokens: int
    image_count: int


class VisionChatModel:
    """A loaded image-text-to-text model and its processor; `generate` is safe to call from threads."""

    def __init__(self, path: Path | str, *, device: str = "cpu", dtype: torch.dtype | None = None,
                 max_images: int = 8, image_limits: ImageLimits = ImageLimits(),
                 resolve_url: UrlResolver | None = None) -> None:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ModelUnavailable(f"no vision-language model at {path}")
        self.path = path
        self.device = torch.device(device)
        self.max_images = max_images
        self.image_limits = image_limits
        self._resolve_url = resolve_url
        self._processor = AutoProcessor.from_pretrained(path)
        if getattr(self._processor, "chat_template", None) is None:
            raise ModelUnavailable(f"the processor at {path} has no chat template")
        self._model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype).to(self.device).eval()
        self._tokenizer = self._processor.tokenizer
        # The processor's tokenizer is a fast tokenizer, which is not re-entrant across threads.
        self._lock = threading.Lock()
        text_config = self._model.config.get_text_config(decoder=True)
        self.context_length: int = int(text_config.max_position_embeddings)
        self._eos_ids = _eos_ids(self._model.generation_config.eos_token_id, self._tokenizer.eos_token_id)
        self._pad_id = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else self._eos_ids[0]

    def prepare(self, messages: Sequence[Message]) -> PreparedPrompt:
        """Validate messages, decode their images and tokenise the chat (image tokens included)."""
        conversation, image_count = to_conversation(messages, max_images=self.max_images,
                                                    limits=self.image_limits, resolve=self._resolve_url)
        with self._lock:
            # sanitize_control_tokens: text a user writes ("<image>", "<|im_end|>") stays text,
            # never a placeholder or a turn boundary.
            inputs = self._processor.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                return_tensors="pt", sanitize_control_tokens=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        return PreparedPrompt(inputs=inputs, prompt_tokens=int(inputs["input_ids"].shape[1]),
                              image_count=image_count)

    def generate(self, messages: Sequence[Message], *, max_tokens: int | None = None,
                 temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None,
                 stop: str | Sequence[str] | None = None, on_delta: Callable[[str], None] | None = None,
                 cancel: threading.Event | None = None) -> VisionResult:
        """Generate one assistant reply; `on_delta` receives text pieces that join to `text`.

        Text that may be the start of a stop sequence is held back until it is known not to be,
        so a stop sequence never reaches the client. A fixed `seed` reproduces the reply.
        """
        stops = _check_sampling(temperature=temperature, top_p=top_p, seed=seed, stop=stop)
        prompt = self.prepare(messages)
        room = self.context_length - prompt.prompt_tokens
        if room < 1:
            raise InvalidArgument(f"the prompt is {prompt.prompt_tokens} tokens (images included); this model's "
                                  f"context is {self.context_length} tokens", field="messages")
        if max_tokens is None:
            max_tokens = room
        elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise InvalidArgument(f"must be a positive integer, got {max_tokens!r}", field="max_tokens")
        elif max_tokens > room:
            raise InvalidArgument(f"is {max_tokens}, but the prompt uses {prompt.prompt_tokens} of this model's "
                                  f"{self.context_length} context tokens: at most {room}", field="max_tokens")

        watcher = _Watcher(self._decode, prompt.prompt_tokens, self._eos_ids, stops, on_delta, cancel)
        if watcher.cancelled():
            return VisionResult(text="", finish_reason="cancelled", prompt_tokens=prompt.prompt_tokens,
                                completion_tokens=0)
        processors = LogitsProcessorList()
        if temperature > 0:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(seed % 2**64 if seed is not None else secrets.randbits(63))
            processors.append(_SeededSampler(temperature, top_p, generator))
        # Greedy over our sampler's one-hot choice: generate() keeps the model-specific input handling
        # (image features, caches, positions) while the randomness stays per-request and seeded.
        config = GenerationConfig(max_new_tokens=max_tokens, do_sample=False, eos_token_id=self._eos_ids,
                                  pad_token_id=self._pad_id)
        with torch.inference_mode():
            output = self._model.generate(**prompt.inputs, generation_config=config, logits_processor=processors,
                                          stopping_criteria=StoppingCriteriaList([watcher]))
        generated = output[0, prompt.prompt_tokens:].tolist()
        text, finish_reason = watcher.finish(generated, max_tokens)
        return VisionResult(text=text, finish_reason=finish_reason, prompt_tokens=prompt.prompt_tokens,
                            completion_tokens=len(generated))

    def _decode(self, ids: list[int]) -> str:
        with self._lock:
            return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def to_conversation(messages: Sequence[Message], *, max_images: int, limits: ImageLimits = ImageLimits(),
                    resolve: UrlResolver | None = None) -> tuple[list[dict[str, Any]], int]:
    """OpenAI chat messages -> the processor's conversation format, with images decoded to PIL.

    Content is always a list of parts ({"type": "text"} / {"type": "image"}), which is what
    llava-hf style chat templates expect.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise InvalidArgument("must be a non-empty list of messages", field="messages")
    conversation: list[dict[str, Any]] = []
    images = 0
    for i, message in enumerate(messages):
        field = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise InvalidArgument("must be an object with role and content", field=field)
        role = _ROLES.get(message.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise InvalidArgument(f"must be one of {', '.join(_ROLES)}, got {message.get('role')!r}",
                                  field=f"{field}.role")
        parts: list[dict[str, Any]] = []
        content = message.get("content")
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
        elif isinstance(content, Sequence) and not isinstance(content, (str, bytes)):
            for j, part in enumerate(content):
                converted = _part(part, field=f"{field}.content[{j}]", role=role, limits=limits, resolve=resolve)
                if converted["type"] == "image":
                    images += 1
                    if images > max_images:
                        raise InvalidArgument(f"has more than {max_images} images in one request",
                                              field=f"{field}.content[{j}]")
                parts.append(converted)
        elif content is None and role == "assistant":
            pass  # an assistant turn that only called tools has no content
        else:
            raise InvalidArgument("must be a string or a list of content parts", field=f"{field}.content")
        conversation.append({"role": role, "content": parts})
    return conversation, images


def _part(part: Any, *, field: str, role: str, limits: ImageLimits,
          resolve: UrlResolver | None) -> dict[str, Any]:
    if not isinstance(part, Mapping):
        raise InvalidArgument("must be an object with a type", field=field)
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidArgument("must be a string", field=f"{field}.text")
        return {"type": "text", "text": text}
    if kind == "image_url":
        if role != "user":
            raise InvalidArgument(f"images are only allowed in user messages, not {role}", field=field)
        image_url = part.get("image_url")
        # {"url": ..., "detail": ...} as OpenAI sends it; a bare string as some clients do.
        url = image_url.get("url") if isinstance(image_url, Mapping) else image_url
        if isinstance(image_url, Mapping) and image_url.get("detail", "auto") not in ("auto", "low", "high"):
            raise InvalidArgument("must be one of auto, low, high", field=f"{field}.image_url.detail")
        if not isinstance(url, (str, bytes, bytearray)):
            raise InvalidArgument("must have a url (a data: URI)", field=f"{field}.image_url")
        return {"type": "image", "image": decode_image(url, field=f"{field}.image_url", limits=limits,
                                                       resolve=resolve)}
    raise InvalidArgument(f"must be text or image_url, got {kind!r}", field=f"{field}.type")


def _check_sampling(*, temperature: float, top_p: float, seed: int | None,
                    stop: str | Sequence[str] | None) -> list[str]:
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        allowed = SAMPLING_RANGES[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in allowed:
            raise InvalidArgument(f"must be in {allowed}, got {value!r}", field=name)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidArgument(f"must be an integer, got {seed!r}", field="seed")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP_SEQUENCES:
        raise InvalidArgument(f"has {len(stops)} sequences; at most {MAX_STOP_SEQUENCES}", field="stop")
    if any(not isinstance(s, str) or not s for s in stops):
        raise InvalidArgument("sequences must be non-empty strings", field="stop")
    return stops


def _eos_ids(*candidates: int | Sequence[int] | None) -> list[int]:
    ids: list[int] = []
    for candidate in candidates:
        for token in ([candidate] if isinstance(candidate, int) else list(candidate or [])):
            if token not in ids:
                ids.append(int(token))
    if not ids:
        raise ModelUnavailable("the model defines no end-of-sequence token")
    return ids


class _SeededSampler(LogitsProcessor):
    """Temperature + nucleus sampling from a per-request generator, returned as a one-hot choice."""

    def __init__(self, temperature: float, top_p: float, generator: torch.Generator) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = scores.float() / self.temperature
        if self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            # Drop tokens once the mass before them already reaches top_p; the top token always stays.
            drop = cumulative - sorted_logits.softmax(dim=-1) >= self.top_p
            logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
        choice = torch.multinomial(logits.softmax(dim=-1), num_samples=1, generator=self.generator)
        return torch.full_like(scores, float("-inf")).scatter(-1, choice, 0.0)


class _Watcher(StoppingCriteria):
    """Runs after every generated token: streams safe text, finds stop sequences, honours cancel."""

    def __init__(self, decode: Callable[[list[int]], str], prompt_tokens: int, eos_ids: list[int],
                 stops: list[str], on_delta: Callable[[str], None] | None, cancel: threading.Event | None) -> None:
        self._decode = decode
        self._prompt_tokens = prompt_tokens
        self._eos_ids = set(eos_ids)
        self._stops = stops
        self._on_delta = on_delta
        self._cancel = cancel
        self._emitted = ""
        self._stop_at: int | None = None
        self._cancelled = False

    def cancelled(self) -> bool:
        self._cancelled = self._cancelled or (self._cancel is not None and self._cancel.is_set())
        return self._cancelled

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        text = self._decode(input_ids[0, self._prompt_tokens:].tolist())
        self._stop_at = _first_stop(text, self._stops)
        if self._stop_at is not None:
            self._emit(text[:self._stop_at])
        else:
            self._emit(text[:len(text) - _held_back(text, self._stops)])
        done = self._stop_at is not None or self.cancelled()
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

    def finish(self, generated: list[int], max_tokens: int) -> tuple[str, FinishReason]:
        text = self._decode(generated)
        stop_at = _first_stop(text, self._stops)
        if stop_at is not None:
            self._emit(text[:stop_at], final=True)
            return text[:stop_at], "stop"
        # Nothing more is coming: held-back text (a partial stop, an unfinished character) is final.
        self._emit(text, final=True)
        if self._cancelled:
            return text, "cancelled"
        if generated and generated[-1] in self._eos_ids:
            return text, "stop"
        return text, "length" if len(generated) >= max_tokens else "stop"

    def _emit(self, text: str, *, final: bool = False) -> None:
        if not final:
            # An unfinished multi-byte character decodes to U+FFFD until its last byte arrives.
            text = text.rstrip("\ufffd")
        if len(text) > len(self._emitted) and text.startswith(self._emitted):
            delta, self._emitted = text[len(self._emitted):], text
            if self._on_delta is not None:
                self._on_delta(delta)


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _held_back(text: str, stops: list[str]) -> int:
    """Length of the longest suffix of `text` that could still grow into a stop sequence."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest
