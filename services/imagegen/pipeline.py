"""Image generation compute: a diffusers Stable Diffusion pipeline run with per-step progress,
latent previews and cancellation, for one request or a batch of compatible ones.

Everything here is synchronous and meant for a worker thread. One `ImagePipeline` runs one
diffusers call at a time (diffusers pipelines and schedulers are stateful, not thread-safe).
"""
from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from genmesh.errors import Cancelled, GenmeshError, Internal
from genmesh.worker.diffusion import (DiffusersModel, StepCallback, StepEvent, load_init_image,
                                      num_timesteps)
from genmesh.worker.preview import latents_to_png, scheduler_noise_scale, should_preview

from .encode import EncodedImage, encode_image
from .params import SCHEDULERS, ImageDefaults, ImageParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageUsage:
    images: int
    megapixels: float  # images x width x height / 1e6


@dataclass(frozen=True)
class ImageResult:
    images: tuple[EncodedImage, ...]
    seed: int  # image i was generated with seed + i
    steps: int  # denoising steps run (fewer than requested for image-to-image)
    usage: ImageUsage
    inference_time_seconds: float  # the pipeline call that produced it (shared in a batch)


@dataclass
class GenerationRequest:
    """One request's part of a pipeline call.

    `on_drop` is told as soon as the request leaves a running batch early (cancelled, or its
    `on_step` raised), from the compute thread, so its caller need not wait for the batch.
    """

    params: ImageParams
    on_step: StepCallback | None = None
    cancel: threading.Event | None = None
    on_drop: Callable[[BaseException], None] | None = None


BatchKey = tuple[Any, ...]


def batch_key(params: ImageParams) -> BatchKey:
    """Requests with equal keys can share one pipeline call: same latent shape and schedule.

    Prompts, negative prompts, seeds, image counts, init images, output formats and preview
    cadence may all differ inside a batch.
    """
    strength = params.strength if params.mode == "img2img" else None
    return (params.mode, params.width, params.height, params.num_inference_steps,
            params.guidance_scale, params.scheduler, strength)


def make_scheduler(name: str | None, base_config: Any) -> Any:
    """A fresh scheduler of the named sampler (None: the model's own) on the model's training
    schedule. Fresh per call: schedulers carry state (step index, multistep solver history)."""
    import diffusers

    class_name, overrides = SCHEDULERS[name] if name else (base_config["_class_name"], {})
    return getattr(diffusers, class_name).from_config(base_config, **overrides)


def generators(seed: int, count: int) -> list[torch.Generator]:
    # CPU generators: the same seed draws the same noise whatever device runs the UNet, and one
    # generator per image keeps an image's noise independent of what else is in its batch.
    return [torch.Generator("cpu").manual_seed(seed + i) for i in range(count)]


class ImagePipeline(DiffusersModel):
    """A loaded text-to-image model, also serving image-to-image from the same weights.

    Loads any diffusers text-to-image directory through `AutoPipelineForText2Image` (SD 1.x/2.x,
    SD-Turbo, SDXL...); latent previews need a 4-channel UNet latent space and are skipped
    for other latent layouts (e.g. FLUX's packed latents).
    """

    diffusers_class = "AutoPipelineForText2Image"

    def __init__(self, pipe: Any) -> None:
        self._txt2img = pipe
        self._img2img: Any | None = None
        self._scheduler_config = pipe.scheduler.config
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return self._txt2img.device

    def defaults(self) -> ImageDefaults:
        """The model's native resolution (denoiser sample size x VAE factor)."""
        denoiser = getattr(self._txt2img, "unet", None) or self._txt2img.transformer
        side = int(denoiser.config.sample_size) * self._txt2img.vae_scale_factor
        return ImageDefaults(width=side, height=side)

    @property
    def scheduler_name(self) -> str:
        """The diffusers class of the sampler the model ships with (used when none is asked)."""
        return str(self._scheduler_config["_class_name"])

    def generate(self, params: ImageParams, *, on_step: StepCallback | None = None,
                 cancel: threading.Event | None = None) -> ImageResult:
        """Run one request; raises Cancelled within one step of `cancel` being set."""
        outcome = self.run_batch([GenerationRequest(params.with_seed(), on_step, cancel)])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def run_batch(self, requests: Sequence[GenerationRequest]
                  ) -> list[ImageResult | GenmeshError]:
        """Run compatible requests (equal `batch_key`, seeds set) as one pipeline call.

        Each request gets its own step events, previews, images and cancellation; a request
        that is cancelled leaves the batch (its outcome is Cancelled) and the rest finish.
        Errors outside any one request (e.g. out of memory) propagate to the caller.
        """
        if not requests:
            return []
        key = batch_key(requests[0].params)
        for request in requests:
            if batch_key(request.params) != key or request.params.seed is None:
                raise ValueError("a batch needs equal batch keys and resolved seeds")
        batch = _Batch(requests)
        inits: dict[int, Image.Image] = {}
        for i, request in enumerate(requests):
            p = request.params
            try:
                if request.cancel is not None and request.cancel.is_set():
                    raise Cancelled("cancelled before it started")
                if p.image is not None:
                    inits[i] = load_init_image(p.image, p.width, p.height)
            except GenmeshError as exc:
                batch.drop(i, exc)
        if not batch.live:
            return batch.outcomes()
        batch.assign_offsets()
        started = time.perf_counter()
        with self._lock:
            pipe, kwargs = self._prepare([requests[i] for i in batch.live],
                                         [inits.get(i) for i in batch.live])
            try:
                images = pipe(**kwargs, callback_on_step_end=batch.on_step_end,
                              callback_on_step_end_tensor_inputs=["latents"]).images
            except _AllDropped:
                return batch.outcomes()
        elapsed = time.perf_counter() - started
        for i in list(batch.live):
            request = requests[i]
            if request.cancel is not None and request.cancel.is_set():
                batch.drop(i, Cancelled(f"cancelled after step {batch.total} of {batch.total}"))
                continue
            p = request.params
            start = batch.offsets[i]
            encoded = tuple(encode_image(images[start + j], p.output_format, seed=p.seed + j)
                            for j in range(p.num_images))
            batch.results[i] = ImageResult(
                images=encoded, seed=p.seed, steps=batch.total, inference_time_seconds=elapsed,
                usage=ImageUsage(images=p.num_images,
                                 megapixels=p.num_images * p.width * p.height / 1e6))
        return batch.outcomes()

    def _prepare(self, requests: Sequence[GenerationRequest],
                 init_images: Sequence[Image.Image | None]) -> tuple[Any, dict[str, Any]]:
        first = requests[0].params
        prompts: list[str] = []
        negatives: list[str] = []
        gens: list[torch.Generator] = []
        inits: list[Image.Image] = []
        for request, init in zip(requests, init_images):
            p = request.params
            prompts += [p.prompt] * p.num_images
            negatives += [p.negative_prompt] * p.num_images
            gens += generators(p.seed, p.num_images)
            if init is not None:
                inits += [init] * p.num_images
        kwargs: dict[str, Any] = {
            "prompt": prompts, "generator": gens,
            "num_inference_steps": first.num_inference_steps,
            "guidance_scale": first.guidance_scale, "output_type": "pil",
        }
        if first.mode == "img2img":
            pipe = self._img2img_pipe()
            kwargs.update(image=inits, strength=first.strength)
        else:
            pipe = self._txt2img
            kwargs.update(width=first.width, height=first.height)
        if "negative_prompt" in inspect.signature(pipe.__call__).parameters:
            kwargs["negative_prompt"] = negatives
        pipe.scheduler = make_scheduler(first.scheduler, self._scheduler_config)
        return pipe, kwargs

    def _img2img_pipe(self) -> Any:
        if self._img2img is None:
            from diffusers import AutoPipelineForImage2Image

            # Same modules, no second copy of the weights.
            self._img2img = AutoPipelineForImage2Image.from_pipe(self._txt2img)
            self._img2img.set_progress_bar_config(disable=True)
        return self._img2img


class _AllDropped(Exception):
    """Raised from the step callback to stop a pipeline call nobody is waiting for any more."""


@dataclass
class _Batch:
    """Per-request bookkeeping for one pipeline call: image offsets, liveness, outcomes."""

    requests: Sequence[GenerationRequest]
    offsets: dict[int, int] = field(default_factory=dict)  # request -> its first row
    live: list[int] = field(default_factory=list)
    results: dict[int, ImageResult | GenmeshError] = field(default_factory=dict)
    total: int = 0

    def __post_init__(self) -> None:
        self.live = list(range(len(self.requests)))

    def assign_offsets(self) -> None:
        """Rows of the pipeline call, in order, for the requests live when it starts."""
        offset = 0
        for i in self.live:
            self.offsets[i] = offset
            offset += self.requests[i].params.num_images

    def drop(self, i: int, error: GenmeshError) -> None:
        self.live.remove(i)
        self.results[i] = error
        on_drop = self.requests[i].on_drop
        if on_drop is not None:
            on_drop(error)

    def outcomes(self) -> list[ImageResult | GenmeshError]:
        return [self.results[i] for i in range(len(self.requests))]

    def on_step_end(self, pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        step, self.total = i + 1, num_timesteps(pipe)
        latents = tensors["latents"]
        can_preview = latents.ndim == 4 and latents.shape[1] == 4  # UNet latents, SD VAE
        scale: float | None = None
        for index in list(self.live):
            request = self.requests[index]
            p = request.params
            previews: tuple[bytes, ...] = ()
            if can_preview and should_preview(step, self.total, p.preview_every):
                scale = scale if scale is not None else scheduler_noise_scale(pipe.scheduler)
                start = self.offsets[index]
                previews = tuple(latents_to_png(latents[start + j], noise_scale=scale)
                                 for j in range(p.num_images))
            try:
                if request.on_step is not None:
                    request.on_step(StepEvent(step=step, total=self.total, previews=previews))
            except GenmeshError as exc:
                self.drop(index, exc)
                continue
            except Exception as exc:  # noqa: BLE001 - a consumer bug must not fail its batch
                log.exception("on_step callback failed; dropping request from batch")
                self.drop(index, Internal(f"progress consumer failed: {exc}"))
                continue
            if request.cancel is not None and request.cancel.is_set():
                self.drop(index, Cancelled(f"cancelled at step {step} of {self.total}"))
        if not self.live:
            raise _AllDropped
        return {}
