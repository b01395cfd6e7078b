"""Video generation compute: a diffusers AnimateDiff pipeline run with per-step progress, latent
previews, cancellation, and frames handed out one by one as the VAE decodes them.

Synchronous, for a worker thread; one `VideoPipeline` runs one call at a time.
"""
from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from genmesh.errors import Cancelled
from genmesh.worker.diffusion import (DiffusersModel, StepCallback, StepEvent, load_init_image,
                                      num_timesteps)
from genmesh.worker.preview import latents_to_png, scheduler_noise_scale, should_preview

from .encode import EncodedVideo, encode_video
from .params import VideoDefaults, VideoParams

FrameCallback = Callable[[int, bytes], None]  # (frame index, PNG bytes)


@dataclass(frozen=True)
class VideoUsage:
    videos: int
    seconds: float  # num_frames / fps
    frames: int
    megapixels: float  # frames x width x height / 1e6


@dataclass(frozen=True)
class VideoResult:
    video: EncodedVideo
    seed: int
    steps: int  # denoising steps run (fewer than requested for image-to-video)
    usage: VideoUsage
    inference_time_seconds: float  # denoising and decoding, not encoding


class VideoPipeline(DiffusersModel):
    """A loaded AnimateDiff model: text-to-video, and image-to-video from the same weights
    (video-to-video on a still clip of the init image)."""

    diffusers_class = "AnimateDiffPipeline"

    def __init__(self, pipe: Any) -> None:
        self._txt2vid = pipe
        self._img2vid: Any | None = None
        self._scheduler_config = pipe.scheduler.config
        self._lock = threading.Lock()
        self._free_noise = False  # whether the shared UNet's motion blocks are FreeNoise ones

    @property
    def context_frames(self) -> int:
        """Frames the motion module attends over at once (its positional table, 32 for the
        released AnimateDiff adapters). Longer videos are sampled with FreeNoise: overlapping
        windows of this length, blended, with shuffled repeating noise."""
        return int(self._txt2vid.unet.config.motion_max_seq_length)

    def defaults(self) -> VideoDefaults:
        side = int(self._txt2vid.unet.config.sample_size) * self._txt2vid.vae_scale_factor
        return VideoDefaults(width=side, height=side, num_frames=min(16, self.context_frames))

    def generate(self, params: VideoParams, *, on_step: StepCallback | None = None,
                 on_frame: FrameCallback | None = None,
                 cancel: threading.Event | None = None) -> VideoResult:
        """Generate one video; raises Cancelled within one step (or one frame) of `cancel`."""
        params = params.with_seed()
        cancel = cancel if cancel is not None else threading.Event()
        if cancel.is_set():
            raise Cancelled("cancelled before it started")
        started = time.perf_counter()
        with self._lock:
            pipe, kwargs = self._prepare(params)
            progress = _Progress(params, on_step, cancel)
            latents = pipe(**kwargs, output_type="latent",
                           callback_on_step_end=progress.on_step_end,
                           callback_on_step_end_tensor_inputs=["latents"]).frames
            frames = self._decode(latents, on_frame, cancel)
        elapsed = time.perf_counter() - started
        video = encode_video(frames, params.output_format, fps=params.fps)
        return VideoResult(
            video=video, seed=params.seed, steps=progress.total, inference_time_seconds=elapsed,
            usage=VideoUsage(videos=1, seconds=video.duration_seconds, frames=video.num_frames,
                             megapixels=video.num_frames * video.width * video.height / 1e6))

    def _prepare(self, params: VideoParams) -> tuple[Any, dict[str, Any]]:
        assert params.seed is not None
        kwargs: dict[str, Any] = {
            "prompt": params.prompt, "negative_prompt": params.negative_prompt,
            "num_inference_steps": params.num_inference_steps,
            "guidance_scale": params.guidance_scale, "width": params.width,
            "height": params.height,
            # CPU generator: the same seed gives the same noise on any device.
            "generator": torch.Generator("cpu").manual_seed(params.seed),
        }
        if params.image is not None:
            still = load_init_image(params.image, params.width, params.height)
            pipe = self._img2vid_pipe()
            kwargs.update(video=[still] * params.num_frames, strength=params.strength)
        else:
            pipe = self._txt2vid
            kwargs.update(num_frames=params.num_frames)
        # A fresh sampler per call: schedulers carry state (step index, solver history).
        pipe.scheduler = type(pipe.scheduler).from_config(self._scheduler_config)
        self._set_free_noise(pipe, params.num_frames > self.context_frames)
        return pipe, kwargs

    def _set_free_noise(self, pipe: Any, on: bool) -> None:
        # Switching rebuilds the motion blocks, so the UNet stays in the last mode used;
        # the pipeline object's own flag must agree with the blocks on every call.
        if on:
            pipe.enable_free_noise(context_length=min(16, self.context_frames), context_stride=4)
        elif self._free_noise or pipe.free_noise_enabled:
            pipe.disable_free_noise()
        self._free_noise = on

    def _img2vid_pipe(self) -> Any:
        if self._img2vid is None:
            from diffusers import AnimateDiffVideoToVideoPipeline

            self._img2vid = AnimateDiffVideoToVideoPipeline(**self._txt2vid.components)
            self._img2vid.set_progress_bar_config(disable=True)
        return self._img2vid

    @torch.no_grad()
    def _decode(self, latents: torch.Tensor, on_frame: FrameCallback | None,
                cancel: threading.Event) -> list[Image.Image]:
        """Decode (1, C, F, h, w) latents frame by frame, handing each frame out as it lands."""
        pipe = self._txt2vid
        frames: list[Image.Image] = []
        for index in range(latents.shape[2]):
            if cancel.is_set():
                raise Cancelled(f"cancelled while decoding frame {index + 1} of "
                                f"{latents.shape[2]}")
            z = latents[:, :, index] / pipe.vae.config.scaling_factor
            pixels = pipe.vae.decode(z.to(pipe.vae.dtype)).sample.float()
            frame = pipe.video_processor.postprocess(pixels, output_type="pil")[0]
            frames.append(frame)
            if on_frame is not None:
                buf = io.BytesIO()
                frame.save(buf, format="PNG")
                on_frame(index, buf.getvalue())
        return frames


class _Progress:
    """Step callback: progress events, first-frame previews, cancellation at step boundaries."""

    def __init__(self, params: VideoParams, on_step: StepCallback | None,
                 cancel: threading.Event) -> None:
        self.params, self.on_step, self.cancel = params, on_step, cancel
        self.total = 0

    def on_step_end(self, pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        step, self.total = i + 1, num_timesteps(pipe)
        if self.on_step is not None:
            previews: tuple[bytes, ...] = ()
            if should_preview(step, self.total, self.params.preview_every):
                latents = tensors["latents"]  # (batch, channels, frames, h, w)
                previews = (latents_to_png(latents[0, :, 0],
                                           noise_scale=scheduler_noise_scale(pipe.scheduler)),)
            self.on_step(StepEvent(step=step, total=self.total, previews=previews))
        if self.cancel.is_set():
            raise Cancelled(f"cancelled at step {step} of {self.total}")
        return {}
