"""Final image encoding: PIL images -> PNG/JPEG/WebP bytes with their size and content type."""
from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from genmesh.worker.media import EncodedMedia

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


@dataclass(frozen=True)
class EncodedImage(EncodedMedia):
    seed: int


def encode_image(image: Image.Image, output_format: str, *, seed: int,
                 quality: int = 90) -> EncodedImage:
    """Encode one RGB image; `quality` applies to JPEG and WebP (PNG is lossless)."""
    fmt = output_format.lower()
    if fmt not in _PIL_FORMATS:
        raise ValueError(f"unsupported image format {output_format!r}")
    rgb = image.convert("RGB")
    options: dict[str, object] = {}
    if fmt == "png":
        options["optimize"] = False  # deterministic and ~3x faster; size is the blob store's job
    else:
        options["quality"] = quality
    buf = io.BytesIO()
    rgb.save(buf, format=_PIL_FORMATS[fmt], **options)
    return EncodedImage(data=buf.getvalue(), width=rgb.width, height=rgb.height,
                        content_type=CONTENT_TYPES[fmt], seed=seed)
