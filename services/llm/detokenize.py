"""Generated token ids -> released text: incremental detokenisation and stop strings.

Text for a token is released once it is final (no trailing partial UTF-8 character) and cannot be
the start of a stop string; a stop string is cut out even when it spans several tokens, and
nothing after it is released.
"""
from __future__ import annotations

from typing import Sequence

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream
from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2's byte <-> char table

class IncrementalDetokenizer:
    """Decodes one sequence's tokens as they come, through `tokenizers`' own `DecodeStream` (the
    prefix-window re-decode TGI and vLLM do), which holds a token back while it ends in a partial
    UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._stream = DecodeStream(skip_special_tokens=True)
        self._ids: list[int] = []
        self._released = 0  # characters of the full decode handed out so far
        self._held = 0  # tokens added since the stream last released text

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        text = self._stream.step(self._tokenizer, token_id)
        if text is None:
            self._held += 1
            return ""
        self._held = 0
        self._released += len(text)
        return text

    def flush(self) -> str:
        """At the end: whatever is still held (a dangling partial character decodes as U+FFFD).
        DecodeStream has no end-of-stream call, so this is the full decode past what was
        released."""
        if not self._held:
            return ""
        self._held = 0
        rest = self._tokenizer.decode(self._ids, skip_special_tokens=True)[self._released:]
        self._released += len(rest)
        return rest


class StopStrings:
    """Holds back text that might begin a stop string; reports the first complete one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._pending = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string found (the earliest in the text)

    def push(self, text: str) -> str:
        """Add newly decoded text; return what is safe to release now."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        pending = self._pending + text
        # Anything released earlier could not start a stop string, so one can only begin in `pending`.
        hits = [(i, s) for i, s in ((pending.find(s), s) for s in self._stops) if i >= 0]
        if hits:
            at, self.matched = min(hits, key=lambda hit: hit[0])
            self.stopped = True
            self._pending = ""
            return pending[:at]
        hold = _longest_stop_prefix_suffix(pending, self._stops)
        self._pending = pending[len(pending) - hold:] if hold else ""
        return pending[:len(pending) - hold]

    def flush(self) -> str:
        """At the end without a stop string: the held-back text was not a stop after all."""
        pending, self._pending = self._pending, ""
        return "" if self.stopped else pending


def _longest_stop_prefix_suffix(text: str, stops: Sequence[str]) -> int:
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


class TokenBytes:
    """The raw bytes of single tokens (for logprobs, where a token may be part of a character)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._cache: dict[int, bytes] = {}
        self._byte_level = type(tokenizer.decoder).__name__ == "ByteLevel"
        self._unicode_to_byte = {c: b for b, c in bytes_to_unicode().items()}
        self._special = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}

    def __call__(self, token_id: int) -> bytes:
        found = self._cache.get(token_id)
        if found is None:
            found = self._cache[token_id] = self._compute(token_id)
        return found

    def text(self, token_id: int) -> str:
        return self(token_id).decode("utf-8", errors="replace")

    def _compute(self, token_id: int) -> bytes:
        piece = self._tokenizer.id_to_token(token_id)
        if piece is None:
            return b""
        if token_id in self._special or not self._byte_level:
            if token_id in self._special:
                return piece.encode("utf-8")
            return self._tokenizer.decode([token_id], skip_special_tokens=False).encode("utf-8")
        try:
            return bytes(self._unicode_to_byte[c] for c in piece)
        except KeyError:  # an added (non-byte-level) token
            return piece.encode("utf-8")

