"""The videogen worker's gRPC surface: GenerateVideo as an event stream over the video engine.

Requests are checked by params; each weights directory is loaded once into the model cache; the
blocking generation runs in a thread whose step events and decoded frames are streamed as they
happen; this module maps them to the protos and files the encoded video in the blob store.
"""
from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from genmesh.rpc import servicer_errors
from genmesh.v1 import common_pb2, videogen_pb2, videogen_pb2_grpc
from genmesh.worker import progress, stream_from_thread
from genmesh.worker.checkpoints import CheckpointWorker, load_with_defaults, step_progress
from genmesh.worker.diffusion import StepEvent
from genmesh.worker.media import output_media, png_media
from genmesh.worker.runtime import ComponentServicer

from .params import VideoParams, params_from_request
from .pipeline import VideoPipeline, VideoResult


TASKS = ("text-to-video", "image-to-video")
# The checkpoints VideoPipeline drives (motion-module UNets in SD's latent space).
PIPELINE_CLASSES = ("AnimateDiffPipeline",)


@dataclass(frozen=True)
class _Frame:
    """A frame the VAE has just decoded."""

    index: int
    png: bytes


class VideoGenServicer(ComponentServicer, videogen_pb2_grpc.VideoGenServicer):
    component: VideoGenComponent

    @servicer_errors
    async def GenerateVideo(self, request: videogen_pb2.GenerateVideoRequest,
                            context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[videogen_pb2.GenerateVideoEvent]:
        async with self.component.generation(context, request) as (job, image):
            if job.cold:
                yield videogen_pb2.GenerateVideoEvent(progress=progress("loading"))
            pipeline, defaults = await load_with_defaults(job)
            params = params_from_request(request, image=image, defaults=defaults)
            result: VideoResult | None = None
            async for item in stream_from_thread(_work(pipeline, params), job.cancel):
                if isinstance(item, VideoResult):
                    result = item
                else:
                    for event in partial_events(item, params.num_frames):
                        yield event
            assert result is not None  # the thread returned it or raised
            video = result.video
            media = await output_media(
                self.component.store, job.key_id, video.data, video.content_type,
                inline=request.inline, kind="videos", width=video.width, height=video.height,
                duration_seconds=video.duration_seconds, num_frames=video.num_frames,
                fps=video.fps)
            job.log_done("generated", mode=params.mode, frames=video.num_frames,
                         steps=result.steps, seed=result.seed, bytes=len(video.data))
            yield videogen_pb2.GenerateVideoEvent(usage=common_pb2.Usage(items=[
                common_pb2.UsageItem(unit="video_seconds", quantity=result.usage.seconds)]))
            yield videogen_pb2.GenerateVideoEvent(result=videogen_pb2.GenerateVideoResult(
                video=media, seed=result.seed, duration_seconds=video.duration_seconds,
                num_frames=video.num_frames, fps=video.fps,
                inference_time_seconds=result.inference_time_seconds))


class VideoGenComponent(CheckpointWorker):
    service = "videogen"
    grpc_services = ["genmesh.v1.VideoGen"]
    tasks, what, init = TASKS, "video generation", "animates an init image"
    pipeline_classes = PIPELINE_CLASSES

    @staticmethod
    def load_checkpoint(path: Path, device: str) -> VideoPipeline:
        return VideoPipeline.from_pretrained(path, device=device)

    def add_servicers(self, server: grpc.aio.Server) -> None:
        videogen_pb2_grpc.add_VideoGenServicer_to_server(VideoGenServicer(self), server)


# --- compute (runs in the stream's thread) --------------------------------------------------------

Work = Callable[[Callable[[Any], None], threading.Event], VideoResult]


def _work(pipeline: VideoPipeline, params: VideoParams) -> Work:
    def work(emit: Callable[[Any], None], cancel: threading.Event) -> VideoResult:
        return pipeline.generate(params, on_step=emit,
                                 on_frame=lambda index, png: emit(_Frame(index, png)),
                                 cancel=cancel)
    return work


# --- engine dataclasses -> protos -----------------------------------------------------------------

def partial_events(item: StepEvent | _Frame, num_frames: int
                   ) -> list[videogen_pb2.GenerateVideoEvent]:
    """A finished step: progress and its preview, if any; a decoded frame: progress and it."""
    if isinstance(item, StepEvent):
        out = [videogen_pb2.GenerateVideoEvent(progress=step_progress(item))]
        out += [videogen_pb2.GenerateVideoEvent(preview=videogen_pb2.VideoPreview(
            step=item.step, image=png_media(png))) for png in item.previews]
        return out
    done = item.index + 1
    return [videogen_pb2.GenerateVideoEvent(progress=progress(
                "decoding", done / num_frames, done, num_frames)),
            videogen_pb2.GenerateVideoEvent(frame=videogen_pb2.VideoFrame(
                index=item.index, image=png_media(item.png)))]
