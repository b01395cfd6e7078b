"""The diffusers side shared by the image and video workers: loading a checkpoint onto a
device, the step events a denoising loop reports, and the init image a request repaints or
animates. Synchronous, for a worker thread; imports torch, so only diffusion workers import it.
"""
from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from PIL import Image, ImageOps

from genmesh.errors import InvalidArgument, ModelUnavailable


@dataclass(frozen=True)
class StepEvent:
    """Progress after a completed denoising step (1-based) of `total`.

    `previews` holds one small PNG per image of the request on preview steps, else is empty.
    """

    step: int
    total: int
    previews: tuple[bytes, ...] = ()


StepCallback = Callable[[StepEvent], None]

def resolve_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailable(f"device {device!r} requested but no CUDA device is available")
    if dev.type not in ("cpu", "cuda"):
        raise ModelUnavailable(f"device {device!r} is not supported; use cpu or cuda[:n]")
    return dev


def default_dtype(device: torch.device) -> torch.dtype:
    # fp16 halves memory and doubles throughput on GPUs; CPUs have no fast fp16 kernels.
    return torch.float16 if device.type == "cuda" else torch.float32


def load_diffusers(pipeline_cls: type, directory: Path | str, *, device: str,
                   torch_dtype: torch.dtype | None) -> Any:
    """`pipeline_cls.from_pretrained` on a local directory, errors mapped to ModelUnavailable."""
    path = Path(directory)
    if not (path / "model_index.json").is_file():
        raise ModelUnavailable(f"no diffusers weights in {path} (model_index.json missing); "
                               "build or download the model first")
    dev = resolve_device(device)
    dtype = torch_dtype or default_dtype(dev)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # A tqdm bar per load (components, then weights) is noise in structured logs.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        pipe = pipeline_cls.from_pretrained(path, dtype=dtype, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelUnavailable(f"cannot load weights from {path}: {exc}") from exc
    pipe = pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    return pipe

def num_timesteps(pipe: Any) -> int:
    """Denoising iterations of the running call (image-to-image and PNDM differ from the
    requested steps); pipelines without the property report their scheduler's schedule."""
    return int(getattr(pipe, "num_timesteps", None) or len(pipe.scheduler.timesteps))

def load_init_image(data: bytes, width: int, height: int) -> Image.Image:
    """Decode an init image and cover-fit it to the output size (centre crop, no distortion)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = ImageOps.exif_transpose(im).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        # Params only verify the header; a truncated body surfaces here.
        raise InvalidArgument(f"cannot be decoded ({exc})", field="image") from None
    if rgb.size == (width, height):
        return rgb
    return ImageOps.fit(rgb, (width, height), Image.Resampling.LANCZOS)


class DiffusersModel:
    """A model wrapping one diffusers pipeline of class `diffusers_class`, loaded from a local
    checkpoint directory by `from_pretrained`."""

    diffusers_class: ClassVar[str]

    def __init__(self, pipe: Any) -> None:
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, directory: Path | str, *, device: str = "cpu",
                        torch_dtype: torch.dtype | None = None) -> Self:
        import diffusers

        return cls(load_diffusers(getattr(diffusers, cls.diffusers_class), directory,
                                  device=device, torch_dtype=torch_dtype))
