"""Request rules image and video generation share: field checks, proto -> field mapping, defaults.

Torch-free (the router imports it through the modality params modules to refuse bad requests at
submit time). Both services check prompt, size, steps, guidance, seed, preview cadence, init
image and strength here, so they word and bound them the same way.
"""
from __future__ import annotations

import io
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Protocol, Self, TypeVar

from genmesh.errors import InvalidArgument, ModelUnavailable

MAX_PROMPT_CHARS = 2000
MIN_SIDE, MAX_SIDE = 64, 2048
MAX_STEPS = 150
MAX_GUIDANCE = 30.0
# Seeds travel through JSON (google.protobuf.Struct numbers are doubles) and UIs; 32 bits keeps
# them exact everywhere. Image i of a request uses seed + i.
MAX_SEED = 2**32 - 1
# Where an init image may come from: inline, or a file of this mesh (verified by the worker).
IMAGE_URL_SCHEMES = ("data:", "http://", "https://")


# --- field checks -------------------------------------------------------------------------------

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


def check_steps(value: object) -> int:
    return check_int(value, "num_inference_steps", 1, MAX_STEPS)


def check_guidance(value: object) -> float:
    return check_float(value, "guidance_scale", 0.0, MAX_GUIDANCE)


def check_preview_every(value: object) -> int:
    return check_int(value, "preview_every", 0, MAX_STEPS)


def check_strength(value: object) -> float:
    return check_float(value, "strength", 0.0, 1.0, lo_open=True)


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
    except Exception as exc:
        raise InvalidArgument(f"is not a readable image ({exc.__class__.__name__})",
                              field=name) from None
    return data


def check_image_url(url: str, name: str = "image_url") -> None:
    """A data: URI must hold a readable image; other URLs must at least be http(s) (whether
    they are this mesh's signed files is the worker's check, which holds the blob store)."""
    if not url:
        return
    if not url.startswith(IMAGE_URL_SCHEMES):
        raise InvalidArgument("must be a data: URI or a file URL of this mesh", field=name)
    if url.startswith("data:"):
        from genmesh.inputs import parse_data_uri

        media = parse_data_uri(url, name)
        if not media.data:
            raise InvalidArgument("is empty", field=name)
        check_image_bytes(media.data, name)


def check_strength_runs_a_step(steps: int, strength: float) -> None:
    # diffusers runs int(steps * strength) steps from an init image; zero would be a no-op.
    if int(steps * strength) < 1:
        raise InvalidArgument(
            f"must be at least 1/num_inference_steps ({1 / steps:g}) so that one step runs, "
            f"got {strength:g}", field="strength")


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


def image_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size


def fit_side(side: int) -> int:
    return max(MIN_SIDE, min(MAX_SIDE, side // 8 * 8))


def _range(lo: float, hi: float, lo_open: bool) -> str:
    return f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"


# --- the fields both parameter dataclasses have -----------------------------------------------

@dataclass(frozen=True)
class DiffusionDefaults:
    """Per-model defaults of the fields every diffusion request has (what a request leaving
    one unset gets); each modality adds its own."""

    width: int = 512
    height: int = 512
    num_inference_steps: int = 30
    guidance_scale: float = 7.5
    output_format: str = "png"
    strength: float = 0.8


@dataclass(frozen=True)
class DiffusionParams:
    """One validated diffusion request: the fields image and video share, checked alike.

    `preview_every=k` sends a preview after steps 1, 1+k, 1+2k, ... (ceil(steps / k) of them),
    0 = none. `image` starts from an init image, of which `strength` (0, 1] is repainted.
    A modality adds its fields, checks them in `checked_own_fields`, and names its defaults.
    """

    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    num_inference_steps: int = 30
    guidance_scale: float = 7.5
    seed: int | None = None
    output_format: str = "png"
    preview_every: int = 0
    image: bytes | None = field(default=None, repr=False)
    strength: float = 0.8

    defaults_type: ClassVar[type[DiffusionDefaults]] = DiffusionDefaults

    def __post_init__(self) -> None:
        set_fields(self, **checked_shared_fields(self), **self.checked_own_fields())
        if self.image is not None:
            check_strength_runs_a_step(self.num_inference_steps, self.strength)

    def checked_own_fields(self) -> dict[str, Any]:
        """The modality's own fields, checked and normalised (for set_fields)."""
        return {}

    def with_seed(self) -> Self:
        """This request with a concrete seed: the given one, else a fresh random one."""
        return self if self.seed is not None else replace(self, seed=random_seed())

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], defaults: DiffusionDefaults | None = None) -> Self:
        """Build from decoded request fields; None/absent takes the model's default (every
        field of the defaults). With an init image and no explicit size, the size follows the
        image (rounded down to a multiple of 8 and clamped to the allowed range)."""
        defaults = defaults if defaults is not None else cls.defaults_type()
        return cls(**mapping_values(data, {f.name for f in fields(cls)}, defaults,
                                    [f.name for f in fields(defaults)]))


def checked_shared_fields(p: DiffusionParams) -> dict[str, Any]:
    """The shared fields of a params dataclass, checked and normalised (for set_fields)."""
    return dict(
        prompt=check_prompt(p.prompt),
        negative_prompt=check_prompt(p.negative_prompt, "negative_prompt", required=False),
        width=check_side(p.width, "width"),
        height=check_side(p.height, "height"),
        num_inference_steps=check_steps(p.num_inference_steps),
        guidance_scale=check_guidance(p.guidance_scale),
        seed=check_seed(p.seed),
        preview_every=check_preview_every(p.preview_every),
        image=check_image_bytes(p.image),
        strength=check_strength(p.strength),
    )


def mapping_values(data: Mapping[str, Any], known: set[str], defaults: object,
                   defaulted: Sequence[str]) -> dict[str, Any]:
    """Decoded request fields -> constructor arguments: unknown fields rejected, None/absent
    fields in `defaulted` take the model's default; with an init image and no explicit size,
    the size follows the image (rounded down to a multiple of 8, clamped to the range)."""
    reject_unknown(data, known)
    values = {k: v for k, v in data.items() if v is not None}
    for name in defaulted:
        values.setdefault(name, getattr(defaults, name))
    if data.get("image") and data.get("width") is None and data.get("height") is None:
        size = image_size(check_image_bytes(data["image"]) or b"")
        values["width"], values["height"] = (fit_side(s) for s in size)
    if "prompt" not in values:
        raise InvalidArgument("is required and must not be empty", field="prompt")
    return values


D = TypeVar("D")


def with_overrides(defaults: D, overrides: Mapping[str, Any], model_id: str) -> D:
    """A model's own defaults with its catalog entry's `defaults` applied on top."""
    known = {f.name for f in fields(defaults)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ModelUnavailable(f"the catalog defaults of '{model_id}' name unknown fields "
                               f"{', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return replace(defaults, **overrides)  # type: ignore[type-var]


# --- typed requests (GenerateImageRequest, GenerateVideoRequest) ----------------------------------

class GenerationRequest(Protocol):
    """The fields GenerateImageRequest and GenerateVideoRequest have in common."""

    model_id: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    output_format: str
    preview_every: int
    image_url: str
    strength: float

    def HasField(self, name: str) -> bool: ...


def validate_shared_request_fields(request: GenerationRequest) -> None:
    """The shared fields a typed request sets; zeros, empty strings and unset optionals mean
    "the model's default" and are left to the worker, which knows the defaults."""
    if not request.model_id:
        raise InvalidArgument("is required", field="model_id")
    check_prompt(request.prompt)
    check_prompt(request.negative_prompt, "negative_prompt", required=False)
    for name in ("width", "height"):
        if getattr(request, name):
            check_side(getattr(request, name), name)
    if request.num_inference_steps:
        check_steps(request.num_inference_steps)
    if request.HasField("guidance_scale"):
        check_guidance(request.guidance_scale)
    if request.HasField("seed"):
        check_seed(request.seed)
    if request.HasField("preview_every"):
        check_preview_every(request.preview_every)
    check_image_url(request.image_url)
    if request.HasField("strength"):
        check_strength(request.strength)
        if request.image_url and request.num_inference_steps:
            check_strength_runs_a_step(request.num_inference_steps, request.strength)


def shared_request_fields(request: GenerationRequest) -> dict[str, Any]:
    """A typed request's shared fields as a params mapping: proto zeros, empty strings and
    unset optionals become None (the model's default); unset `preview_every` is 1 (the proto's
    documented default; 0 turns previews off). The init image is the caller's to fetch."""
    def optional(name: str) -> Any:
        return getattr(request, name) if request.HasField(name) else None

    return {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "width": request.width or None,
        "height": request.height or None,
        "num_inference_steps": request.num_inference_steps or None,
        "guidance_scale": optional("guidance_scale"),
        "seed": optional("seed"),
        "output_format": request.output_format or None,
        "preview_every": request.preview_every if request.HasField("preview_every") else 1,
        "strength": optional("strength"),
    }
