"""Registration, heartbeat, concurrency and cancellation for every worker.

A modality service subclasses `WorkerComponent`, lists its servicers, and wraps each call in
`runtime.job(...)`: the job refuses work beyond the worker's capacity, says whether its model
must load first (`job.cold`), hands out the loaded model (`await job.load()`) and releases it
when the call ends. Everything else about being a worker lives here.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from genmesh import availability, bus, meshtls
from genmesh.catalog import GB, Catalog, ModelSpec
from genmesh.errors import NotFound, RateLimited
from genmesh.rpc import KEY_ID_KEY, REQUEST_ID_KEY, metadata_value, servicer_errors
from genmesh.settings import Settings
from genmesh.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from genmesh.worker import devices as device_info
from genmesh.worker.cache import Entry, ModelCache
from genmesh.worker.unary import HandlerTap, TaskRoutes

log = logging.getLogger("genmesh.worker")


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


Loader = Callable[[ModelSpec], Awaitable[Entry]]
LOADING_LABEL = "loading/"  # heartbeat label prefix of a model this worker is loading


def progress(stage: str, fraction: float = 0.0, step: int = 0,
             total: int = 0) -> common_pb2.Progress:
    """A progress event of a job; the fraction is clamped to [0, 1]."""
    return common_pb2.Progress(stage=stage, fraction=min(max(fraction, 0.0), 1.0), step=step,
                               total_steps=total)


@dataclass
class JobContext:
    """One call on this worker: its ids, the event that tells compute to stop, and the models
    it holds from the cache (released when the call ends)."""

    request_id: str
    model: ModelSpec
    key_id: str = "anonymous"
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.perf_counter)
    cold: bool = False  # the model was not resident when the call came: it loads first
    log: logging.Logger = log
    _loader: Loader | None = None
    _held: list[Entry] = field(default_factory=list)

    @property
    def model_id(self) -> str:
        return self.model.id

    async def load(self, spec: ModelSpec | None = None) -> Any:
        """The loaded model of this call (or of `spec`), from the cache; held until the call
        ends, so the cache does not evict it under the compute."""
        if self._loader is None:
            raise NotFound(f"this worker loads no models (asked for '{self.model_id}')")
        entry = await self._loader(spec or self.model)
        self._held.append(entry)
        return entry.value

    def log_done(self, what: str, **fields: Any) -> None:
        """The one log line of a finished call: its ids, seconds taken and what it made."""
        self.log.info(what, extra={"request_id": self.request_id, "model_id": self.model_id,
                                   "seconds": round(time.perf_counter() - self.started, 3),
                                   **fields})


class WorkerRuntime:
    def __init__(self, settings: Settings, service: str, models: list[ModelSpec], *,
                 use_torch: bool = True, loads_weights: bool = True) -> None:
        self.settings = settings
        self.log = logging.getLogger(f"genmesh.{service}")
        # Set by the component: how a model loads into the cache, and whether it is loaded.
        self.loader: Loader | None = None
        self.is_resident: Callable[[ModelSpec], bool] = lambda spec: spec.id in self.cache.entries
        self.loads_weights = loads_weights
        self.service = service
        self.models = {m.id: m for m in models}
        self.worker_id = f"{service}-{uuid.uuid4().hex[:8]}"
        self.devices = device_info.detect(settings.device, use_torch=use_torch)
        budget = settings.memory_budget_gb * GB if settings.memory_budget_gb else int(
            self.devices[0].memory_total_bytes * 0.8)
        self.cache = ModelCache(int(budget))
        self.cache.on_change = self._state_changed
        self.capacity = settings.worker_capacity
        self.running: dict[str, JobContext] = {}
        self.address = ""
        self.draining = False
        self.started_at = time.time()
        self._nc: Any = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # out-of-turn heartbeats in flight
        # With mesh certificates configured, key ids are believed only from the router.
        self._verify_caller = bool(settings.tls_ca_file)

    @property
    def device(self) -> str:
        return self.devices[0].name

    def find_model(self, model_id: str) -> ModelSpec:
        spec = self.models.get(model_id)
        if spec is None:
            parts = model_id.split("/")
            for n in range(len(parts) - 1, 1, -1):
                spec = self.models.get("/".join(parts[:n]))
                if spec is not None and spec.task == "app":
                    return spec
            raise NotFound(f"model '{model_id}' is not served by this {self.service} worker")
        return spec

    def state(self) -> worker_pb2.WorkerState:
        device_info.refresh(self.devices)
        state = worker_pb2.WorkerState(
            worker_id=self.worker_id, service=self.service, address=self.address,
            devices=self.devices, in_flight=len(self.running), capacity=self.capacity,
            models=sorted(self.models), started_at=_ts(self.started_at),
            cache_hits=self.cache.hits, cache_misses=self.cache.misses, draining=self.draining,
            running_requests=sorted(self.running))
        if self.settings.zone:
            state.labels["zone"] = self.settings.zone
        # Models loading now (label loading/<model id> = when the load began, unix seconds): a
        # worker minutes into an engine start is alive and busy, not silent.
        for model_id, since in list(self.cache.loading_since.items()):
            state.labels[f"{LOADING_LABEL}{model_id}"] = f"{since:.0f}"
        # Which of its models this worker cannot run, and why (weights or engine missing).
        if self.loads_weights:
            state.unavailable.update(availability.weights_reasons(
                self.models.values(), self.settings.resolved_models_dir()))
        for e in self.cache.entries.values():
            state.resident_models.append(worker_pb2.ResidentModel(
                model_id=e.model_id, device=e.device, memory_bytes=e.size_bytes,
                last_used=_ts(e.last_used), in_flight=e.in_flight, load_seconds=e.load_seconds))
        return state

    async def start(self, port: int) -> None:
        self.address = self.settings.advertise_addr or f"{self.settings.host}:{port}"
        if self.settings.nats_url:
            self._nc = await bus.connect(self.settings.nats_url, self.worker_id)
            self._heartbeat = asyncio.create_task(self._heartbeat_loop())
        log.info("worker started", extra={"worker_id": self.worker_id, "address": self.address,
                                          "models": len(self.models)})

    async def publish_state(self) -> None:
        if self._nc is not None and self._nc.is_connected:
            await self._nc.publish(bus.HEARTBEAT_SUBJECT, self.state().SerializeToString())

    def _state_changed(self) -> None:
        """A load began or ended: heartbeat now rather than at the next interval."""
        if self._nc is not None:
            task = asyncio.get_running_loop().create_task(self._publish_quietly())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _publish_quietly(self) -> None:
        with contextlib.suppress(Exception):
            await self.publish_state()

    async def _heartbeat_loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.publish_state()
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def drain(self) -> None:
        """Stop receiving new work: routers see `draining` and place elsewhere."""
        self.draining = True
        with contextlib.suppress(Exception):
            await self.publish_state()
            if self._nc is not None:
                await self._nc.flush(timeout=1)

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()

    def caller_key_id(self, context: grpc.aio.ServicerContext) -> str:
        """The API key id whose prefix this call's outputs are filed under: the one the router
        sent, and only from the router (the port's caller check refuses everyone else; this
        holds even where a server was built without it). In a plaintext mesh, whoever reaches
        the port is trusted, as the operator chose."""
        if self._verify_caller and meshtls.peer_service(context) != "router":
            return "anonymous"
        return metadata_value(context, KEY_ID_KEY) or "anonymous"

    @contextlib.asynccontextmanager
    async def job(self, context: grpc.aio.ServicerContext, model_id: str) -> AsyncIterator[JobContext]:
        """Tracks one call: capacity, in-flight accounting, the models it holds, and
        cancellation when the caller goes away."""
        spec = self.find_model(model_id)
        if len(self.running) >= self.capacity:
            # Routers place within the advertised capacity; this holds it against any other
            # caller (a second router, a stale heartbeat) so compute is never oversubscribed.
            raise RateLimited(f"this {self.service} worker is running {len(self.running)} calls, "
                              f"its capacity; retry shortly", retry_after=1.0)
        request_id = metadata_value(context, REQUEST_ID_KEY) or uuid.uuid4().hex
        job = JobContext(request_id, spec, self.caller_key_id(context),
                         cold=self.loader is not None and not self.is_resident(spec),
                         log=self.log, _loader=self.loader)
        self.running[request_id] = job
        context.add_done_callback(lambda _ctx: job.cancel.set())
        try:
            yield job
        finally:
            job.cancel.set()
            self.running.pop(request_id, None)
            for entry in job._held:
                self.cache.release(entry)


class WorkerServicer(worker_pb2_grpc.WorkerServicer):
    def __init__(self, runtime: WorkerRuntime, tasks: TaskRoutes | None = None) -> None:
        self.runtime = runtime
        self.tasks = tasks or TaskRoutes()

    @servicer_errors
    async def GetWorkerState(self, request: worker_pb2.GetWorkerStateRequest,
                             context: grpc.aio.ServicerContext) -> worker_pb2.GetWorkerStateResponse:
        return worker_pb2.GetWorkerStateResponse(state=self.runtime.state())

    @servicer_errors
    async def EvictModel(self, request: worker_pb2.EvictModelRequest,
                         context: grpc.aio.ServicerContext) -> worker_pb2.EvictModelResponse:
        evicted = self.runtime.cache.evict(request.model_id)
        await self.runtime.publish_state()
        return worker_pb2.EvictModelResponse(evicted=evicted)

    @servicer_errors
    async def LoadModel(self, request: worker_pb2.LoadModelRequest,
                        context: grpc.aio.ServicerContext) -> worker_pb2.LoadModelResponse:
        loader = self.runtime.loader
        if loader is None:
            return worker_pb2.LoadModelResponse()
        spec = self.runtime.find_model(request.model_id)
        hits = self.runtime.cache.hits
        entry = await loader(spec)
        self.runtime.cache.release(entry)
        await self.runtime.publish_state()
        return worker_pb2.LoadModelResponse(load_seconds=entry.load_seconds,
                                            cache_hit=self.runtime.cache.hits > hits)

    @servicer_errors
    async def RunTask(self, request: worker_pb2.RunTaskRequest,
                      context: grpc.aio.ServicerContext) -> worker_pb2.RunTaskResponse:
        return await self.tasks.run(request, context)


class WorkerComponent:
    """Base of every modality service; subclasses set `service` and add their servicers."""

    service: str = ""
    grpc_services: list[str] = []
    uses_torch: bool = True
    # False for a worker that answers without weights of its own (a scripted test worker): none
    # of its models is then reported as missing its weights.
    loads_weights: bool = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if self.uses_torch:
            import torch

            torch.set_num_threads(max(1, settings.torch_threads))
        self.catalog = Catalog.load(settings.catalog_path)
        self.runtime = WorkerRuntime(settings, self.service, self.catalog.for_service(self.service),
                                     use_torch=self.uses_torch, loads_weights=self.loads_weights)
        if type(self).load_model is not WorkerComponent.load_model:  # it loads models
            self.runtime.loader = self.load_model
        self.runtime.is_resident = self.is_resident
        self.service_names = [*self.grpc_services, "genmesh.v1.Worker"]

    def register(self, server: grpc.aio.Server) -> None:
        # The modality servicers' handlers are kept as they are added: RunTask runs them.
        tap = HandlerTap(server)
        self.add_servicers(tap)  # type: ignore[arg-type]
        worker_pb2_grpc.add_WorkerServicer_to_server(
            WorkerServicer(self.runtime, TaskRoutes(tap.handlers)), server)

    def add_servicers(self, server: grpc.aio.Server) -> None:
        raise NotImplementedError

    async def load_model(self, spec: ModelSpec) -> Entry:
        """Loads (or finds in the cache) a model; returns the cache entry (release it after)."""
        raise NotImplementedError

    def is_resident(self, spec: ModelSpec) -> bool:
        """Whether `spec` is loaded now (components sharing weights across entries say so)."""
        return spec.id in self.runtime.cache.entries

    def resolve_model(self, model_id: str) -> str:
        """Catalog ids pass through; aliases (whisper-1, tts-1, gpt-4o-mini) become the id
        they stand for on this service."""
        spec = self.catalog.find(model_id)
        return spec.id if spec is not None and spec.service == self.service else model_id

    async def start(self, port: int) -> None:
        await self.runtime.start(port)

    async def drain(self) -> None:
        await self.runtime.drain()

    async def stop(self) -> None:
        await self.runtime.stop()


class ComponentServicer:
    """What every modality servicer holds: its component (store, checkpoints, engines) and the
    component's runtime (jobs, cache)."""

    def __init__(self, component: WorkerComponent) -> None:
        self.component = component
        self.runtime = component.runtime
