"""Dispatch: place one call on a worker and stream its typed events back.

Waits (bounded) when every able worker is busy, fails at once (FAILED_PRECONDITION, with the
reason) when no worker could ever run the model (weights missing, hardware short), tells a worker
to evict before a cold load, and turns a worker's death into a retryable UNAVAILABLE so the caller
can re-place. A worker that answers RESOURCE_EXHAUSTED (its capacity) before streaming anything
still runs a call this router stopped counting (one whose client went away, still winding down):
the call is re-placed, on another worker or on that one once it has room, within the same bound.
A call whose caller reads only its result goes as one unary Worker.RunTask where the task has a
case for it; a worker without RunTask (UNIMPLEMENTED) is sent that task's stream from then on.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import AsyncIterator

import grpc
from google.protobuf.message import Message

from genmesh.catalog import ModelSpec
from genmesh.errors import (GenmeshError, ModelUnavailable, RateLimited, Unavailable,
                            from_rpc_error)
from genmesh.rpc import KEY_ID_KEY, REQUEST_ID_KEY, Channels
from genmesh.tasks import RUN_TASK_PATH, Task, run_task_request
from genmesh.v1 import worker_pb2, worker_pb2_grpc
from genmesh.services.router.placement import ModelNeeds, PlacementPolicy, WorkerInfo, cannot_run
from genmesh.services.router.registry import WorkerRegistry, WorkerView

log = logging.getLogger("genmesh.router.dispatch")


class WorkerLost(Unavailable):
    """The worker running a call died or was cut off; the call may be re-placed."""

    error_type = "worker_lost"


def needs_of(spec: ModelSpec, model_id: str, zone: str = "") -> ModelNeeds:
    return ModelNeeds(
        model_id=spec.id if spec.task != "app" else spec.id, memory_bytes=spec.memory_bytes,
        min_device_memory_bytes=int(spec.min_device_memory_gb * 1024 ** 3),
        gpu_required=spec.gpu_required, gpu_classes=tuple(spec.gpu_classes),
        num_gpus=spec.num_gpus, zone=zone)


def refuse_unrunnable(spec: ModelSpec, needs: ModelNeeds, infos: list[WorkerInfo]) -> None:
    """ModelUnavailable when no worker of `infos` could ever run the model (weights missing,
    hardware that does not fit): the caller learns why at once instead of waiting for a slot."""
    reason = cannot_run(needs, infos)
    if reason is not None:
        raise ModelUnavailable(f"model '{spec.id}' cannot run on this mesh: {reason}")


def check_runnable(registry: WorkerRegistry, spec: ModelSpec, service: str) -> None:
    """`refuse_unrunnable` against the workers the registry knows now (a queued job's submit)."""
    refuse_unrunnable(spec, needs_of(spec, spec.id), [v.info() for v in registry.for_service(service)])


class Dispatcher:
    def __init__(self, registry: WorkerRegistry, policy: PlacementPolicy, channels: Channels) -> None:
        self.registry = registry
        self.policy = policy
        self.channels = channels
        self._calls: dict[str, set[grpc.aio.Call]] = {}
        self._lost: set[int] = set()
        # (worker id, task path) that answered RunTask UNIMPLEMENTED: sent the stream instead.
        self._stream_only: set[tuple[str, str]] = set()
        registry.on_dead.append(self._worker_died)

    async def _worker_died(self, view: WorkerView) -> None:
        self._stream_only = {k for k in self._stream_only if k[0] != view.worker_id}
        for call in self._calls.pop(view.worker_id, set()):
            self._lost.add(id(call))
            call.cancel()
        await self.channels.drop(view.state.address)

    async def place(self, spec: ModelSpec, service: str, wait_s: float,
                    refused: set[str] | None = None) -> WorkerView:
        """A worker for the model, waiting up to `wait_s` for one to fit. Workers in `refused`
        (they just answered "at capacity") are passed over until the registry next changes (a
        heartbeat, a call ending here) or half a second has gone by; then they are asked again."""
        deadline = time.monotonic() + wait_s
        needs = needs_of(spec, spec.id)
        refused = refused if refused is not None else set()
        while True:
            views = {v.worker_id: v for v in self.registry.for_service(service)}
            infos = [v.info() for v in views.values()]
            decision = self.policy.place(needs, [i for i in infos if i.worker_id not in refused])
            if decision.worker_id is None:
                refuse_unrunnable(spec, needs, infos)
            if decision.worker_id is not None:
                view = views[decision.worker_id]
                for model_id in decision.evict:
                    await self._evict(view, model_id)
                return view
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if not views:
                    raise Unavailable(f"no {service} worker is running to serve '{spec.id}'")
                # Busy, not broken: 429 with Retry-After, which clients (and the SDKs) retry.
                raise RateLimited(f"every {service} worker able to serve '{spec.id}' is busy "
                                  f"({decision.reason}); retry later or use the queue", retry_after=1.0)
            await self.registry.wait_changed(min(remaining, 0.5), service)
            refused.clear()

    async def _evict(self, view: WorkerView, model_id: str) -> None:
        stub = worker_pb2_grpc.WorkerStub(self.channels.get(view.state.address, view.state.service))
        with contextlib.suppress(grpc.RpcError):
            await stub.EvictModel(worker_pb2.EvictModelRequest(model_id=model_id), timeout=10)

    async def call(self, spec: ModelSpec, task: Task, request: Message | bytes, *, request_id: str,
                   wait_s: float, timeout_s: float | None = None, key_id: str = "",
                   result_only: bool = False) -> AsyncIterator[Message]:
        """Streams the typed events of one call (unary calls yield once), placed again while a
        worker refuses it for capacity (`_attempt` is one try on one worker). With `result_only`
        (the caller reads the result and usage, nothing else) a task with a RunTask case yields
        one worker_pb2.RunTaskResponse instead of its events."""
        deadline = time.monotonic() + wait_s
        refused: set[str] = set()
        unary = result_only and task.run_task_field is not None
        while True:
            view = await self.place(spec, task.service, max(0.0, deadline - time.monotonic()), refused)
            as_unary = unary and (view.worker_id, task.path) not in self._stream_only
            try:
                async for event in self._attempt(view, task, request, request_id=request_id,
                                                 timeout_s=timeout_s, key_id=key_id, as_unary=as_unary):
                    yield event
                return
            except _SlotNotFree:
                refused.add(view.worker_id)
                log.info("worker at capacity; re-placing", extra={
                    "request_id": request_id, "model_id": spec.id, "worker_id": view.worker_id})
            except _NoRunTask:
                self._stream_only.add((view.worker_id, task.path))
                log.info("worker has no RunTask for the task; streaming it", extra={
                    "request_id": request_id, "model_id": spec.id, "worker_id": view.worker_id})

    async def _attempt(self, view: WorkerView, task: Task, request: Message | bytes, *, request_id: str,
                       timeout_s: float | None, key_id: str, as_unary: bool) -> AsyncIterator[Message]:
        path, streaming, response_cls = task.path, task.streaming, task.response_cls
        if as_unary:
            assert task.run_task_field is not None
            path, streaming, response_cls = RUN_TASK_PATH, False, worker_pb2.RunTaskResponse
            request = run_task_request(task.run_task_field, wire_bytes(request))
        method = self.channels.method(view.state.address, view.state.service, path, streaming=streaming,
                                      request_serializer=wire_bytes,
                                      response_deserializer=response_cls.FromString)
        metadata = ((REQUEST_ID_KEY, request_id), (KEY_ID_KEY, key_id))
        call = method(request, metadata=metadata, timeout=timeout_s)
        view.local_in_flight += 1
        calls = self._calls.setdefault(view.worker_id, set())
        calls.add(call)
        streamed = False
        try:
            if streaming:
                async for event in call:
                    streamed = True
                    yield event
            else:
                yield await call
        except asyncio.CancelledError:
            if id(call) in self._lost:
                raise WorkerLost(f"worker {view.worker_id} was lost mid-call") from None
            call.cancel()
            raise
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE or id(call) in self._lost:
                # Forget it now rather than at its heartbeat deadline, so the retry goes elsewhere;
                # if it is alive after all, its next heartbeat brings it back.
                if id(call) not in self._lost:
                    calls.discard(call)
                    await self.registry.declare_dead(view.worker_id)
                raise WorkerLost(f"worker {view.worker_id} became unavailable: {exc.details()}") from None
            if as_unary and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise _NoRunTask() from None  # no servicer answers UNIMPLEMENTED: RunTask is missing
            error = from_rpc_error(exc)
            # Only the capacity refusal (RateLimited; not a full model cache or a spent budget),
            # and only while nothing went out: nothing ran, so placing it again is safe.
            if type(error) is RateLimited and not streamed:
                raise _SlotNotFree() from None
            raise error from None
        finally:
            call.cancel()  # the caller closed this stream (client gone): the worker stops at once
            calls.discard(call)
            self._lost.discard(id(call))
            view.local_in_flight = max(0, view.local_in_flight - 1)
            await self.registry.notify(view.state.service)  # a slot of its service is free


def wire_bytes(request: Message | bytes) -> bytes:
    """A request's wire form: a queued job's stored request already is its bytes and goes as it is."""
    return request if isinstance(request, bytes) else request.SerializeToString()


class _SlotNotFree(Exception):
    """A worker refused a call for capacity before any event: `Dispatcher.call` re-places it."""


class _NoRunTask(Exception):
    """A worker does not run the task through RunTask (older, or not its task): nothing ran,
    so `Dispatcher.call` places the call again, as the task's stream on that worker."""


def retryable(error: GenmeshError) -> bool:
    return isinstance(error, WorkerLost)
