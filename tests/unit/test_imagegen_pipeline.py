"""Image generation on the tiny Stable Diffusion that `genmesh/models/diffusion.py` builds:
progress and previews, determinism, validation, cancellation, batching, image-to-image."""
from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genmesh.errors import Cancelled, InvalidArgument, ModelUnavailable
from genmesh.models.diffusion import BUILDERS
from genmesh.services.imagegen.batching import ImageBatcher
from genmesh.services.imagegen.params import SCHEDULERS, ImageDefaults, ImageParams
from genmesh.services.imagegen.pipeline import GenerationRequest, ImagePipeline, ImageResult
from genmesh.worker.diffusion import StepEvent
from genmesh.worker.preview import PREVIEW_MAX_SIDE, latents_to_png, preview_count, should_preview

# CPU BLAS picks different kernels for different batch sizes, so a batched image may differ
# from the solo one by rounding: measured at most 1/255 per pixel on the tiny model.
BATCH_PIXEL_TOLERANCE = 2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # One thread: on a small shared machine, OpenMP threads contending for cores are slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("tiny-sd")
    BUILDERS["genmesh/tiny-sd"](path)
    yield path
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipeline(model_dir: Path) -> ImagePipeline:
    return ImagePipeline.from_pretrained(model_dir, device="cpu")


def params(**overrides: object) -> ImageParams:
    base: dict[str, object] = dict(prompt="a cat", width=64, height=64, num_inference_steps=3,
                                   seed=7)
    return ImageParams(**{**base, **overrides})


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def png_bytes(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def assert_same_images(a: ImageResult, b: ImageResult, tolerance: int = 0) -> None:
    assert len(a.images) == len(b.images)
    for x, y in zip(a.images, b.images):
        assert (x.width, x.height, x.seed) == (y.width, y.height, y.seed)
        assert int(np.abs(pixels(x.data) - pixels(y.data)).max()) <= tolerance


# --- tiny model ---------------------------------------------------------------------------------

def test_tiny_sd_build_is_deterministic(model_dir: Path, tmp_path: Path) -> None:
    BUILDERS["genmesh/tiny-sd"](tmp_path)

    def digest(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert digest(tmp_path) == digest(model_dir)
    assert (tmp_path / "model_index.json").is_file()
    assert list(tmp_path.glob("unet/*.safetensors"))


def test_missing_weights_is_model_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="model_index.json"):
        ImagePipeline.from_pretrained(tmp_path / "nothing-here")


def test_defaults_follow_the_model(pipeline: ImagePipeline) -> None:
    defaults = pipeline.defaults()
    assert (defaults.width, defaults.height, defaults.scheduler) == (64, 64, None)
    assert pipeline.scheduler_name == "EulerDiscreteScheduler"


# --- progress and previews ----------------------------------------------------------------------

@pytest.mark.parametrize(("total", "every", "expected"), [
    (5, 2, [1, 3, 5]), (4, 2, [1, 3]), (3, 1, [1, 2, 3]), (30, 10, [1, 11, 21]), (4, 9, [1]),
    (4, 0, []),
])
def test_preview_steps_are_one_then_every_k(total: int, every: int, expected: list[int]) -> None:
    steps = [s for s in range(1, total + 1) if should_preview(s, total, every)]
    assert steps == expected
    assert len(steps) == preview_count(total, every)


@pytest.mark.parametrize(("steps", "every"), [(5, 2), (3, 3)])
def test_progress_every_step_and_ceil_steps_over_k_previews(
        pipeline: ImagePipeline, steps: int, every: int) -> None:
    events: list[StepEvent] = []
    result = pipeline.generate(params(num_inference_steps=steps, preview_every=every,
                                      num_images=2), on_step=events.append)

    assert [(e.step, e.total) for e in events] == [(s, steps) for s in range(1, steps + 1)]
    with_previews = [e for e in events if e.previews]
    assert len(with_previews) == -(-steps // every)
    assert [e.step for e in with_previews] == list(range(1, steps + 1, every))
    for event in with_previews:
        assert len(event.previews) == 2  # one per image of the request
        preview = Image.open(io.BytesIO(event.previews[0]))
        assert preview.format == "PNG" and max(preview.size) <= PREVIEW_MAX_SIDE
    assert result.steps == steps


def test_no_previews_when_preview_every_is_zero(pipeline: ImagePipeline) -> None:
    events: list[StepEvent] = []
    pipeline.generate(params(preview_every=0), on_step=events.append)
    assert len(events) == 3 and not any(e.previews for e in events)


def test_previews_of_large_images_are_capped_at_64px() -> None:
    latents = torch.randn(4, 80, 40)  # a 640x320 image's latents
    preview = Image.open(io.BytesIO(latents_to_png(latents)))
    assert preview.size == (32, 64)


# --- determinism, formats, usage ----------------------------------------------------------------

def test_same_seed_same_bytes_different_seed_different(pipeline: ImagePipeline) -> None:
    a = pipeline.generate(params(seed=11))
    b = pipeline.generate(params(seed=11))
    c = pipeline.generate(params(seed=12))
    assert a.images[0].data == b.images[0].data
    assert a.images[0].data != c.images[0].data
    assert (a.seed, c.seed) == (11, 12)


def test_unset_seed_is_random_reported_and_reproducible(pipeline: ImagePipeline) -> None:
    first = pipeline.generate(params(seed=None))
    again = pipeline.generate(params(seed=first.seed))
    assert 0 <= first.seed < 2**32
    assert first.images[0].data == again.images[0].data


def test_image_i_of_a_request_uses_seed_plus_i(pipeline: ImagePipeline) -> None:
    pair = pipeline.generate(params(seed=20, num_images=2))
    second = pipeline.generate(params(seed=21))
    assert [im.seed for im in pair.images] == [20, 21]
    assert_same_images(ImageResult(pair.images[1:], 21, pair.steps, pair.usage, 0.0), second,
                       BATCH_PIXEL_TOLERANCE)


@pytest.mark.parametrize(("fmt", "content_type", "pil_format"), [
    ("png", "image/png", "PNG"), ("jpeg", "image/jpeg", "JPEG"), ("webp", "image/webp", "WEBP"),
])
def test_output_formats(pipeline: ImagePipeline, fmt: str, content_type: str,
                        pil_format: str) -> None:
    result = pipeline.generate(params(width=96, height=64, output_format=fmt,
                                      num_inference_steps=1))
    image = result.images[0]
    assert image.content_type == content_type
    decoded = Image.open(io.BytesIO(image.data))
    assert decoded.format == pil_format and decoded.size == (96, 64) == (image.width,
                                                                         image.height)


def test_usage_counts_images_and_megapixels(pipeline: ImagePipeline) -> None:
    result = pipeline.generate(params(width=128, height=64, num_images=3, num_inference_steps=1))
    assert result.usage.images == 3
    assert result.usage.megapixels == pytest.approx(3 * 128 * 64 / 1e6)
    assert result.inference_time_seconds > 0


def test_every_scheduler_runs(pipeline: ImagePipeline) -> None:
    outputs = {}
    for name in (None, *SCHEDULERS):
        result = pipeline.generate(params(scheduler=name, num_inference_steps=2))
        assert result.steps >= 2  # PNDM adds one warm-up step
        outputs[name] = result.images[0].data
    assert outputs[None] == outputs["euler"]  # the tiny model ships Euler
    assert outputs["euler"] != outputs["ddim"]  # the sampler really changed


# --- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "words"), [
    ("prompt", "", "required"),
    ("prompt", "x" * 2001, "2000"),
    ("prompt", 5, "string"),
    ("width", 100, "multiple of 8"),
    ("width", 32, "64..2048"),
    ("height", 4096, "64..2048"),
    ("num_inference_steps", 0, "1..150"),
    ("num_inference_steps", 151, "1..150"),
    ("num_inference_steps", True, "integer"),
    ("guidance_scale", 31, "[0, 30]"),
    ("guidance_scale", float("nan"), "number"),
    ("seed", -1, "0..4294967295"),
    ("num_images", 9, "1..8"),
    ("scheduler", "heun", "euler, euler_a, ddim, dpm++"),
    ("output_format", "gif", "png, jpeg, webp"),
    ("preview_every", -1, "0..150"),
    ("strength", 0, "(0, 1]"),
    ("strength", 1.5, "(0, 1]"),
    ("image", b"not an image", "readable image"),
])
def test_bad_parameters_are_rejected_naming_the_field(field: str, value: object,
                                                      words: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        params(**{field: value})
    assert info.value.field == field
    assert info.value.message.startswith(field)
    assert words in info.value.message


def test_strength_too_small_to_run_a_step_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as info:
        params(image=png_bytes((64, 64), (1, 2, 3)), num_inference_steps=2, strength=0.2)
    assert info.value.field == "strength"


def test_from_mapping_applies_defaults_and_rejects_unknown_fields() -> None:
    defaults = ImageDefaults(width=64, height=128, num_inference_steps=4, scheduler="ddim")
    built = ImageParams.from_mapping({"prompt": "a dog", "width": None}, defaults)
    assert (built.width, built.height, built.num_inference_steps, built.scheduler) == (
        64, 128, 4, "ddim")
    with pytest.raises(InvalidArgument) as info:
        ImageParams.from_mapping({"prompt": "a dog", "widht": 64}, defaults)
    assert info.value.field == "widht"
    with pytest.raises(InvalidArgument) as info:
        ImageParams.from_mapping({}, defaults)
    assert info.value.field == "prompt"


def test_from_mapping_sizes_img2img_from_the_init_image() -> None:
    built = ImageParams.from_mapping({"prompt": "x", "image": png_bytes((203, 97), (9, 9, 9))})
    assert (built.width, built.height) == (200, 96)


# --- cancellation -------------------------------------------------------------------------------

def test_cancel_during_generation_stops_within_one_step(pipeline: ImagePipeline) -> None:
    cancel = threading.Event()
    seen: list[int] = []

    def on_step(event: StepEvent) -> None:
        seen.append(event.step)
        if event.step == 2:
            cancel.set()

    with pytest.raises(Cancelled, match="step 2 of 6"):
        pipeline.generate(params(num_inference_steps=6), on_step=on_step, cancel=cancel)
    assert seen == [1, 2]


def test_cancel_from_another_thread_stops_at_the_next_step_boundary(
        pipeline: ImagePipeline) -> None:
    cancel, at_step_one, cancelled = threading.Event(), threading.Event(), threading.Event()
    seen: list[int] = []
    outcome: list[BaseException] = []

    def on_step(event: StepEvent) -> None:
        seen.append(event.step)
        if event.step == 1:
            at_step_one.set()
            cancelled.wait(timeout=30)  # hold step 1 open until the canceller has acted

    def run() -> None:
        try:
            pipeline.generate(params(num_inference_steps=6), on_step=on_step, cancel=cancel)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert at_step_one.wait(timeout=60)
    cancel.set()
    cancelled.set()
    worker.join(timeout=60)
    assert isinstance(outcome[0], Cancelled)
    assert seen == [1]


def test_cancelled_before_start_runs_nothing(pipeline: ImagePipeline) -> None:
    cancel = threading.Event()
    cancel.set()
    seen: list[StepEvent] = []
    with pytest.raises(Cancelled):
        pipeline.generate(params(), on_step=seen.append, cancel=cancel)
    assert seen == []


# --- batching -----------------------------------------------------------------------------------

BATCH = [dict(prompt="a cat", seed=5, num_images=2, preview_every=1),
         dict(prompt="a dog", seed=9, negative_prompt="blurry", output_format="jpeg"),
         dict(prompt="the red car", seed=11, preview_every=2)]


async def test_batched_requests_match_running_alone(pipeline: ImagePipeline) -> None:
    solo = [pipeline.generate(params(**p, scheduler="euler_a")) for p in BATCH]
    batcher = ImageBatcher(pipeline, window_s=30.0, max_batch_images=4)  # flushes when full
    events: list[list[StepEvent]] = [[] for _ in BATCH]
    batched = await asyncio.gather(*(
        batcher.submit(params(**p, scheduler="euler_a"), on_step=events[i].append)
        for i, p in enumerate(BATCH)))

    assert (batcher.stats.batches, batcher.stats.largest_batch, batcher.stats.images) == (1, 3, 4)
    for alone, together in zip(solo, batched):
        assert_same_images(alone, together, BATCH_PIXEL_TOLERANCE)
    assert batched[1].images[0].content_type == "image/jpeg"
    # Each request saw its own progress and its own preview cadence and image count.
    assert [[e.step for e in ev] for ev in events] == [[1, 2, 3]] * 3
    assert [[len(e.previews) for e in ev] for ev in events] == [[2, 2, 2], [0, 0, 0], [1, 0, 1]]
    await batcher.aclose()


async def test_cancelled_request_leaves_the_batch_and_the_others_finish(
        pipeline: ImagePipeline) -> None:
    solo = [pipeline.generate(params(**p, num_inference_steps=4)) for p in BATCH]
    batcher = ImageBatcher(pipeline, window_s=30.0, max_batch_images=4)
    cancel = threading.Event()
    seen: list[int] = []

    def on_step(event: StepEvent) -> None:
        seen.append(event.step)
        if event.step == 2:
            cancel.set()

    outcomes = await asyncio.gather(
        batcher.submit(params(**BATCH[0], num_inference_steps=4)),
        batcher.submit(params(**BATCH[1], num_inference_steps=4), on_step=on_step,
                       cancel=cancel),
        batcher.submit(params(**BATCH[2], num_inference_steps=4)),
        return_exceptions=True)

    assert batcher.stats.batches == 1
    assert isinstance(outcomes[1], Cancelled)
    assert seen == [1, 2]
    assert_same_images(solo[0], outcomes[0], BATCH_PIXEL_TOLERANCE)
    assert_same_images(solo[2], outcomes[2], BATCH_PIXEL_TOLERANCE)
    await batcher.aclose()


async def test_incompatible_requests_run_in_separate_batches(pipeline: ImagePipeline) -> None:
    batcher = ImageBatcher(pipeline, window_s=0.01, max_batch_images=8)
    small, wide = await asyncio.gather(batcher.submit(params()),
                                       batcher.submit(params(width=128)))
    assert batcher.stats.batches == 2
    assert (small.images[0].width, wide.images[0].width) == (64, 128)
    await batcher.aclose()


async def test_caller_going_away_cancels_its_request(pipeline: ImagePipeline) -> None:
    batcher = ImageBatcher(pipeline, window_s=0.0)
    started = asyncio.Event()
    cancel = threading.Event()
    task = asyncio.create_task(batcher.submit(params(num_inference_steps=50),
                                              on_step=lambda e: started.set(), cancel=cancel))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancel.is_set()
    # The batcher is free again: a new request completes.
    assert (await batcher.submit(params(num_inference_steps=1))).steps == 1
    await batcher.aclose()


# --- image-to-image -----------------------------------------------------------------------------

def test_image_to_image_runs_strength_fraction_of_steps(pipeline: ImagePipeline) -> None:
    init = png_bytes((90, 70), (220, 40, 40))  # not the output size: cover-fitted
    events: list[StepEvent] = []
    img2img = pipeline.generate(params(image=init, strength=0.5, num_inference_steps=4,
                                       preview_every=1, width=64, height=64),
                                on_step=events.append)
    again = pipeline.generate(params(image=init, strength=0.5, num_inference_steps=4,
                                     width=64, height=64))
    txt2img = pipeline.generate(params(num_inference_steps=4))

    assert img2img.steps == 2 and [e.total for e in events] == [2, 2]
    assert all(e.previews for e in events)
    assert (img2img.images[0].width, img2img.images[0].height) == (64, 64)
    assert img2img.images[0].data == again.images[0].data
    assert img2img.images[0].data != txt2img.images[0].data


def test_image_to_image_depends_on_the_init_image(pipeline: ImagePipeline) -> None:
    red = pipeline.generate(params(image=png_bytes((64, 64), (255, 0, 0)), strength=0.5))
    blue = pipeline.generate(params(image=png_bytes((64, 64), (0, 0, 255)), strength=0.5))
    assert red.images[0].data != blue.images[0].data


def test_a_bad_init_image_fails_only_its_own_request(pipeline: ImagePipeline) -> None:
    good = png_bytes((64, 64), (10, 200, 10))
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, format="JPEG")
    truncated = buf.getvalue()[: len(buf.getvalue()) * 6 // 10]  # passes the header check
    cancelled = threading.Event()
    cancelled.set()
    outcomes = pipeline.run_batch([
        GenerationRequest(params(image=good, strength=0.5, seed=1)),
        GenerationRequest(params(image=truncated, strength=0.5, seed=2)),
        GenerationRequest(params(image=good, strength=0.5, seed=3), cancel=cancelled),
    ])
    alone = pipeline.generate(params(image=good, strength=0.5, seed=1))
    assert isinstance(outcomes[0], ImageResult)
    assert_same_images(alone, outcomes[0], BATCH_PIXEL_TOLERANCE)
    assert isinstance(outcomes[1], InvalidArgument) and outcomes[1].field == "image"
    assert isinstance(outcomes[2], Cancelled)
