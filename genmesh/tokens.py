"""Short-lived tokens the edge hands out and later accepts without storing anything: CDN upload
tokens (FAL's `storage/auth/token`) and realtime tokens (FAL's `POST /tokens/`).

A token is sealed with keys derived from the mesh's signing secret: its JSON payload is encrypted
with an HMAC-SHA256 keystream (a PRF in counter mode) and authenticated with a separate HMAC
over the purpose, nonce and ciphertext (encrypt-then-MAC). A realtime token carries the caller's
API key (the router authenticates every call with it), so it must be unreadable, not only signed.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from typing import Any

from genmesh.errors import Unauthenticated

PREFIX = "gmt1."
NONCE_BYTES = 16
TAG_BYTES = 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSealer:
    def __init__(self, secret: str) -> None:
        root = secret.encode()
        self._enc = hmac.new(root, b"genmesh-edge-token-encrypt", hashlib.sha256).digest()
        self._mac = hmac.new(root, b"genmesh-edge-token-mac", hashlib.sha256).digest()

    def _keystream(self, nonce: bytes, length: int) -> bytes:
        blocks = []
        for counter in range((length + 31) // 32):
            blocks.append(hmac.new(self._enc, nonce + counter.to_bytes(4, "big"), hashlib.sha256).digest())
        return b"".join(blocks)[:length]

    def _tag(self, purpose: str, nonce: bytes, ciphertext: bytes) -> bytes:
        return hmac.new(self._mac, purpose.encode() + b"\0" + nonce + ciphertext, hashlib.sha256).digest()

    def seal(self, purpose: str, payload: dict[str, Any], ttl_s: float) -> tuple[str, float]:
        """(token, expiry as unix seconds)."""
        expires = time.time() + ttl_s
        plain = json.dumps({**payload, "exp": expires}, separators=(",", ":")).encode()
        nonce = os.urandom(NONCE_BYTES)
        cipher = bytes(a ^ b for a, b in zip(plain, self._keystream(nonce, len(plain)), strict=True))
        return PREFIX + _b64(nonce + cipher + self._tag(purpose, nonce, cipher)), expires

    def open(self, purpose: str, token: str) -> dict[str, Any]:
        """The payload of a token sealed for `purpose`; Unauthenticated when forged or expired."""
        if not token.startswith(PREFIX):
            raise Unauthenticated("not a genmesh token")
        try:
            raw = _unb64(token[len(PREFIX):])
        except (ValueError, TypeError):
            raise Unauthenticated("malformed token") from None
        if len(raw) < NONCE_BYTES + TAG_BYTES + 2:
            raise Unauthenticated("malformed token")
        nonce, cipher, tag = raw[:NONCE_BYTES], raw[NONCE_BYTES:-TAG_BYTES], raw[-TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(purpose, nonce, cipher)):
            raise Unauthenticated("invalid token")
        plain = bytes(a ^ b for a, b in zip(cipher, self._keystream(nonce, len(cipher)), strict=True))
        payload = json.loads(plain)
        if float(payload.get("exp", 0)) < time.time():
            raise Unauthenticated("expired token; ask for a new one")
        return payload


def is_token(value: str | None) -> bool:
    return bool(value) and value.startswith(PREFIX)  # type: ignore[union-attr]
