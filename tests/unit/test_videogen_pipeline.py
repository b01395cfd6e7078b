"""Video generation on the tiny AnimateDiff that `genmesh/models/diffusion.py` builds: frames
streamed as decoded, previews, determinism, validation, cancellation, MP4/GIF/WebP output."""
from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch
from PIL import Image

from genmesh.errors import Cancelled, InvalidArgument, ModelUnavailable
from genmesh.models.diffusion import BUILDERS
from genmesh.worker.diffusion import StepEvent
from genmesh.services.videogen.params import VideoDefaults, VideoParams
from genmesh.services.videogen.pipeline import VideoPipeline


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VideoPipeline]:
    # One thread: on a small shared machine, OpenMP threads contending for cores are slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("tiny-t2v")
    BUILDERS["genmesh/tiny-t2v"](path)
    yield VideoPipeline.from_pretrained(path, device="cpu")
    torch.set_num_threads(threads)


def params(**overrides: object) -> VideoParams:
    base: dict[str, object] = dict(prompt="a cat walking", width=64, height=64, num_frames=6,
                                   fps=12, num_inference_steps=2, seed=3)
    return VideoParams(**{**base, **overrides})


def mp4_info(data: bytes) -> tuple[int, Fraction, tuple[int, int], str]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.average_rate, (stream.width, stream.height), stream.codec_context.name


def test_missing_weights_is_model_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable):
        VideoPipeline.from_pretrained(tmp_path)


def test_mp4_has_the_asked_frame_count_fps_and_size(pipeline: VideoPipeline) -> None:
    result = pipeline.generate(params(num_frames=6, fps=12, width=96, height=64))
    frames, rate, size, codec = mp4_info(result.video.data)
    assert (frames, rate, size, codec) == (6, 12, (96, 64), "h264")
    assert result.video.content_type == "video/mp4"
    assert result.video.duration_seconds == pytest.approx(0.5)
    assert result.usage.seconds == pytest.approx(6 / 12)
    assert result.usage.frames == 6


@pytest.mark.parametrize(("fmt", "content_type"), [("gif", "image/gif"),
                                                   ("webp", "image/webp")])
def test_animated_image_formats_have_every_frame(pipeline: VideoPipeline, fmt: str,
                                                 content_type: str) -> None:
    result = pipeline.generate(params(num_frames=5, fps=10, output_format=fmt))
    assert result.video.content_type == content_type
    with Image.open(io.BytesIO(result.video.data)) as anim:
        assert anim.n_frames == 5
        durations = []
        for i in range(anim.n_frames):
            anim.seek(i)
            anim.load()  # WebP fills in a frame's duration when it is decoded
            durations.append(anim.info["duration"])
    assert durations == [100] * 5


def test_frames_are_streamed_in_order_as_pngs(pipeline: VideoPipeline) -> None:
    frames: list[tuple[int, bytes]] = []
    pipeline.generate(params(num_frames=4), on_frame=lambda i, png: frames.append((i, png)))
    assert [i for i, _ in frames] == [0, 1, 2, 3]
    for _, png in frames:
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG" and image.size == (64, 64)


def test_progress_and_ceil_steps_over_k_previews(pipeline: VideoPipeline) -> None:
    events: list[StepEvent] = []
    result = pipeline.generate(params(num_inference_steps=5, preview_every=2),
                               on_step=events.append)
    assert [(e.step, e.total) for e in events] == [(s, 5) for s in range(1, 6)]
    assert [e.step for e in events if e.previews] == [1, 3, 5]  # ceil(5 / 2) previews
    preview = Image.open(io.BytesIO(events[0].previews[0]))
    assert preview.format == "PNG" and preview.size == (8, 8)  # the first frame's latents
    assert result.steps == 5


def test_same_seed_same_frames_different_seed_different(pipeline: VideoPipeline) -> None:
    def frames(seed: int) -> list[bytes]:
        out: list[bytes] = []
        pipeline.generate(params(seed=seed, num_frames=3), on_frame=lambda i, b: out.append(b))
        return out

    assert frames(5) == frames(5)
    assert frames(5) != frames(6)


def test_longer_than_the_motion_context_uses_free_noise(pipeline: VideoPipeline) -> None:
    assert pipeline.context_frames == 32
    long = pipeline.generate(params(num_frames=40, fps=24, num_inference_steps=1))
    short = pipeline.generate(params(num_frames=4, num_inference_steps=1))
    assert mp4_info(long.video.data)[:2] == (40, 24)
    assert long.video.duration_seconds == pytest.approx(40 / 24)
    assert mp4_info(short.video.data)[0] == 4  # and back to plain sampling


def test_image_to_video_starts_from_the_still(pipeline: VideoPipeline) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (80, 64), (200, 30, 30)).save(buf, format="PNG")
    events: list[StepEvent] = []
    result = pipeline.generate(params(image=buf.getvalue(), strength=0.5, num_inference_steps=4,
                                      num_frames=4), on_step=events.append)
    assert result.steps == 2 and [e.total for e in events] == [2, 2]
    assert mp4_info(result.video.data)[0] == 4


def test_cancel_during_denoising_stops_within_one_step(pipeline: VideoPipeline) -> None:
    cancel = threading.Event()
    seen: list[int] = []
    frames: list[int] = []

    def on_step(event: StepEvent) -> None:
        seen.append(event.step)
        if event.step == 2:
            cancel.set()

    with pytest.raises(Cancelled, match="step 2 of 5"):
        pipeline.generate(params(num_inference_steps=5), on_step=on_step,
                          on_frame=lambda i, b: frames.append(i), cancel=cancel)
    assert seen == [1, 2] and frames == []


def test_cancel_during_decoding_stops_within_one_frame(pipeline: VideoPipeline) -> None:
    cancel = threading.Event()
    frames: list[int] = []

    def on_frame(index: int, png: bytes) -> None:
        frames.append(index)
        if index == 1:
            cancel.set()

    with pytest.raises(Cancelled, match="frame 3 of 6"):
        pipeline.generate(params(num_frames=6), on_frame=on_frame, cancel=cancel)
    assert frames == [0, 1]


@pytest.mark.parametrize(("field", "value", "words"), [
    ("prompt", "  ", "required"),
    ("num_frames", 0, "1..240"),
    ("num_frames", 241, "1..240"),
    ("fps", 0, "[1, 60]"),
    ("fps", 61, "[1, 60]"),
    ("width", 65, "multiple of 8"),
    ("num_inference_steps", 200, "1..150"),
    ("guidance_scale", -1, "[0, 30]"),
    ("seed", 2**32, "0..4294967295"),
    ("output_format", "avi", "mp4, gif, webp"),
    ("preview_every", 1.5, "integer"),
    ("strength", 0, "(0, 1]"),
])
def test_bad_parameters_are_rejected_naming_the_field(field: str, value: object,
                                                      words: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        params(**{field: value})
    assert info.value.field == field
    assert words in info.value.message


def test_from_mapping_applies_model_defaults() -> None:
    defaults = VideoDefaults(width=64, height=64, num_frames=8, fps=8, num_inference_steps=3)
    built = VideoParams.from_mapping({"prompt": "waves", "fps": 24}, defaults)
    assert (built.width, built.num_frames, built.fps, built.num_inference_steps) == (
        64, 8, 24, 3)
    assert built.duration_seconds == pytest.approx(8 / 24)
    with pytest.raises(InvalidArgument) as info:
        VideoParams.from_mapping({"prompt": "waves", "frames": 8}, defaults)
    assert info.value.field == "frames"
