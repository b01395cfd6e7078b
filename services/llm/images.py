"""Decoding the image parts of chat messages (`data:` URIs or raw bytes) into validated RGB images.

Every rejection is an InvalidArgument naming the message part, e.g.
`messages[0].content[1].image_url`, so a client knows which image was wrong.
"""
from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass
from typing import Callable

from PIL import Image, ImageOps, UnidentifiedImageError

from genmesh.errors import InvalidArgument

# A resolver turns a non-`data:` URL (e.g. a signed blob-store link) into bytes; the worker
# passes one in when it may fetch. Without one such URLs are rejected rather than fetched.
UrlResolver = Callable[[str], bytes]

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,",
                       re.IGNORECASE)
_FORMATS = {"PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"}


@dataclass(frozen=True)
class ImageLimits:
    """What one image may cost; OpenAI allows 20 MB per image."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000  # about 6300x6300; refuses decompression bombs before decoding


def decode_image(source: str | bytes, *, field: str, limits: ImageLimits = ImageLimits(),
                 resolve: UrlResolver | None = None) -> Image.Image:
    """An RGB image from a `data:` URI, raw encoded bytes, or (with `resolve`) another URL."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, str):
        data = _bytes_from_url(source, field=field, limits=limits, resolve=resolve)
    else:
        raise InvalidArgument("must be a data: URI or image bytes", field=field)
    if not data:
        raise InvalidArgument("is empty", field=field)
    if len(data) > limits.max_bytes:
        raise InvalidArgument(f"is {len(data)} bytes; at most {limits.max_bytes} bytes per image", field=field)
    return _open(data, field=field, limits=limits)


def _bytes_from_url(url: str, *, field: str, limits: ImageLimits, resolve: UrlResolver | None) -> bytes:
    url = url.strip()
    if not url.lower().startswith("data:"):
        if resolve is None:
            raise InvalidArgument("must be a data: URI with base64 image bytes (remote URLs are not fetched)",
                                  field=field)
        return resolve(url)
    match = _DATA_URI.match(url)
    if match is None:
        raise InvalidArgument("is not a valid data: URI", field=field)
    mime = (match["mime"] or "").lower()
    if mime and not mime.startswith("image/"):
        raise InvalidArgument(f"has media type {mime!r}; expected an image/* data URI", field=field)
    if not match["b64"]:
        raise InvalidArgument("must be base64-encoded (data:image/png;base64,...)", field=field)
    payload = url[match.end():]
    # base64 is 4/3 of the bytes: refuse before decoding anything huge.
    if len(payload) > limits.max_bytes * 4 // 3 + 4:
        raise InvalidArgument(f"is larger than {limits.max_bytes} bytes per image", field=field)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument("is not valid base64", field=field) from exc


def _open(data: bytes, *, field: str, limits: ImageLimits) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in _FORMATS:
                raise InvalidArgument(f"has unsupported image format {image.format}; use one of "
                                      f"{', '.join(sorted(_FORMATS))}", field=field)
            width, height = image.size
            if width < 1 or height < 1 or width * height > limits.max_pixels:
                raise InvalidArgument(f"is {width}x{height}; at most {limits.max_pixels} pixels per image",
                                      field=field)
            image.seek(0)  # animated formats: the first frame
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except InvalidArgument:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidArgument("is not a decodable image", field=field) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt files
        raise InvalidArgument(f"is a corrupt image: {exc}", field=field) from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    """Transparent pixels become white, not whatever colour their RGB happens to hold."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
