"""The imagegen worker over gRPC: its server in this process on the tiny Stable Diffusion for
events, determinism, errors, cancellation, image-to-image and batching, and once behind the
router (real NATS and Postgres) as clients reach it."""
from __future__ import annotations

import asyncio
import base64
import io
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2
from PIL import Image

from genmesh import blobstore
from genmesh.errors import ModelUnavailable, Unavailable
from genmesh.models import build
from genmesh.rpc import KEY_ID_KEY
from genmesh.services.imagegen import pipeline as image_pipeline
from genmesh.services.imagegen.params import ImageParams
from genmesh.services.imagegen.server import ImageGenComponent, LoadedImageModel
from genmesh.settings import Settings
from genmesh.v1 import imagegen_pb2, imagegen_pb2_grpc, router_pb2, router_pb2_grpc
from tests.conftest import Infra, serve_in_process, start_mesh

pytestmark = pytest.mark.asyncio(loop_scope="session")

SIGNING_SECRET = "test-signing-secret"  # the one start_mesh gives its services
TINY_SD, TINY_IMG2IMG = "genmesh/tiny-sd", "genmesh/tiny-sd/image-to-image"
KEY_ID = "key-imagegen-test"


@dataclass
class Worker:
    component: ImageGenComponent
    stub: imagegen_pb2_grpc.ImageGenStub

    def loaded(self) -> LoadedImageModel:
        return self.component.runtime.cache.entries[TINY_SD].value


@pytest.fixture(scope="module")
def built_models(models_dir: Path) -> Path:
    build.build_missing(models_dir, [TINY_SD])
    return models_dir


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def worker(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Worker]:
    """The imagegen component's gRPC server in this process; no NATS, so no heartbeats."""
    settings = Settings(models_dir=built_models, data_dir=tmp_path_factory.mktemp("imagegen"),
                        nats_url=None, signing_secret=SIGNING_SECRET, torch_threads=1,
                        host="127.0.0.1", port=0)
    component = ImageGenComponent(settings)
    async with serve_in_process(component) as channel:
        yield Worker(component, imagegen_pb2_grpc.ImageGenStub(channel))


def request(**fields: Any) -> imagegen_pb2.GenerateImageRequest:
    base: dict[str, Any] = dict(model_id=TINY_SD, prompt="a red cat", num_inference_steps=2,
                                seed=7, inline=True)
    return imagegen_pb2.GenerateImageRequest(**{**base, **fields})


async def generate(worker: Worker, **fields: Any) -> list[imagegen_pb2.GenerateImageEvent]:
    return [e async for e in worker.stub.GenerateImage(request(**fields),
                                                       metadata=((KEY_ID_KEY, KEY_ID),))]


def cases(events: list[Any]) -> list[str]:
    return [e.WhichOneof("event") for e in events]


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
    events = await generate(worker, num_inference_steps=1, preview_every=0)
    assert cases(events)[-1] == "result" and len(events[-1].result.images) == 1


async def wait_for(condition: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


# --- events -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("preview_every", "steps", "previews"), [
    (None, 3, 3),  # unset: a preview after every step
    (2, 5, 3),     # ceil(5 / 2), after steps 1, 3, 5
    (0, 3, 0),     # off
])
async def test_progress_every_step_and_ceil_steps_over_k_previews_per_image(
        worker: Worker, preview_every: int | None, steps: int, previews: int) -> None:
    fields: dict[str, Any] = dict(num_inference_steps=steps, num_images=2)
    if preview_every is not None:
        fields["preview_every"] = preview_every
    events = await generate(worker, **fields)

    kinds = cases(events)
    assert kinds[-2:] == ["usage", "result"] and kinds.count("result") == 1
    denoising = [e.progress for e in events if e.HasField("progress")
                 and e.progress.stage == "denoising"]
    assert [(p.step, p.total_steps) for p in denoising] == [(s, steps) for s in range(1, steps + 1)]
    assert denoising[-1].fraction == 1.0
    shown = [e.preview for e in events if e.HasField("preview")]
    assert len(shown) == previews * 2  # one per image of the request
    assert sorted({p.image_index for p in shown}) == ([0, 1] if previews else [])
    for preview in shown:
        image = Image.open(io.BytesIO(preview.image.data))
        assert image.format == "PNG" and image.size == (preview.image.width, preview.image.height)
    usage = events[-2].usage.items
    assert [(i.unit, i.quantity) for i in usage] == [("megapixels", pytest.approx(2 * 64 * 64 / 1e6))]


async def test_same_seed_same_bytes_through_the_service(worker: Worker) -> None:
    first, again, other = [(await generate(worker, seed=seed))[-1].result
                           for seed in (11, 11, 12)]
    assert first.images[0].data == again.images[0].data
    assert first.images[0].data != other.images[0].data
    assert (first.seed, other.seed) == (11, 12)


async def test_unset_seed_is_random_reported_and_reproducible(worker: Worker) -> None:
    random = (await generate(worker, seed=None))[-1].result
    replay = (await generate(worker, seed=random.seed))[-1].result
    assert random.images[0].data == replay.images[0].data


async def test_images_go_to_the_blob_store_under_the_callers_key_unless_inline(
        worker: Worker) -> None:
    stored = (await generate(worker, inline=False, output_format="webp"))[-1].result
    inline = (await generate(worker, inline=True, output_format="webp"))[-1].result
    media = stored.images[0]
    assert media.url and not media.data
    key = worker.component.store.key_from_url(media.url)
    assert key is not None and key.startswith(f"{KEY_ID}/images/")
    blob = await worker.component.store.get(key)
    assert blob.content_type == media.content_type == "image/webp"
    assert len(blob.data) == media.size_bytes
    assert blob.data == inline.images[0].data and not inline.images[0].url
    assert Image.open(io.BytesIO(blob.data)).size == (media.width, media.height) == (64, 64)


@pytest.mark.parametrize(("fmt", "pil_format"), [("png", "PNG"), ("jpeg", "JPEG"),
                                                 ("webp", "WEBP")])
async def test_output_formats_and_sizes(worker: Worker, fmt: str, pil_format: str) -> None:
    result = (await generate(worker, output_format=fmt, width=96, height=64,
                             num_inference_steps=1))[-1].result
    media = result.images[0]
    assert media.content_type == f"image/{fmt}"
    image = Image.open(io.BytesIO(media.data))
    assert image.format == pil_format and image.size == (96, 64) == (media.width, media.height)


# --- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "field"), [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "x" * 2001}, "prompt"),
    ({"width": 100}, "width"),
    ({"height": 4096}, "height"),
    ({"num_inference_steps": 151}, "num_inference_steps"),
    ({"guidance_scale": 31.0}, "guidance_scale"),
    ({"num_images": 9}, "num_images"),
    ({"scheduler": "heun"}, "scheduler"),
    ({"output_format": "gif"}, "output_format"),
    ({"preview_every": -1}, "preview_every"),
    ({"strength": 1.5}, "strength"),
    ({"image_url": "ftp://example.com/cat.png"}, "image_url"),
    ({"image_url": "data:image/png;base64,bm90IGFuIGltYWdl"}, "image_url"),
    ({"image_url": "http://127.0.0.1:1/files/a/b.png?expires=1&sig=x"}, "image_url"),
    ({"model_id": TINY_IMG2IMG}, "image_url"),  # image-to-image needs an init image
])
async def test_bad_parameters_are_invalid_argument_and_the_worker_keeps_serving(
        worker: Worker, fields: dict[str, Any], field: str) -> None:
    await expect_invalid(worker.stub.GenerateImage(request(**fields)), field)
    await assert_still_serving(worker)


async def test_an_init_image_that_fails_to_decode_mid_generation_names_image_url(
        worker: Worker) -> None:
    # The header passes the fetch's check; the body fails only when the pipeline decodes it,
    # inside the batch, and the error still names the request's field.
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, format="JPEG")
    truncated = buf.getvalue()[: len(buf.getvalue()) * 6 // 10]
    uri = "data:image/jpeg;base64," + base64.b64encode(truncated).decode()
    await expect_invalid(worker.stub.GenerateImage(request(model_id=TINY_IMG2IMG, image_url=uri,
                                                           num_inference_steps=2)), "image_url")
    await assert_still_serving(worker)


@pytest.mark.parametrize("model_id", ["nobody/nothing", ""])
async def test_unknown_model_is_not_found(worker: Worker, model_id: str) -> None:
    # An empty model_id never reaches a worker (the router refuses it as INVALID_ARGUMENT); the
    # worker, trusting the router, just finds no such model.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [e async for e in worker.stub.GenerateImage(request(model_id=model_id))]
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    await assert_still_serving(worker)


async def test_absent_hub_weights_are_failed_precondition_naming_the_directory(
        worker: Worker, built_models: Path) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [e async for e in worker.stub.GenerateImage(request(model_id="stabilityai/sd-turbo"))]
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert str(built_models / "stabilityai/sd-turbo") in err.value.details()
    await assert_still_serving(worker)


async def test_unbuilt_weights_say_how_to_build_them(tmp_path: Path) -> None:
    component = ImageGenComponent(Settings(models_dir=tmp_path, data_dir=tmp_path, nats_url=None,
                                           signing_secret=SIGNING_SECRET))
    for model_id in (TINY_SD, TINY_IMG2IMG):
        with pytest.raises(ModelUnavailable) as err:
            await component.load_model(component.runtime.find_model(model_id))
        assert "genmesh models build genmesh/tiny-sd" in err.value.message
        assert str(tmp_path / TINY_SD) in err.value.message


# --- cancellation -------------------------------------------------------------------------------

async def test_cancel_mid_generation_stops_compute_within_one_step(
        worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    await assert_still_serving(worker)  # loaded, so the spies see only the call below
    steps_after_cancel: list[int] = []
    steps_run: list[int] = []
    finished = threading.Event()
    on_step_end, run_batch = image_pipeline._Batch.on_step_end, image_pipeline.ImagePipeline.run_batch

    def spy_step(self: Any, pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> Any:
        steps_run.append(i + 1)
        if any(r.cancel is not None and r.cancel.is_set() for r in self.requests):
            steps_after_cancel.append(i + 1)
        return on_step_end(self, pipe, i, t, tensors)

    def spy_run(self: Any, requests: Any) -> Any:
        try:
            return run_batch(self, requests)
        finally:
            finished.set()

    monkeypatch.setattr(image_pipeline._Batch, "on_step_end", spy_step)
    monkeypatch.setattr(image_pipeline.ImagePipeline, "run_batch", spy_run)
    call = worker.stub.GenerateImage(request(num_inference_steps=150, preview_every=0))
    async for event in call:
        if event.HasField("progress") and event.progress.step >= 1:
            break
    call.cancel()
    assert await asyncio.to_thread(finished.wait, 60)
    # At most the step running when the cancel arrived completed after it.
    assert len(steps_after_cancel) <= 1 and steps_run[-1] < 150
    assert steps_after_cancel in ([], steps_run[-1:])
    await wait_for(lambda: not worker.component.runtime.running)
    assert worker.component.runtime.cache.entries[TINY_SD].in_flight == 0
    monkeypatch.undo()
    await assert_still_serving(worker)


# --- image-to-image -----------------------------------------------------------------------------

async def test_image_to_image_from_a_data_uri_shares_the_loaded_checkpoint(
        worker: Worker) -> None:
    await assert_still_serving(worker)
    entry = worker.component.runtime.cache.entries[TINY_SD]
    red = png_data_uri((90, 70), (220, 30, 30))  # not a multiple of 8: size follows it, fitted
    events = await generate(worker, model_id=TINY_IMG2IMG, image_url=red, num_inference_steps=4)
    result = events[-1].result
    # The catalog's strength default (0.75) runs int(4 * 0.75) = 3 of the 4 steps.
    assert [e.progress.total_steps for e in events if e.progress.stage == "denoising"] == [3] * 3
    assert (result.images[0].width, result.images[0].height) == (88, 64)
    blue = (await generate(worker, model_id=TINY_IMG2IMG, num_inference_steps=4,
                           image_url=png_data_uri((90, 70), (30, 30, 220))))[-1].result
    assert blue.images[0].data != result.images[0].data
    # The text-to-image model takes an init image too, and both ids use one loaded copy.
    same = (await generate(worker, image_url=red, num_inference_steps=4, strength=0.75))[-1]
    assert same.result.images[0].data == result.images[0].data
    assert list(worker.component.runtime.cache.entries) == [TINY_SD]
    assert worker.component.runtime.cache.entries[TINY_SD] is entry


async def test_image_to_image_reads_a_signed_file_of_this_mesh(worker: Worker) -> None:
    store = worker.component.store
    key = blobstore.new_key(KEY_ID, "uploads", "image/png")
    await store.put(key, base64.b64decode(png_data_uri((64, 64), (9, 200, 9)).split(",")[1]),
                    "image/png")
    by_url = (await generate(worker, model_id=TINY_IMG2IMG, image_url=store.url(key)))[-1]
    by_uri = (await generate(worker, model_id=TINY_IMG2IMG,
                             image_url=png_data_uri((64, 64), (9, 200, 9))))[-1]
    assert by_url.result.images[0].data == by_uri.result.images[0].data


# --- batching -----------------------------------------------------------------------------------

async def test_concurrent_same_shape_requests_share_one_pipeline_call(worker: Worker) -> None:
    await assert_still_serving(worker)
    batcher = worker.loaded().batcher
    before = (batcher.stats.batches, batcher.stats.requests)
    # A wide window, so the batch closes by filling up (8 images) rather than by the clock.
    window, batcher.window_s = batcher.window_s, 60.0
    try:
        results = await asyncio.gather(*(generate(worker, prompt=prompt, seed=seed, num_images=4)
                                         for prompt, seed in (("a cat", 1), ("a dog", 100))))
    finally:
        batcher.window_s = window
    assert (batcher.stats.batches - before[0], batcher.stats.requests - before[1]) == (1, 2)
    assert batcher.stats.largest_batch >= 2
    cat, dog = (events[-1].result for events in results)
    assert (cat.seed, dog.seed) == (1, 100) and len(cat.images) == len(dog.images) == 4
    assert cat.images[0].data != dog.images[0].data


async def test_evicting_the_checkpoint_closes_its_batcher_and_the_next_request_reloads(
        worker: Worker) -> None:
    await assert_still_serving(worker)
    old = worker.loaded()
    assert worker.component.runtime.cache.evict(TINY_SD)
    with pytest.raises(Unavailable, match="shut down"):
        await old.batcher.submit(ImageParams(prompt="late", width=64, height=64))
    events = await generate(worker, num_inference_steps=1)
    assert events[0].progress.stage == "loading" and cases(events)[-1] == "result"
    assert worker.loaded() is not old


# --- through the router -------------------------------------------------------------------------

def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


async def test_through_the_router(infra: Infra, built_models: Path, tmp_path: Path) -> None:
    mesh = await start_mesh(infra, tmp_path, ["router", "imagegen"], models_dir=built_models)
    try:
        async with mesh.channel() as channel:
            router = router_pb2_grpc.RouterStub(channel)
            # The generic JSON API: the image lands in the blob store under the caller's key.
            response = await router.Run(router_pb2.RunRequest(
                model_id=TINY_SD, input=struct({"prompt": "a lighthouse", "seed": 1})),
                metadata=mesh.metadata)
            assert response.output["seed"] == 1
            image = response.output["images"][0]
            store = blobstore.open_store(Settings(data_dir=tmp_path,
                                                  signing_secret=SIGNING_SECRET))
            key = store.key_from_url(image["url"])
            assert key is not None and not key.startswith("anonymous/")
            blob = await store.get(key)
            assert Image.open(io.BytesIO(blob.data)).size == (64, 64)
            assert [(i.unit, i.quantity) for i in response.usage.items] == [
                ("megapixels", pytest.approx(64 * 64 / 1e6))]
            # The typed stub on the router's address streams previews and ends with the result.
            events = [e async for e in imagegen_pb2_grpc.ImageGenStub(channel).GenerateImage(
                request(seed=1, num_inference_steps=4, preview_every=2), metadata=mesh.metadata)]
            assert cases(events)[-2:] == ["usage", "result"]
            assert cases(events).count("preview") == 2
            # Bad input is refused at Submit, before anything is queued.
            for data, field in (({"prompt": "x", "width": 100}, "width"),
                                ({"prompt": "x", "image_url": "ftp://x/y.png"}, "image_url"),
                                ({"prompt": "x", "sampler": "euler"}, "sampler")):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await router.Submit(router_pb2.SubmitRequest(model_id=TINY_SD,
                                                                 input=struct(data)),
                                        metadata=mesh.metadata)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert ("genmesh-field", field) in tuple(err.value.trailing_metadata())
    finally:
        await mesh.supervisor.stop()
