"""Media in and out of the workers: the init image behind `image_url`, final files (images,
videos, speech) inline or in the blob store under the caller's key, and the small progressive
images (previews, frames) that always travel inline."""
from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from genmesh import blobstore, inputs
from genmesh.blobstore import BlobStore
from genmesh.catalog import ModelSpec
from genmesh.diffusion_params import check_image_bytes
from genmesh.errors import InvalidArgument
from genmesh.v1 import common_pb2

IMAGE_URL_FIELD = "image_url"


@dataclass(frozen=True)
class EncodedMedia:
    """A final file a pipeline made (an image, a video): its bytes, type and frame size."""

    data: bytes = field(repr=False)
    content_type: str
    width: int
    height: int


def require_task(spec: ModelSpec, image_url: str, *, tasks: tuple[str, str], what: str,
                 init: str) -> None:
    """`spec` does one of `tasks` (generating from a prompt, then from an init image), and the
    init-image task was given its `image_url`; `what` names the modality, `init` what the
    model does with the image ("repaints an init image")."""
    if spec.task not in tasks:
        raise InvalidArgument(f"model '{spec.id}' does {spec.task}, not {what}", field="model_id")
    if spec.task == tasks[1] and not image_url:
        raise InvalidArgument(f"is required: model '{spec.id}' {init}", field=IMAGE_URL_FIELD)


async def fetch_init_image(url: str, store: BlobStore) -> bytes | None:
    """The readable image behind a request's `image_url` (a data: URI or a file of this mesh)."""
    if not url:
        return None
    media = await inputs.fetch(url, store, field=IMAGE_URL_FIELD)
    return check_image_bytes(media.data, IMAGE_URL_FIELD)


@contextlib.contextmanager
def init_image_errors() -> Iterator[None]:
    """Errors about the fetched init image (params and decoding call it `image`) are reported
    under the request field it came from."""
    try:
        yield
    except InvalidArgument as exc:
        if exc.field != "image":
            raise
        raise InvalidArgument(exc.message.removeprefix("image: "),
                              field=IMAGE_URL_FIELD) from None


async def output_media(store: BlobStore, owner: str, data: bytes, content_type: str, *,
                       inline: bool, kind: str, file_name: str = "",
                       **fields: Any) -> common_pb2.Media:
    """`data` inline when asked, else stored as `<owner>/<kind>/...` (ending in `file_name`
    where one is given) behind a signed URL."""
    media = common_pb2.Media(content_type=content_type, size_bytes=len(data),
                             file_name=file_name, **fields)
    if inline:
        media.data = data
    else:
        key = blobstore.new_key(owner, kind, content_type, name=file_name or None)
        await store.put(key, data, content_type)
        media.url = store.url(key)
    return media


def png_media(data: bytes) -> common_pb2.Media:
    """An inline PNG with its size (read from the header only)."""
    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
    return common_pb2.Media(data=data, content_type="image/png", width=width, height=height,
                            size_bytes=len(data))

