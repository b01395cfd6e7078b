"""Diffusers checkpoints in a worker's model cache: where their weights live, which catalog
entries share one loaded copy, and loading each copy once.

Where the weights live is `weights.checkpoint_dir`'s answer. Entries with the same weights
(text-to-image and image-to-image of one checkpoint) share one loaded pipeline: the cache files
it under the owning entry's id, which stands for that one directory and is a catalog id the
router's placement recognises as resident. The image and video workers use this, and the shape
of their one call: its job and init image, the model's defaults, its denoising progress.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from genmesh import blobstore
from genmesh.catalog import ModelSpec
from genmesh.diffusion_params import with_overrides
from genmesh.errors import ModelUnavailable
from genmesh.settings import Settings
from genmesh.v1 import common_pb2
from genmesh.worker.cache import Entry
from genmesh.worker.media import fetch_init_image, init_image_errors, require_task
from genmesh.worker.runtime import JobContext, WorkerComponent, WorkerRuntime, progress
from genmesh.worker.weights import checkpoint_dir, weights_owner

if TYPE_CHECKING:  # diffusion imports torch; this module is imported without it
    from genmesh.worker.diffusion import StepEvent

MARKER_FILE = "model_index.json"  # what every diffusers pipeline directory has
ENGINE = "diffusers"

# Loads the checkpoint in a directory onto a device (blocking: runs in a thread).
Load = Callable[[Path, str], Any]


def pipeline_class(path: Path) -> str:
    """The diffusers pipeline class a checkpoint was saved from."""
    try:
        return str(json.loads((path / MARKER_FILE).read_text())["_class_name"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelUnavailable(f"unreadable {path / MARKER_FILE}: {exc}") from None


class Checkpoints:
    """One worker's loaded checkpoints, one per weights directory, in its model cache."""

    def __init__(self, runtime: WorkerRuntime, models_dir: Path, load: Load, *,
                 pipeline_classes: Sequence[str] = ()) -> None:
        self.runtime = runtime
        self.models_dir = models_dir
        self.load = load
        self.pipeline_classes = tuple(pipeline_classes)  # empty: whatever `load` accepts

    def key(self, spec: ModelSpec) -> str:
        return weights_owner(spec, self.runtime.models.values()).id

    def is_resident(self, spec: ModelSpec) -> bool:
        return self.key(spec) in self.runtime.cache.entries

    async def acquire(self, spec: ModelSpec) -> Entry:
        """The loaded checkpoint of `spec`, loading it on a miss; `release` it after use."""
        if spec.engine != ENGINE:
            raise ModelUnavailable(f"model '{spec.id}' names engine {spec.engine!r}; this "
                                   f"{self.runtime.service} worker runs {ENGINE} pipelines")
        owner = weights_owner(spec, self.runtime.models.values())
        path = checkpoint_dir(spec, self.models_dir, owner=owner, marker=MARKER_FILE,
                              what=ENGINE)
        if self.pipeline_classes and (saved := pipeline_class(path)) not in self.pipeline_classes:
            raise ModelUnavailable(
                f"model '{spec.id}' is a {saved} checkpoint; this {self.runtime.service} worker "
                f"runs {', '.join(self.pipeline_classes)}")
        device = self.runtime.device

        async def loader() -> Any:
            return await asyncio.to_thread(self.load, path, device)

        return await self.runtime.cache.acquire(owner.id, loader, spec.memory_bytes, device)


class CheckpointWorker(WorkerComponent):
    """A worker whose models are diffusers checkpoints (the image and video workers): each
    loaded once per weights directory by `load_checkpoint`, outputs filed in the blob store."""

    pipeline_classes: tuple[str, ...] = ()  # the checkpoint classes it runs; empty: any
    # The tasks it serves (from a prompt, from an init image), the modality in words, and what
    # a model of the second task does with its image: see media.require_task.
    tasks: tuple[str, str]
    what: str
    init: str

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.store = blobstore.open_store(settings)
        self.checkpoints = Checkpoints(self.runtime, settings.resolved_models_dir(),
                                       type(self).load_checkpoint,
                                       pipeline_classes=self.pipeline_classes)

    @staticmethod
    def load_checkpoint(path: Path, device: str) -> Any:
        """The loaded model in `path` on `device` (blocking: runs in a thread)."""
        raise NotImplementedError

    async def load_model(self, spec: ModelSpec) -> Entry:
        """The loaded checkpoint of `spec` from the cache; release it after use."""
        return await self.checkpoints.acquire(spec)

    def is_resident(self, spec: ModelSpec) -> bool:
        return self.checkpoints.is_resident(spec)

    @contextlib.asynccontextmanager
    async def generation(self, context: grpc.aio.ServicerContext,
                         request: Any) -> AsyncIterator[tuple[JobContext, bytes | None]]:
        """One generation call (a GenerateImage/GenerateVideoRequest): its job (see
        WorkerRuntime.job) with the model's task checked against the request, and the init
        image behind its `image_url` fetched (None without one). No validate_request: the
        router (the only caller, mTLS enforces it) validated the request against the same
        rules; the params a servicer builds check the model's defaults. An error about the init
        image, from those params or from decoding it mid-generation, names `image_url`."""
        async with self.runtime.job(context, request.model_id) as job:
            require_task(job.model, request.image_url, tasks=self.tasks, what=self.what,
                         init=self.init)
            image = await fetch_init_image(request.image_url, self.store)
            with init_image_errors():
                yield job, image


async def load_with_defaults(job: JobContext) -> tuple[Any, Any]:
    """The call's loaded checkpoint (held for the call) and its native defaults (its
    `defaults()`) under the catalog entry's own."""
    model = await job.load()
    return model, with_overrides(model.defaults(), job.model.defaults, job.model.id)


def step_progress(event: StepEvent) -> common_pb2.Progress:
    """A finished denoising step as progress (its previews are the modality's own messages)."""
    return progress("denoising", event.step / event.total, event.step, event.total)
