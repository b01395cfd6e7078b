"""The videogen worker over gRPC: its server in this process on the tiny AnimateDiff for events,
formats, determinism, errors, cancellation and image-to-video, and once behind the router."""
from __future__ import annotations

import asyncio
import base64
import io
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2
from PIL import Image

from genmesh import blobstore
from genmesh.models import build
from genmesh.rpc import KEY_ID_KEY
from genmesh.services.videogen import pipeline as video_pipeline
from genmesh.services.videogen.server import VideoGenComponent
from genmesh.settings import Settings
from genmesh.v1 import router_pb2, router_pb2_grpc, videogen_pb2, videogen_pb2_grpc
from tests.conftest import Infra, serve_in_process, start_mesh

pytestmark = pytest.mark.asyncio(loop_scope="session")

SIGNING_SECRET = "test-signing-secret"  # the one start_mesh gives its services
TINY_T2V = "genmesh/tiny-t2v"
KEY_ID = "key-videogen-test"


@dataclass
class Worker:
    component: VideoGenComponent
    stub: videogen_pb2_grpc.VideoGenStub


@pytest.fixture(scope="module")
def built_models(models_dir: Path) -> Path:
    build.build_missing(models_dir, [TINY_T2V])
    return models_dir


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def worker(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Worker]:
    """The videogen component's gRPC server in this process; no NATS, so no heartbeats."""
    settings = Settings(models_dir=built_models, data_dir=tmp_path_factory.mktemp("videogen"),
                        nats_url=None, signing_secret=SIGNING_SECRET, torch_threads=1,
                        host="127.0.0.1", port=0)
    component = VideoGenComponent(settings)
    async with serve_in_process(component) as channel:
        yield Worker(component, videogen_pb2_grpc.VideoGenStub(channel))


def request(**fields: Any) -> videogen_pb2.GenerateVideoRequest:
    base: dict[str, Any] = dict(model_id=TINY_T2V, prompt="waves on a beach", num_frames=4,
                                fps=8, num_inference_steps=2, seed=3, inline=True)
    return videogen_pb2.GenerateVideoRequest(**{**base, **fields})


async def generate(worker: Worker, **fields: Any) -> list[videogen_pb2.GenerateVideoEvent]:
    return [e async for e in worker.stub.GenerateVideo(request(**fields),
                                                       metadata=((KEY_ID_KEY, KEY_ID),))]


def cases(events: list[Any]) -> list[str]:
    return [e.WhichOneof("event") for e in events]


def mp4_info(data: bytes) -> tuple[int, Fraction, tuple[int, int], str]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.average_rate, (stream.width, stream.height), stream.codec_context.name


def png_data_uri(size: tuple[int, int], color: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


async def expect_invalid(call: Any, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [e async for e in call]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert field in err.value.details()
    assert ("genmesh-field", field) in tuple(err.value.trailing_metadata())


async def assert_still_serving(worker: Worker) -> None:
    events = await generate(worker, num_inference_steps=1, num_frames=2, preview_every=0)
    assert cases(events)[-1] == "result" and events[-1].result.num_frames == 2


async def wait_for(condition: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


# --- events and formats -------------------------------------------------------------------------

async def test_progress_previews_frames_then_usage_and_an_mp4_of_the_asked_shape(
        worker: Worker) -> None:
    events = await generate(worker, num_inference_steps=3, preview_every=2, num_frames=6,
                            fps=12, width=96, height=64, inline=False)

    kinds = cases(events)
    assert kinds[-2:] == ["usage", "result"] and kinds.count("result") == 1
    denoising = [e.progress for e in events if e.progress.stage == "denoising"]
    assert [(p.step, p.total_steps) for p in denoising] == [(1, 3), (2, 3), (3, 3)]
    assert [e.preview.step for e in events if e.HasField("preview")] == [1, 3]  # ceil(3 / 2)
    frames = [e.frame for e in events if e.HasField("frame")]
    assert [f.index for f in frames] == list(range(6))
    assert all(Image.open(io.BytesIO(f.image.data)).size == (96, 64) for f in frames)
    # Frames arrive after denoising, each with its decoding progress.
    assert kinds.index("frame") > max(i for i, e in enumerate(events)
                                      if e.progress.stage == "denoising")
    assert [e.progress.step for e in events if e.progress.stage == "decoding"] == list(range(1, 7))
    assert [(i.unit, i.quantity) for i in events[-2].usage.items] == [
        ("video_seconds", pytest.approx(0.5))]

    result = events[-1].result
    assert (result.num_frames, result.fps, result.duration_seconds) == (6, 12, pytest.approx(0.5))
    video = result.video
    assert video.url and not video.data and video.content_type == "video/mp4"
    assert (video.width, video.height, video.num_frames, video.fps) == (96, 64, 6, 12)
    key = worker.component.store.key_from_url(video.url)
    assert key is not None and key.startswith(f"{KEY_ID}/videos/")
    blob = await worker.component.store.get(key)
    assert len(blob.data) == video.size_bytes
    assert mp4_info(blob.data) == (6, 12, (96, 64), "h264")


@pytest.mark.parametrize(("fmt", "content_type"), [("gif", "image/gif"),
                                                   ("webp", "image/webp")])
async def test_animated_image_formats_inline(worker: Worker, fmt: str, content_type: str) -> None:
    video = (await generate(worker, output_format=fmt, num_frames=5, fps=10))[-1].result.video
    assert video.content_type == content_type and video.data and not video.url
    with Image.open(io.BytesIO(video.data)) as anim:
        assert anim.n_frames == 5 and anim.size == (64, 64)


async def test_model_defaults_fill_unset_fields(worker: Worker) -> None:
    result = (await generate(worker, num_frames=0, fps=0, num_inference_steps=1))[-1].result
    # genmesh/tiny-t2v's catalog defaults: 8 frames at 8 fps, 64x64.
    assert (result.num_frames, result.fps, result.video.width) == (8, 8, 64)


async def test_same_seed_same_frames_through_the_service(worker: Worker) -> None:
    def frames(events: list[videogen_pb2.GenerateVideoEvent]) -> list[bytes]:
        return [e.frame.image.data for e in events if e.HasField("frame")]

    first, again, other = [await generate(worker, seed=seed) for seed in (5, 5, 6)]
    assert frames(first) == frames(again)
    assert frames(first) != frames(other)
    assert (first[-1].result.seed, other[-1].result.seed) == (5, 6)


# --- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "field"), [
    ({"prompt": "  "}, "prompt"),
    ({"num_frames": 241}, "num_frames"),
    ({"fps": 61.0}, "fps"),
    ({"fps": float("nan")}, "fps"),
    ({"width": 65}, "width"),
    ({"num_inference_steps": -1}, "num_inference_steps"),
    ({"output_format": "avi"}, "output_format"),
    ({"strength": 0.0}, "strength"),
    ({"image_url": "file:///etc/passwd"}, "image_url"),
    ({"image_url": "data:image/png;base64,AAAA"}, "image_url"),
])
async def test_bad_parameters_are_invalid_argument_and_the_worker_keeps_serving(
        worker: Worker, fields: dict[str, Any], field: str) -> None:
    await expect_invalid(worker.stub.GenerateVideo(request(**fields)), field)
    await assert_still_serving(worker)


@pytest.mark.parametrize("model_id", ["nobody/nothing", "genmesh/tiny-sd"])
async def test_a_model_this_worker_does_not_serve_is_not_found(worker: Worker,
                                                               model_id: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [e async for e in worker.stub.GenerateVideo(request(model_id=model_id))]
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and model_id in err.value.details()


async def test_absent_hub_weights_are_failed_precondition_naming_the_directory(
        worker: Worker, built_models: Path) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [e async for e in worker.stub.GenerateVideo(request(model_id="THUDM/CogVideoX-2b"))]
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert str(built_models / "THUDM/CogVideoX-2b") in err.value.details()
    await assert_still_serving(worker)


# --- cancellation -------------------------------------------------------------------------------

async def test_cancel_mid_denoising_stops_compute_within_one_step(
        worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    await assert_still_serving(worker)  # loaded, so the spies see only the call below
    steps_run: list[int] = []
    steps_after_cancel: list[int] = []
    finished = threading.Event()
    on_step_end, generate_video = (video_pipeline._Progress.on_step_end,
                                   video_pipeline.VideoPipeline.generate)

    def spy_step(self: Any, pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> Any:
        steps_run.append(i + 1)
        if self.cancel.is_set():
            steps_after_cancel.append(i + 1)
        return on_step_end(self, pipe, i, t, tensors)

    def spy_generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return generate_video(self, *args, **kwargs)
        finally:
            finished.set()

    monkeypatch.setattr(video_pipeline._Progress, "on_step_end", spy_step)
    monkeypatch.setattr(video_pipeline.VideoPipeline, "generate", spy_generate)
    call = worker.stub.GenerateVideo(request(num_inference_steps=150, preview_every=0))
    async for event in call:
        if event.progress.stage == "denoising":
            break
    call.cancel()
    assert await asyncio.to_thread(finished.wait, 60)
    # At most the step running when the cancel arrived completed after it.
    assert len(steps_after_cancel) <= 1 and steps_run[-1] < 150
    assert steps_after_cancel in ([], steps_run[-1:])
    await wait_for(lambda: not worker.component.runtime.running)
    assert worker.component.runtime.cache.entries[TINY_T2V].in_flight == 0
    monkeypatch.undo()
    await assert_still_serving(worker)


# --- image-to-video -----------------------------------------------------------------------------

async def test_image_to_video_from_a_data_uri(worker: Worker) -> None:
    red = png_data_uri((80, 64), (200, 30, 30))
    events = await generate(worker, image_url=red, strength=0.5, num_inference_steps=4,
                            num_frames=3)
    # int(4 * 0.5) = 2 denoising steps from the still; the size follows the image.
    assert [e.progress.total_steps for e in events if e.progress.stage == "denoising"] == [2, 2]
    result = events[-1].result
    assert (result.video.width, result.video.height, result.num_frames) == (80, 64, 3)
    blue = await generate(worker, image_url=png_data_uri((80, 64), (30, 30, 200)), strength=0.5,
                          num_inference_steps=4, num_frames=3)
    assert result.video.data != blue[-1].result.video.data


# --- through the router -------------------------------------------------------------------------

def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


async def test_through_the_router(infra: Infra, built_models: Path, tmp_path: Path) -> None:
    mesh = await start_mesh(infra, tmp_path, ["router", "videogen"], models_dir=built_models)
    try:
        async with mesh.channel() as channel:
            router = router_pb2_grpc.RouterStub(channel)
            response = await router.Run(router_pb2.RunRequest(model_id=TINY_T2V, input=struct(
                {"prompt": "a comet", "seed": 2, "num_frames": 4, "fps": 8,
                 "num_inference_steps": 1})), metadata=mesh.metadata)
            video = response.output["video"]
            assert (video["num_frames"], video["fps"], response.output["seed"]) == (4, 8, 2)
            store = blobstore.open_store(Settings(data_dir=tmp_path,
                                                  signing_secret=SIGNING_SECRET))
            key = store.key_from_url(video["url"])
            assert key is not None and not key.startswith("anonymous/")
            assert mp4_info((await store.get(key)).data)[:2] == (4, 8)
            assert [(i.unit, i.quantity) for i in response.usage.items] == [
                ("video_seconds", pytest.approx(0.5))]
            for data, field in (({"prompt": "x", "fps": 120}, "fps"),
                                ({"prompt": "x", "output_format": "avi"}, "output_format")):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await router.Submit(router_pb2.SubmitRequest(model_id=TINY_T2V,
                                                                 input=struct(data)),
                                        metadata=mesh.metadata)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert ("genmesh-field", field) in tuple(err.value.trailing_metadata())
    finally:
        await mesh.supervisor.stop()
