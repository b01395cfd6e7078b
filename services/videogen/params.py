"""Video generation parameters: one validated dataclass, errors naming the field and its range.

Shared fields (prompt, size, steps, guidance, seed, previews, init image) are checked with the
image service's field checks so both services word and bound them the same way.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from genmesh.errors import InvalidArgument
from genmesh.services.imagegen.params import (MAX_GUIDANCE, MAX_STEPS, check_choice,
                                              check_float, check_image_bytes, check_int,
                                              check_prompt, check_seed, check_side, fit_side,
                                              image_size, random_seed, reject_unknown,
                                              set_fields)

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
            self,
            prompt=check_prompt(self.prompt),
            negative_prompt=check_prompt(self.negative_prompt, "negative_prompt", required=False),
            num_frames=check_int(self.num_frames, "num_frames", 1, MAX_FRAMES),
            fps=check_float(self.fps, "fps", 1.0, MAX_FPS),
            width=check_side(self.width, "width"),
            height=check_side(self.height, "height"),
            num_inference_steps=check_int(self.num_inference_steps, "num_inference_steps", 1,
                                          MAX_STEPS),
            guidance_scale=check_float(self.guidance_scale, "guidance_scale", 0.0, MAX_GUIDANCE),
            seed=check_seed(self.seed),
            output_format=check_choice(self.output_format, "output_format", VIDEO_FORMATS),
            preview_every=check_int(self.preview_every, "preview_every", 0, MAX_STEPS),
            image=check_image_bytes(self.image),
            strength=check_float(self.strength, "strength", 0.0, 1.0, lo_open=True),
        )
        if self.image is not None and int(self.num_inference_steps * self.strength) < 1:
            raise InvalidArgument(
                f"must be at least 1/num_inference_steps ({1 / self.num_inference_steps:g}) so "
                f"that one step runs, got {self.strength:g}", field="strength")

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
        reject_unknown(data, {f.name for f in fields(cls)})
        values = {k: v for k, v in data.items() if v is not None}
        for name in ("width", "height", "num_frames", "fps", "num_inference_steps",
                     "guidance_scale", "output_format", "strength"):
            values.setdefault(name, getattr(defaults, name))
        if data.get("image") and data.get("width") is None and data.get("height") is None:
            size = image_size(check_image_bytes(data["image"]) or b"")
            values["width"], values["height"] = (fit_side(s) for s in size)
        if "prompt" not in values:
            raise InvalidArgument("is required and must not be empty", field="prompt")
        return cls(**values)
