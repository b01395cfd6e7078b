"""Image generation parameters: one validated dataclass, errors naming the field and its range,
and the typed request's rules the router checks before enqueueing.

Torch-free (the router imports `validate_request`). The field checks both image and video use
live in `genmesh.diffusion_params`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from genmesh.diffusion_params import (check_choice, check_int, check_strength_runs_a_step,
                                      checked_shared_fields, mapping_values, random_seed,
                                      set_fields, shared_request_fields,
                                      validate_shared_request_fields)
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
class ImageDefaults:
    """Per-model defaults for fields a request leaves unset (tiny models default to 64 px)."""

    width: int = 512
    height: int = 512
    num_inference_steps: int = 30
    guidance_scale: float = 7.5
    scheduler: str | None = None  # None: the sampler the model ships with
    output_format: str = "png"
    strength: float = 0.8


@dataclass(frozen=True)
class ImageParams:
    """One validated text-to-image or image-to-image request.

    `preview_every=k` sends a preview after steps 1, 1+k, 1+2k, ... so a request of T steps
    gets ceil(T / k) previews, the first one after the first step. 0 turns previews off.
    `image` switches to image-to-image; `strength` (0, 1] is then how much of it is repainted.
    `scheduler` None (or "") keeps the sampler the model ships with.
    """

    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    num_inference_steps: int = 30
    guidance_scale: float = 7.5
    seed: int | None = None
    num_images: int = 1
    scheduler: str | None = None
    output_format: str = "png"
    preview_every: int = 0
    image: bytes | None = field(default=None, repr=False)
    strength: float = 0.8

    def __post_init__(self) -> None:
        set_fields(
            self, **checked_shared_fields(self),
            num_images=check_int(self.num_images, "num_images", 1, MAX_IMAGES),
            scheduler=(None if self.scheduler in (None, "") else
                       check_choice(self.scheduler, "scheduler", tuple(SCHEDULERS))),
            output_format=check_choice(self.output_format, "output_format", IMAGE_FORMATS),
        )
        if self.image is not None:
            check_strength_runs_a_step(self.num_inference_steps, self.strength)

    @property
    def mode(self) -> str:
        return "img2img" if self.image is not None else "txt2img"

    @property
    def denoising_steps(self) -> int:
        """Steps actually run: image-to-image skips the first (1 - strength) of the schedule."""
        if self.image is None:
            return self.num_inference_steps
        return min(int(self.num_inference_steps * self.strength), self.num_inference_steps)

    def with_seed(self) -> ImageParams:
        """This request with a concrete seed: the given one, else a fresh random one."""
        return self if self.seed is not None else replace(self, seed=random_seed())

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any],
                     defaults: ImageDefaults = ImageDefaults()) -> ImageParams:
        """Build from decoded request fields; None/absent takes the model's default.

        With an init image and no explicit size, the size follows the image (rounded down to a
        multiple of 8 and clamped to the allowed range).
        """
        return cls(**mapping_values(
            data, {f.name for f in fields(cls)}, defaults,
            ("width", "height", "num_inference_steps", "guidance_scale", "scheduler",
             "output_format", "strength")))


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
