"""Short-lived tokens the edge hands out and the mesh later accepts without storing anything: CDN
upload tokens (FAL's `storage/auth/token`) and realtime tokens (FAL's `POST /tokens/`).

A token is its JSON payload sealed with AES-GCM (`cryptography`) under a key derived (HKDF) from
the mesh's signing secret, its purpose bound in as associated data, so a token minted for one
purpose opens for no other. A payload carries the API key's id (`kid`), never its secret: whoever
accepts a token checks that key is still live by id, so revoking the key ends its tokens too.
"""
from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from genmesh.errors import Unauthenticated

PREFIX = "gmt2."
NONCE_BYTES = 12
CDN_UPLOAD = "cdn-upload"
REALTIME = "realtime"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSealer:
    def __init__(self, secret: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"genmesh-token-aes-gcm").derive(secret.encode())
        self._aead = AESGCM(key)

    def seal(self, purpose: str, payload: dict[str, Any], ttl_s: float) -> tuple[str, float]:
        """(token, expiry as unix seconds)."""
        expires = time.time() + ttl_s
        plain = json.dumps({**payload, "exp": expires}, separators=(",", ":")).encode()
        nonce = os.urandom(NONCE_BYTES)
        return PREFIX + _b64(nonce + self._aead.encrypt(nonce, plain, purpose.encode())), expires

    def open(self, purpose: str, token: str) -> dict[str, Any]:
        """The payload of a token sealed for `purpose`; Unauthenticated when forged, sealed for
        another purpose, or expired."""
        if not token.startswith(PREFIX):
            raise Unauthenticated("not a genmesh token")
        try:
            raw = _unb64(token[len(PREFIX):])
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], purpose.encode())
            payload = json.loads(plain)
            expires = float(payload["exp"])
        except (ValueError, TypeError, KeyError, InvalidTag):
            raise Unauthenticated("invalid token") from None
        if expires < time.time():
            raise Unauthenticated("expired token; ask for a new one")
        return payload


def is_token(value: str | None) -> bool:
    return bool(value) and value.startswith(PREFIX)  # type: ignore[union-attr]


def allows_app(payload: dict[str, Any], model_path: str) -> bool:
    """Whether a realtime token's `apps` (aliases or full ids; empty = any) cover a model path."""
    apps = payload.get("apps") or []
    alias = model_path.split("/")[1] if "/" in model_path else model_path
    return not apps or alias in apps or model_path in apps
