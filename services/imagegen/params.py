"""Image generation parameters: one validated dataclass, errors naming the field and its range.

The field checks (`check_*`) are plain functions so the video service validates the shared
fields (prompt, sizes, steps, guidance, seed, preview cadence) with the same words and limits.
"""
from __future__ import annotations

import io
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from genmesh.errors import InvalidArgument

MAX_PROMPT_CHARS = 2000
MIN_SIDE, MAX_SIDE = 64, 2048
MAX_STEPS = 150
MAX_GUIDANCE = 30.0
MAX_IMAGES = 8
# Seeds travel through JSON (google.protobuf.Struct numbers are doubles) and UIs; 32 bits keeps
# them exact everywhere. Image i of a request uses seed + i.
MAX_SEED = 2**32 - 1

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


# --- field checks shared with the video service -------------------------------------------------

def check_prompt(value: object, name: str = "prompt", *, required: bool = True) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidArgument(f"must be a string, got {type(value).__name__}", field=name)
    if required and not value.strip():
        raise InvalidArgument("is required and must not be empty", field=name)
    if len(value) > MAX_PROMPT_CHARS:
        raise InvalidArgument(f"must be at most {MAX_PROMPT_CHARS} characters, got {len(value)}",
                              field=name)
    return value


def check_int(value: object, name: str, lo: int, hi: int) -> int:
    # bool is an int subclass; a JSON true must not become 1 step.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"must be an integer in {lo}..{hi}, got {value!r}", field=name)
    if not lo <= value <= hi:
        raise InvalidArgument(f"must be in {lo}..{hi}, got {value}", field=name)
    return value


def check_float(value: object, name: str, lo: float, hi: float, *, lo_open: bool = False) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidArgument(f"must be a number in {_range(lo, hi, lo_open)}, got {value!r}",
                              field=name)
    if value < lo or value > hi or (lo_open and value == lo):
        raise InvalidArgument(f"must be in {_range(lo, hi, lo_open)}, got {value}", field=name)
    return float(value)


def check_side(value: object, name: str) -> int:
    side = check_int(value, name, MIN_SIDE, MAX_SIDE)
    if side % 8:
        raise InvalidArgument(f"must be a multiple of 8 in {MIN_SIDE}..{MAX_SIDE}, got {side}",
                              field=name)
    return side


def check_seed(value: object) -> int | None:
    return None if value is None else check_int(value, "seed", 0, MAX_SEED)


def check_choice(value: object, name: str, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise InvalidArgument(f"must be one of {', '.join(allowed)}; got {value!r}", field=name)
    return value.lower()


def check_image_bytes(value: object, name: str = "image") -> bytes | None:
    """Init images arrive already fetched; reject what Pillow cannot read before any compute."""
    if value is None:
        return None
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidArgument("must be image bytes (PNG, JPEG or WebP)", field=name)
    data = bytes(value)
    if not data:
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad input
        raise InvalidArgument(f"is not a readable image ({exc.__class__.__name__})",
                              field=name) from None
    return data


def set_fields(obj: object, **values: object) -> None:
    """Store normalised values on a frozen dataclass during __post_init__."""
    for name, value in values.items():
        object.__setattr__(obj, name, value)


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def reject_unknown(data: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidArgument(f"unknown field; allowed fields are {', '.join(sorted(known))}",
                              field=unknown[0])


def _range(lo: float, hi: float, lo_open: bool) -> str:
    return f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"


# --- image parameters ---------------------------------------------------------------------------

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
            self,
            prompt=check_prompt(self.prompt),
            negative_prompt=check_prompt(self.negative_prompt, "negative_prompt", required=False),
            width=check_side(self.width, "width"),
            height=check_side(self.height, "height"),
            num_inference_steps=check_int(self.num_inference_steps, "num_inference_steps", 1,
                                          MAX_STEPS),
            guidance_scale=check_float(self.guidance_scale, "guidance_scale", 0.0, MAX_GUIDANCE),
            seed=check_seed(self.seed),
            num_images=check_int(self.num_images, "num_images", 1, MAX_IMAGES),
            scheduler=(None if self.scheduler in (None, "") else
                       check_choice(self.scheduler, "scheduler", tuple(SCHEDULERS))),
            output_format=check_choice(self.output_format, "output_format", IMAGE_FORMATS),
            preview_every=check_int(self.preview_every, "preview_every", 0, MAX_STEPS),
            image=check_image_bytes(self.image),
            strength=check_float(self.strength, "strength", 0.0, 1.0, lo_open=True),
        )
        if self.image is not None and int(self.num_inference_steps * self.strength) < 1:
            # diffusers runs int(steps * strength) steps of image-to-image; zero would be a no-op.
            raise InvalidArgument(
                f"must be at least 1/num_inference_steps ({1 / self.num_inference_steps:g}) so "
                f"that one step runs, got {self.strength:g}", field="strength")

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
        known = {f.name for f in fields(cls)}
        reject_unknown(data, known)
        values = {k: v for k, v in data.items() if v is not None}
        for name in ("width", "height", "num_inference_steps", "guidance_scale", "scheduler",
                     "output_format", "strength"):
            values.setdefault(name, getattr(defaults, name))
        if data.get("image") and data.get("width") is None and data.get("height") is None:
            size = image_size(check_image_bytes(data["image"]) or b"")
            values["width"], values["height"] = (fit_side(s) for s in size)
        if "prompt" not in values:
            raise InvalidArgument("is required and must not be empty", field="prompt")
        return cls(**values)


def image_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size


def fit_side(side: int) -> int:
    return max(MIN_SIDE, min(MAX_SIDE, side // 8 * 8))
