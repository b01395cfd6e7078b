"""Video generation parameters: one validated dataclass, errors naming the field and its range,
and the typed request's rules the router checks before enqueueing.

Torch-free (the router imports `validate_request`). Shared fields (prompt, size, steps,
guidance, seed, previews, init image) are checked by `genmesh.diffusion_params`, as for images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from genmesh.diffusion_params import (DiffusionDefaults, DiffusionParams, check_choice, check_float,
                                      check_int, shared_request_fields,
                                      validate_shared_request_fields)
from genmesh.v1 import videogen_pb2

MAX_FRAMES = 240
MAX_FPS = 60.0
VIDEO_FORMATS = ("mp4", "gif", "webp")


@dataclass(frozen=True)
class VideoDefaults(DiffusionDefaults):
    """Per-model defaults for fields a request leaves unset."""

    num_inference_steps: int = 25
    output_format: str = "mp4"
    num_frames: int = 16
    fps: float = 8.0


@dataclass(frozen=True)
class VideoParams(DiffusionParams):
    """One validated text-to-video (or, with `image`, image-to-video) request (see
    DiffusionParams). With `image`, every frame starts from that still; the video runs
    int(steps * strength) denoising steps.
    """

    num_inference_steps: int = 25
    output_format: str = "mp4"
    num_frames: int = 16
    fps: float = 8.0

    defaults_type: ClassVar[type[DiffusionDefaults]] = VideoDefaults

    def checked_own_fields(self) -> dict[str, Any]:
        return dict(num_frames=check_num_frames(self.num_frames), fps=check_fps(self.fps),
                    output_format=check_choice(self.output_format, "output_format", VIDEO_FORMATS))

    @property
    def mode(self) -> str:
        return "img2vid" if self.image is not None else "txt2vid"

    @property
    def duration_seconds(self) -> float:
        return self.num_frames / self.fps


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
