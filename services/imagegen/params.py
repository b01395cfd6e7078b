"""Image generation parameters: one validated dataclass, errors naming the field and its range,
and the typed request's rules the router checks before enqueueing.

Torch-free (the router imports `validate_request`). The field checks both image and video use
live in `genmesh.diffusion_params`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from genmesh.diffusion_params import (DiffusionDefaults, DiffusionParams, check_choice, check_int,
                                      shared_request_fields, validate_shared_request_fields)
from genmesh.v1 import imagegen_pb2

MAX_IMAGES = 8

# Public sampler names -> (diffusers scheduler class, config overrides).
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {}),
    "dpm++_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}
IMAGE_FORMATS = ("png", "jpeg", "webp")


@dataclass(frozen=True)
class ImageDefaults(DiffusionDefaults):
    """Per-model defaults for fields a request leaves unset (tiny models default to 64 px)."""

    scheduler: str | None = None  # None: the sampler the model ships with


@dataclass(frozen=True)
class ImageParams(DiffusionParams):
    """One validated text-to-image or image-to-image request (see DiffusionParams).

    `scheduler` None (or "") keeps the sampler the model ships with.
    """

    num_images: int = 1
    scheduler: str | None = None

    defaults_type: ClassVar[type[DiffusionDefaults]] = ImageDefaults

    def checked_own_fields(self) -> dict[str, Any]:
        return dict(
            num_images=check_int(self.num_images, "num_images", 1, MAX_IMAGES),
            scheduler=(None if self.scheduler in (None, "") else
                       check_choice(self.scheduler, "scheduler", tuple(SCHEDULERS))),
            output_format=check_choice(self.output_format, "output_format", IMAGE_FORMATS),
        )

    @property
    def mode(self) -> str:
        return "img2img" if self.image is not None else "txt2img"

    @property
    def denoising_steps(self) -> int:
        """Steps actually run: image-to-image skips the first (1 - strength) of the schedule."""
        if self.image is None:
            return self.num_inference_steps
        return min(int(self.num_inference_steps * self.strength), self.num_inference_steps)


def validate_request(request: imagegen_pb2.GenerateImageRequest) -> None:
    """Raise InvalidArgument naming the first bad field a GenerateImageRequest sets."""
    validate_shared_request_fields(request)
    if request.num_images:
        check_int(request.num_images, "num_images", 1, MAX_IMAGES)
    if request.scheduler:
        check_choice(request.scheduler, "scheduler", tuple(SCHEDULERS))
    if request.output_format:
        check_choice(request.output_format, "output_format", IMAGE_FORMATS)


def params_from_request(request: imagegen_pb2.GenerateImageRequest, *, image: bytes | None,
                        defaults: ImageDefaults) -> ImageParams:
    """The typed request with its init image fetched, over the model's defaults."""
    return ImageParams.from_mapping({
        **shared_request_fields(request), "image": image,
        "num_images": request.num_images or None, "scheduler": request.scheduler or None,
    }, defaults)
