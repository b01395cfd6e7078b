"""The router's gRPC surface: the generic Router service and the typed modality services, proxied.

Servicers only translate and delegate: to the runner (sync and streamed runs), the queue
(submit/status/result/cancel) and the catalog.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections import OrderedDict
from typing import Any, AsyncIterator

import grpc
from google.protobuf.message import Message

from genmesh import blobstore, bus, db, jsonpb, keys, meshtls
from genmesh.catalog import Catalog, ModelSpec
from genmesh.errors import GenmeshError, InvalidArgument, NotFound, PermissionDenied
from genmesh.keys import Identity
from genmesh.rpc import REQUEST_ID_KEY, Channels, servicer_errors
from genmesh.settings import Settings
from genmesh.tasks import PROXIED_METHODS, Task
from genmesh.v1 import common_pb2, router_pb2, router_pb2_grpc, vector_stores_pb2_grpc
from genmesh.services.router.apps import AppsComponent
from genmesh.services.router.auth import Authenticator
from genmesh.services.router.convert import result_output, to_generic
from genmesh.services.router.dispatch import Dispatcher, needs_of
from genmesh.services.router.jobs import Job, JobStore
from genmesh.services.router.placement import ResidentFirst, availability
from genmesh.services.router.queue import JobQueue
from genmesh.services.router.registry import WorkerRegistry
from genmesh.services.router.runner import Outcome, Prepared, Runner
from genmesh.services.router.stored_responses import ResponseStore, StoredResponsesRPCs
from genmesh.services.router.collections import Collections
from genmesh.services.router.vector_stores import Embedder, VectorStoreDB, VectorStoresServicer
from genmesh.services.router.usage import UsagePublisher, billed_usage, record
from genmesh.outbound import OutboundPolicy
from genmesh.tokens import TokenSealer
from genmesh.services.router.webhooks import WebhookSender

log = logging.getLogger("genmesh.router")
SYNC_WAIT_S = 30.0
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
ENDED_CACHE_SIZE = 4096
ENDED_CACHE_TTL_S = 60.0


class Mesh:
    """The router's live parts, built in `start` once NATS and Postgres are reachable."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.router_id = f"router-{uuid.uuid4().hex[:8]}"
        self.catalog = Catalog.load(settings.catalog_path)
        self.registry = WorkerRegistry(settings.worker_dead_after_s)
        # Mutual TLS to workers; a worker's certificate must name its service.
        self.channels = Channels(meshtls.load(settings, "router"))
        self.dispatcher = Dispatcher(self.registry, ResidentFirst(), self.channels)
        self.runner = Runner(self.catalog, self.dispatcher, max_attempts=settings.max_attempts)
        self.apps = AppsComponent(self)
        self.pool: Any = None
        self._ended: OrderedDict[str, tuple[Job, float]] = OrderedDict()  # request id -> (job, until)
        self.nc: Any = None
        self.auth: Authenticator
        self.store: JobStore
        self.queue: JobQueue
        self.usage: UsagePublisher
        self.webhooks: WebhookSender

    async def start(self) -> None:
        s = self.settings
        if not s.nats_url or not s.database_url:
            raise RuntimeError("router needs GENMESH_NATS_URL and GENMESH_DATABASE_URL "
                               "(`genmesh up` sets both)")
        self.pool = await db.connect(s.database_url, max_size=20)
        await db.migrate(self.pool)
        if s.api_key:
            await keys.ensure_bootstrap_key(self.pool, s.api_key)
        self.nc = await bus.connect(s.nats_url, self.router_id)
        js = self.nc.jetstream()
        await bus.ensure_streams(js)
        self.auth = Authenticator(self.pool, TokenSealer(blobstore.signing_secret(s)))
        await self.nc.subscribe(bus.KEY_REVOKED_SUBJECT, cb=self._on_key_revoked)
        self.store = JobStore(self.pool, s.result_retention_days)
        self.responses = ResponseStore(self.pool, s.response_retention_days)
        self.usage = UsagePublisher(js)
        self.webhooks = WebhookSender(self.store, blobstore.signing_secret(s), s.webhook_max_attempts,
                                      s.webhook_backoff_s, OutboundPolicy.parse(s.outbound_allow))
        await self.registry.start(self.nc)
        # Deployed apps join the catalog before the queue can pull a job for one.
        await self.apps.start()
        self.queue = JobQueue(router_id=self.router_id, nc=self.nc, js=js, store=self.store,
                              runner=self.runner, registry=self.registry, usage=self.usage,
                              webhooks=self.webhooks, ack_wait_s=s.queue_ack_wait_s,
                              default_run_timeout_s=s.run_timeout_s)
        await self.queue.start()
        self.vector_stores = VectorStoreDB(self.pool, Embedder(self, s.vector_store_embedding_model))
        await self.vector_stores.sweep_interrupted()
        self.collections = Collections(self)
        await self.collections.start()

    async def _on_key_revoked(self, _msg: Any) -> None:
        self.auth.forget_all()

    async def drain(self) -> None:
        await self.queue.drain()

    async def stop(self) -> None:
        await self.collections.stop()
        await self.vector_stores.close()
        await self.apps.stop()
        await self.usage.flush()
        await self.webhooks.close()
        await self.registry.stop()
        await self.channels.close()
        with contextlib.suppress(Exception):
            await self.nc.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pool.close(), 5)

    # --- running requests -----------------------------------------------------------------------

    async def run_events(self, identity: Identity, prep: Prepared, *, mode: str,
                         timeout_s: float | None, partials_reach_caller: bool = True,
                         whole_events: bool = False,
                         request_id: str = "") -> AsyncIterator[tuple[str, str, Message]]:
        """(request_id, case, payload) of a sync or streamed run; publishes its usage record.

        The request id is the router's own (`request_id`, or a new one): the one the worker
        logs, the usage record is billed under, and the caller gets back. Never the caller's:
        billing keeps one record per id, so a chosen id could shadow another request's.

        With `whole_events` the third item is the worker's typed event itself (for the typed
        proxy, which passes it on as it came, not rebuilt)."""
        request_id = request_id or uuid.uuid4().hex
        outcome = Outcome(usage=common_pb2.Usage())
        created = time.time()
        status = common_pb2.JOB_STATUS_FAILED
        error: GenmeshError | None = None
        try:
            async for case, payload in self.runner.events(prep, request_id=request_id, outcome=outcome,
                                                         wait_s=SYNC_WAIT_S, timeout_s=timeout_s or None,
                                                         # Re-placing is safe when the caller sees only the result.
                                                         safe_to_retry_after_output=not partials_reach_caller,
                                                         key_id=identity.key_id, whole_events=whole_events,
                                                         # The caller reads only the result: one unary worker call.
                                                         result_only=not partials_reach_caller):
                yield request_id, case, payload
            status = common_pb2.JOB_STATUS_COMPLETED
        except GenmeshError as exc:
            error = exc
            raise
        except (asyncio.CancelledError, GeneratorExit):
            # GeneratorExit: the caller left while its servicer sat between two events (a typed
            # stream cancelled at its own `yield`), so this generator is closed, never resumed.
            status = common_pb2.JOB_STATUS_CANCELLED
            raise
        finally:
            finished = time.time()
            started = outcome.started or created
            self.usage.publish_soon(record(
                request_id=request_id, model_id=prep.model_id, api_key_id=identity.key_id,
                status=status, usage=billed_usage(outcome), error=error.message if error else "",
                error_type=error.error_type if error else "", created_at=created,
                started_at=started, finished_at=finished, queue_time_s=started - created,
                run_time_s=finished - started, mode=mode, machine_type=prep.spec.machine_type))

    async def owned_job(self, identity: Identity, request_id: str) -> Job:
        # Ids are plain tokens: anything else is nobody's job, and never reaches Postgres (which
        # refuses some characters, NUL among them, with an error of its own).
        job = None
        if _REQUEST_ID.fullmatch(request_id):
            job = self._ended_job(request_id)
            if job is None:
                job = await self.store.get(request_id)
                if job is not None and job.terminal:
                    self._remember_ended(job)
        # Another key's job is reported as missing, not forbidden: ids must not leak.
        if job is None or job.api_key_id != identity.key_id:
            raise NotFound(f"request '{request_id}' not found")
        return job


    def _ended_job(self, request_id: str) -> Job | None:
        hit = self._ended.get(request_id)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def _remember_ended(self, job: Job) -> None:
        # An ended job never changes again (until it expires, days later): polls of it, and the
        # Result call that follows them, need not go to Postgres.
        self._ended[job.id] = (job, time.monotonic() + ENDED_CACHE_TTL_S)
        self._ended.move_to_end(job.id)
        while len(self._ended) > ENDED_CACHE_SIZE:
            self._ended.popitem(last=False)


class RouterServicer(StoredResponsesRPCs, router_pb2_grpc.RouterServicer):
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh

    def _models(self) -> list[router_pb2.Model]:
        return [self._model(spec) for spec in self.mesh.catalog]

    def _model(self, spec: ModelSpec) -> router_pb2.Model:
        """The catalog entry with whether a live worker can run it now, and if not why."""
        if spec.task == "app":
            return spec.to_proto()  # apps scale from zero on the apps runners
        workers = [v.info() for v in self.mesh.registry.for_service(spec.service)]
        available, reason = availability(needs_of(spec, spec.id), spec.service, workers)
        return spec.to_proto(available, reason)

    @servicer_errors
    async def ListModels(self, request: router_pb2.ListModelsRequest,
                         context: grpc.aio.ServicerContext) -> router_pb2.ListModelsResponse:
        await self.mesh.auth.identify(context)
        models = [m for m in self._models()
                  if (not request.task or m.task == request.task)
                  and (not request.service or m.service == request.service)]
        return router_pb2.ListModelsResponse(models=models)

    @servicer_errors
    async def GetModel(self, request: router_pb2.GetModelRequest,
                       context: grpc.aio.ServicerContext) -> router_pb2.GetModelResponse:
        await self.mesh.auth.identify(context)
        return router_pb2.GetModelResponse(model=self._model(self.mesh.catalog.get(request.model_id)))

    @servicer_errors
    async def Run(self, request: router_pb2.RunRequest,
                  context: grpc.aio.ServicerContext) -> router_pb2.RunResponse:
        identity = await self.mesh.auth.admit(context)
        prep = self.mesh.runner.prepare_json(request.model_id, request.input)
        response = router_pb2.RunResponse()
        started = time.perf_counter()
        async for request_id, case, payload in self.mesh.run_events(
                identity, prep, mode="sync", timeout_s=request.timeout.ToNanoseconds() / 1e9, partials_reach_caller=False):
            response.request_id = request_id
            if case == "usage":
                response.usage.MergeFrom(payload)
            elif case == "result":
                response.output.update(result_output(payload))
        response.inference_time_seconds = time.perf_counter() - started
        return response

    @servicer_errors
    async def Stream(self, request: router_pb2.StreamRequest,
                     context: grpc.aio.ServicerContext) -> AsyncIterator[router_pb2.StreamResponse]:
        # The one RPC a realtime token (edge-issued, carrying a key id) may call.
        identity = await self.mesh.auth.admit(context, realtime_model=request.model_id)
        prep = self.mesh.runner.prepare_json(request.model_id, request.input)
        async for request_id, case, payload in self.mesh.run_events(
                identity, prep, mode="stream", timeout_s=request.timeout.ToNanoseconds() / 1e9):
            yield to_generic(request_id, case, payload)

    @servicer_errors
    async def Submit(self, request: router_pb2.SubmitRequest,
                     context: grpc.aio.ServicerContext) -> router_pb2.SubmitResponse:
        identity = await self.mesh.auth.admit(context)
        prep = self.mesh.runner.prepare_json(request.model_id, request.input)
        job, position = await self.mesh.queue.submit(identity, prep, request)
        return router_pb2.SubmitResponse(request_id=job.id, queue_position=position,
                                         status=job.to_state(logs=False).status)

    @servicer_errors
    async def Status(self, request: router_pb2.StatusRequest,
                     context: grpc.aio.ServicerContext) -> router_pb2.StatusResponse:
        identity = await self.mesh.auth.identify(context)
        job = await self.mesh.owned_job(identity, request.request_id)
        position = await self.mesh.store.queue_position(job)
        return router_pb2.StatusResponse(job=job.to_state(logs=request.logs, queue_position=position))

    @servicer_errors
    async def WatchStatus(self, request: router_pb2.WatchStatusRequest,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[router_pb2.WatchStatusResponse]:
        identity = await self.mesh.auth.identify(context)
        job = await self.mesh.owned_job(identity, request.request_id)
        changes: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_event(msg: Any) -> None:
            changes.put_nowait(msg.data)

        # Subscribe before reading the current state so no change falls between the two.
        sub = await self.mesh.nc.subscribe(bus.events_subject(job.id), cb=on_event)
        try:
            last = None
            while True:
                job = await self.mesh.owned_job(identity, request.request_id)
                state = job.to_state(logs=request.logs, queue_position=await self.mesh.store.queue_position(job))
                key = (state.status, state.queue_position, state.progress.step, len(state.logs))
                if key != last:
                    last = key
                    yield router_pb2.WatchStatusResponse(job=state)
                if job.terminal:
                    return
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changes.get(), timeout=2.0)
                while not changes.empty():
                    changes.get_nowait()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    @servicer_errors
    async def Result(self, request: router_pb2.ResultRequest,
                     context: grpc.aio.ServicerContext) -> router_pb2.ResultResponse:
        identity = await self.mesh.auth.identify(context)
        job = await self.mesh.owned_job(identity, request.request_id)
        return job.result_response(request.view)

    @servicer_errors
    async def Cancel(self, request: router_pb2.CancelRequest,
                     context: grpc.aio.ServicerContext) -> router_pb2.CancelResponse:
        identity = await self.mesh.auth.identify(context)
        try:
            job = await self.mesh.owned_job(identity, request.request_id)
        except NotFound:
            return router_pb2.CancelResponse(outcome=router_pb2.CANCEL_OUTCOME_NOT_FOUND)
        return router_pb2.CancelResponse(outcome=await self.mesh.queue.cancel(job))

    @servicer_errors
    async def ListWebhookDeliveries(self, request: router_pb2.ListWebhookDeliveriesRequest,
                                    context: grpc.aio.ServicerContext) -> router_pb2.ListWebhookDeliveriesResponse:
        identity = await self.mesh.auth.identify(context)
        await self.mesh.owned_job(identity, request.request_id)
        out = router_pb2.ListWebhookDeliveriesResponse()
        for row in await self.mesh.store.deliveries(request.request_id):
            d = out.deliveries.add(attempt=row["attempt"], url=row["url"], status_code=row["status_code"],
                                   error=row["error"] or "", duration_seconds=row["duration_s"])
            d.attempted_at.FromDatetime(row["attempted_at"])
        return out

    @servicer_errors
    async def ListWorkers(self, request: router_pb2.ListWorkersRequest,
                          context: grpc.aio.ServicerContext) -> router_pb2.ListWorkersResponse:
        identity = await self.mesh.auth.identify(context)
        if not identity.is_admin:
            raise PermissionDenied("listing workers needs an admin key")
        views = self.mesh.registry.workers.values()
        return router_pb2.ListWorkersResponse(workers=[
            v.state for v in views if not request.service or v.state.service == request.service])


class ProxyMethod:
    """One typed modality RPC served by the router and forwarded to a placed worker."""

    def __init__(self, mesh: Mesh, task: Task) -> None:
        self.mesh = mesh
        self.task = task

    @servicer_errors
    async def stream(self, request: Message, context: grpc.aio.ServicerContext) -> AsyncIterator[Message]:
        identity = await self.mesh.auth.admit(context)
        prep = self.mesh.runner.prepare_typed(self.task, request)
        request_id = await announce_request_id(context)
        async for _rid, _case, event in self.mesh.run_events(identity, prep, mode="grpc", timeout_s=None,
                                                             whole_events=True, request_id=request_id):
            yield event

    @servicer_errors
    async def unary(self, request: Message, context: grpc.aio.ServicerContext) -> Message:
        identity = await self.mesh.auth.admit(context)
        prep = self.mesh.runner.prepare_typed(self.task, request)
        request_id = await announce_request_id(context)
        result: Message | None = None
        async for _rid, _case, payload in self.mesh.run_events(identity, prep, mode="grpc", timeout_s=None,
                                                               partials_reach_caller=False,
                                                               request_id=request_id):
            result = payload
        if result is None:
            raise InvalidArgument("the worker returned nothing", field="model_id")
        return result


async def announce_request_id(context: grpc.aio.ServicerContext) -> str:
    """A new request id, sent at once as the call's initial metadata (`x-request-id`): the typed
    responses have no field for it, and the edge returns it to its client before the first event."""
    request_id = uuid.uuid4().hex
    await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
    return request_id


def proxy_handlers(mesh: Mesh) -> list[grpc.GenericRpcHandler]:
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for path, task in PROXIED_METHODS.items():
        service, method = path.strip("/").split("/")
        proxy = ProxyMethod(mesh, task)
        if task.streaming:
            handler = grpc.unary_stream_rpc_method_handler(
                proxy.stream, request_deserializer=task.request_cls.FromString,
                response_serializer=task.response_cls.SerializeToString)
        else:
            handler = grpc.unary_unary_rpc_method_handler(
                proxy.unary, request_deserializer=task.request_cls.FromString,
                response_serializer=task.response_cls.SerializeToString)
        by_service.setdefault(service, {})[method] = handler
    return [grpc.method_handlers_generic_handler(s, m) for s, m in by_service.items()]


class RouterComponent:
    def __init__(self, settings: Settings) -> None:
        self.mesh = Mesh(settings)
        proxied = sorted({p.strip("/").split("/")[0] for p in PROXIED_METHODS})
        self.service_names = ["genmesh.v1.Router", "genmesh.v1.VectorStores", *proxied,
                              *self.mesh.apps.service_names]

    def register(self, server: grpc.aio.Server) -> None:
        router_pb2_grpc.add_RouterServicer_to_server(RouterServicer(self.mesh), server)
        vector_stores_pb2_grpc.add_VectorStoresServicer_to_server(VectorStoresServicer(self.mesh), server)
        server.add_generic_rpc_handlers(proxy_handlers(self.mesh))
        self.mesh.apps.register(server)

    async def start(self, port: int) -> None:
        await self.mesh.start()

    async def drain(self) -> None:
        await self.mesh.drain()

    async def stop(self) -> None:
        await self.mesh.stop()


__all__ = ["RouterComponent", "jsonpb"]
