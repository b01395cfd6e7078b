"""Cheap previews of in-progress latents: a fixed linear map from SD latents to RGB, no VAE.

A 4x3 projection fitted to the SD 1.x VAE's decoder approximates the colours of a latent pixel
(the trick every SD UI uses for live previews); it costs microseconds where a VAE decode costs
as much as several steps. Previews are latent-resolution (1/8 of the image) and at most
`max_side` pixels on their longest side.
"""
from __future__ import annotations

import io

import torch
from PIL import Image

# Rows are latent channels, columns R, G, B (the widely used SD 1.x fit).
SD_LATENT_RGB = torch.tensor([
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
])

PREVIEW_MAX_SIDE = 64


def should_preview(step: int, total: int, every: int) -> bool:
    """Whether completed step `step` (1-based) of `total` gets a preview.

    Previews go out after steps 1, 1+k, 1+2k, ...: ceil(total / k) of them, the first as early
    as possible. `every=0` means never.
    """
    return every > 0 and 1 <= step <= total and (step - 1) % every == 0


def preview_count(total: int, every: int) -> int:
    return 0 if every <= 0 else -(-total // every)


def latents_to_image(latents: torch.Tensor, *, max_side: int = PREVIEW_MAX_SIDE,
                     noise_scale: float = 1.0) -> Image.Image:
    """One image's latents (4, h, w) -> an RGB PIL image of at most `max_side` px.

    `noise_scale` divides out the sampler's current noise level (sigma-parameterised samplers
    carry latents with std ~ sigma early on), so early previews are not saturated white noise.
    """
    x = latents.detach().to(device="cpu", dtype=torch.float32) / noise_scale
    factors = SD_LATENT_RGB if x.shape[0] == 4 else SD_LATENT_RGB[: x.shape[0]]
    rgb = torch.einsum("chw,cr->hwr", x, factors)
    pixels = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(pixels, mode="RGB")
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    return image


def latents_to_png(latents: torch.Tensor, *, max_side: int = PREVIEW_MAX_SIDE,
                   noise_scale: float = 1.0) -> bytes:
    buf = io.BytesIO()
    latents_to_image(latents, max_side=max_side, noise_scale=noise_scale).save(buf, format="PNG")
    return buf.getvalue()


def scheduler_noise_scale(scheduler: object) -> float:
    """sqrt(sigma^2 + 1) for sigma-parameterised samplers after their latest step, else 1.

    Only samplers whose latents start at std = sigma_max (init_noise_sigma > 1: Euler, LMS...)
    carry unnormalised latents; DDIM/PNDM/DPM-Solver latents are already variance-preserving.
    """
    init = getattr(scheduler, "init_noise_sigma", 1.0)
    if float(init) <= 1.0:
        return 1.0
    sigmas = getattr(scheduler, "sigmas", None)
    index = getattr(scheduler, "step_index", None)
    if sigmas is None or index is None or index >= len(sigmas):
        return 1.0
    sigma = float(sigmas[index])
    return (sigma * sigma + 1.0) ** 0.5
