"""Media inputs: `data:` URIs and this mesh's own blob-store URLs, never arbitrary hosts (so no
request can make the mesh fetch from inside the network); which URLs qualify is the outbound
URL policy's call (genmesh/outbound.py)."""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from genmesh import outbound
from genmesh.blobstore import BlobStore
from genmesh.errors import InvalidArgument, NotFound

MAX_INPUT_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class MediaInput:
    data: bytes
    content_type: str


def parse_data_uri(uri: str, field: str) -> MediaInput:
    header, sep, payload = uri.partition(",")
    if not sep or not header.startswith("data:"):
        raise InvalidArgument("malformed data: URI (expected data:<mime>;base64,<data>)", field=field)
    meta = header[5:].split(";")
    content_type = meta[0] or "application/octet-stream"
    try:
        data = base64.b64decode(payload, validate=True) if "base64" in meta[1:] else unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument(f"data: URI is not valid base64: {exc}", field=field) from None
    return MediaInput(data, content_type)


async def fetch(url: str, store: BlobStore, *, field: str, max_bytes: int = MAX_INPUT_BYTES) -> MediaInput:
    """The bytes behind an input URL, or InvalidArgument naming the field."""
    if not url:
        raise InvalidArgument("is required", field=field)
    if url.startswith("data:"):
        media = parse_data_uri(url, field)
    else:
        key = outbound.input_key(url, store)
        if key is None:
            raise InvalidArgument("only data: URIs and this mesh's file URLs (upload first: "
                                  "POST /storage/upload/initiate) are accepted", field=field)
        try:
            blob = await store.get(key)
        except NotFound:
            raise InvalidArgument("the file behind this URL no longer exists", field=field) from None
        media = MediaInput(blob.data, blob.content_type)
    if not media.data:
        raise InvalidArgument("is empty", field=field)
    if len(media.data) > max_bytes:
        raise InvalidArgument(f"is {len(media.data)} bytes; the limit is {max_bytes}", field=field)
    return media
