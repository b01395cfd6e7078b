"""Video generation parameters: one validated dataclass, errors naming the field and its range,
and the typed request's rules the router checks before enqueueing.

Torch-free (the router imports `validate_request`). Shared fields (prompt, size, steps,
guidance, seed, previews, init image) are checked by `genmesh.diffusion_params`, as for images.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from genmesh.diffusion_params import (check_choice, check_float, check_int,
                                      check_strength_runs_a_step, checked_shared_fields,
                                      mapping_values, random_seed, set_fields,
                                      shared_request_fields, validate_shared_request_fields)
from genmesh.v1 import videogen_pb2

MAX_FRAMES = 240
MAX_FPS = 60.0
VIDEO_FORMATS = ("mp4", "gif", "webp")


@dataclass(frozen=True)
class VideoDefaults:
    """Per-model defaults for fields a request leaves unset."""

    width: int = 512
    height: int = 512
    num_frames: int = 16
    fps: float = 8.0
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    output_format: str = "mp4"
    strength: float = 0.8


@dataclass(frozen=True)
class VideoParams:
    """One validated text-to-video (or, with `image`, image-to-video) request.

    `preview_every=k`: previews after steps 1, 1+k, ... (ceil(steps / k) of them), 0 = none.
    With `image`, every frame starts from that still and `strength` (0, 1] is how much of it
    the model may repaint; the video runs int(steps * strength) denoising steps.
    """

    prompt: str
    negative_prompt: str = ""
    num_frames: int = 16
    fps: float = 8.0
    width: int = 512
    height: int = 512
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    seed: int | None = None
    output_format: str = "mp4"
    preview_every: int = 0
    image: bytes | None = field(default=None, repr=False)
    strength: float = 0.8

    def __post_init__(self) -> None:
        set_fields(
            self, **checked_shared_fields(self),
            num_frames=check_num_frames(self.num_frames),
            fps=check_fps(self.fps),
            output_format=check_choice(self.output_format, "output_format", VIDEO_FORMATS),
        )
        if self.image is not None:
            check_strength_runs_a_step(self.num_inference_steps, self.strength)

    @property
    def mode(self) -> str:
        return "img2vid" if self.image is not None else "txt2vid"

    @property
    def duration_seconds(self) -> float:
        return self.num_frames / self.fps

    def with_seed(self) -> VideoParams:
        return self if self.seed is not None else replace(self, seed=random_seed())

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any],
                     defaults: VideoDefaults = VideoDefaults()) -> VideoParams:
        """Build from decoded request fields; None/absent takes the model's default."""
        return cls(**mapping_values(
            data, {f.name for f in fields(cls)}, defaults,
            ("width", "height", "num_frames", "fps", "num_inference_steps", "guidance_scale",
             "output_format", "strength")))


def check_num_frames(value: object) -> int:
    return check_int(value, "num_frames", 1, MAX_FRAMES)


def check_fps(value: object) -> float:
    return check_float(value, "fps", 1.0, MAX_FPS)


def validate_request(request: videogen_pb2.GenerateVideoRequest) -> None:
    """Raise InvalidArgument naming the first bad field a GenerateVideoRequest sets."""
    validate_shared_request_fields(request)
    if request.num_frames:
        check_num_frames(request.num_frames)
    if request.fps:
        check_fps(request.fps)
    if request.output_format:
        check_choice(request.output_format, "output_format", VIDEO_FORMATS)


def params_from_request(request: videogen_pb2.GenerateVideoRequest, *, image: bytes | None,
                        defaults: VideoDefaults) -> VideoParams:
    """The typed request with its init image fetched, over the model's defaults."""
    return VideoParams.from_mapping({
        **shared_request_fields(request), "image": image,
        "num_frames": request.num_frames or None, "fps": request.fps or None,
    }, defaults)
