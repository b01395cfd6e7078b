"""The imagegen worker's gRPC surface: GenerateImage as an event stream over a shared batcher.

Requests are checked by params; each weights directory is loaded once into the model cache as
one `ImagePipeline` with one `ImageBatcher` in front (text-to-image and image-to-image entries
of a checkpoint share them); this module only maps step events and results to the protos and
files the images in the blob store.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from genmesh.rpc import servicer_errors
from genmesh.v1 import common_pb2, imagegen_pb2, imagegen_pb2_grpc
from genmesh.worker import progress
from genmesh.worker.checkpoints import CheckpointWorker, load_with_defaults, step_progress
from genmesh.worker.diffusion import StepEvent
from genmesh.worker.media import output_media, png_media
from genmesh.worker.runtime import ComponentServicer

from .batching import ImageBatcher
from .params import ImageDefaults, ImageParams, params_from_request
from .pipeline import ImagePipeline, ImageResult


TASKS = ("text-to-image", "image-to-image")
# Concurrent same-shape requests arriving this close together share one pipeline call.
BATCH_WINDOW_S = 0.005
MAX_BATCH_IMAGES = 8


@dataclass
class LoadedImageModel:
    """One loaded checkpoint: its pipeline and the batcher every request for it goes through."""

    pipeline: ImagePipeline
    batcher: ImageBatcher

    @classmethod
    def load(cls, path: Path, device: str) -> LoadedImageModel:
        pipeline = ImagePipeline.from_pretrained(path, device=device)
        return cls(pipeline, ImageBatcher(pipeline, window_s=BATCH_WINDOW_S,
                                          max_batch_images=MAX_BATCH_IMAGES))

    def defaults(self) -> ImageDefaults:
        """The checkpoint's native defaults (load_with_defaults puts the catalog entry's on top)."""
        return self.pipeline.defaults()

    def close(self) -> None:  # the model cache calls it on eviction
        self.batcher.close()


class ImageGenServicer(ComponentServicer, imagegen_pb2_grpc.ImageGenServicer):
    component: ImageGenComponent

    @servicer_errors
    async def GenerateImage(self, request: imagegen_pb2.GenerateImageRequest,
                            context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[imagegen_pb2.GenerateImageEvent]:
        async with self.component.generation(context, request) as (job, image):
            if job.cold:
                yield imagegen_pb2.GenerateImageEvent(progress=progress("loading"))
            model, defaults = await load_with_defaults(job)
            params = params_from_request(request, image=image, defaults=defaults)
            result: ImageResult | None = None
            async for item in _generate(model.batcher, params, job.cancel):
                if isinstance(item, StepEvent):
                    for event in step_events(item):
                        yield event
                else:
                    result = item
            assert result is not None  # the batcher returned it or raised
            images = [await output_media(
                self.component.store, job.key_id, im.data, im.content_type, inline=request.inline,
                kind="images", width=im.width, height=im.height) for im in result.images]
            job.log_done("generated", mode=params.mode, images=len(result.images),
                         steps=result.steps, seed=result.seed)
            yield imagegen_pb2.GenerateImageEvent(usage=usage_proto(result))
            yield imagegen_pb2.GenerateImageEvent(result=imagegen_pb2.GenerateImageResult(
                images=images, seed=result.seed, prompt=params.prompt,
                inference_time_seconds=result.inference_time_seconds))


class ImageGenComponent(CheckpointWorker):
    service = "imagegen"
    grpc_services = ["genmesh.v1.ImageGen"]
    tasks, what, init = TASKS, "image generation", "repaints an init image"
    load_checkpoint = staticmethod(LoadedImageModel.load)

    def add_servicers(self, server: grpc.aio.Server) -> None:
        imagegen_pb2_grpc.add_ImageGenServicer_to_server(ImageGenServicer(self), server)


async def _generate(batcher: ImageBatcher, params: ImageParams, cancel: threading.Event
                    ) -> AsyncIterator[StepEvent | ImageResult]:
    """Step events as the batch reaches them, then the result (or the request's error)."""
    # The batcher calls on_step on this loop's thread, so a plain asyncio queue suffices.
    queue: asyncio.Queue[StepEvent | None] = asyncio.Queue()
    task = asyncio.ensure_future(batcher.submit(params, on_step=queue.put_nowait, cancel=cancel))
    task.add_done_callback(lambda _task: queue.put_nowait(None))
    try:
        while (event := await queue.get()) is not None:
            yield event
        yield task.result()
    finally:
        if not task.done():
            # The caller went away: the request leaves its batch at the next step boundary.
            cancel.set()
            task.cancel()


# --- engine dataclasses -> protos -----------------------------------------------------------------

def step_events(event: StepEvent) -> list[imagegen_pb2.GenerateImageEvent]:
    """Progress for a finished step, then one preview per image of the request."""
    out = [imagegen_pb2.GenerateImageEvent(progress=step_progress(event))]
    out += [imagegen_pb2.GenerateImageEvent(preview=imagegen_pb2.ImagePreview(
        step=event.step, image_index=index, image=png_media(png)))
        for index, png in enumerate(event.previews)]
    return out


def usage_proto(result: ImageResult) -> common_pb2.Usage:
    return common_pb2.Usage(items=[common_pb2.UsageItem(unit="megapixels",
                                                        quantity=result.usage.megapixels)])
