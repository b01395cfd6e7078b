"""The one worker runtime every modality service uses: registration and heartbeat, the model
cache, device discovery, concurrency limits, cancellation and thread-backed streaming."""
from genmesh.worker.cache import ModelCache
from genmesh.worker.runtime import JobContext, WorkerComponent, WorkerRuntime
from genmesh.worker.streaming import stream_from_thread

__all__ = ["JobContext", "ModelCache", "WorkerComponent", "WorkerRuntime", "stream_from_thread"]
