"""The one worker runtime every modality service uses: registration and heartbeat, the model
cache, device discovery, concurrency limits, cancellation and thread-backed streaming; beside
it, what several workers share: where weights live (weights, checkpoints), media in and out
(media), and the diffusers side of the image and video workers (diffusion, preview)."""
from genmesh.worker.cache import ModelCache
from genmesh.worker.runtime import JobContext, WorkerComponent, WorkerRuntime, progress
from genmesh.worker.streaming import stream_from_thread

__all__ = ["JobContext", "ModelCache", "WorkerComponent", "WorkerRuntime", "progress",
           "stream_from_thread"]
