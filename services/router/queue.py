"""The durable async queue: submit (Postgres, then JetStream), pull loops per service and priority,
running claimed jobs to their end, cancellation, timeouts, events, usage and webhooks.

A job's JetStream message is acked only after the job has ended in Postgres; a router that dies
leaves its messages unacked, JetStream redelivers them after `ack_wait`, and the job's lease in
Postgres (which expires with it) lets the next router claim it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from google.protobuf.message import Message
from nats.aio.client import Client
from nats.js import JetStreamContext

from genmesh import bus, jsonpb
from genmesh.errors import Cancelled, DeadlineExceeded, GenmeshError, Unavailable
from genmesh.keys import Identity
from genmesh.tasks import SERVICES, without_partials
from genmesh.v1 import common_pb2, router_pb2
from genmesh.services.router.convert import usage_items
from genmesh.services.router.dispatch import check_runnable
from genmesh.services.router.jobs import STATUS_ENUM, Job, JobStore
from genmesh.services.router.registry import WorkerRegistry
from genmesh.services.router.runner import Outcome, Prepared, Runner
from genmesh.services.router.usage import UsagePublisher, record
from genmesh.services.router.webhooks import WebhookSender

log = logging.getLogger("genmesh.router.queue")
PROGRESS_EVERY_S = 0.25
# The normal-priority fetch's long-poll wait: short while jobs flow, growing to IDLE_FETCH_S
# while the queue is empty (each fetch is a JetStream request: cheap, but not free when idle).
BUSY_FETCH_S = 0.25
IDLE_FETCH_S = 5.0
# With no free slot, how long the pull loop waits before looking again when nothing said a slot
# freed (its own jobs ending, a worker joining or its load changing all wake it at once).
NO_SLOT_RECHECK_S = 5.0


class LeaseLost(Exception):
    """This router can no longer show that it holds a job's lease: another router may run it."""


def priority_name(priority: int) -> str:
    return "low" if priority == common_pb2.PRIORITY_LOW else "normal"


class JobQueue:
    def __init__(self, *, router_id: str, nc: Client, js: JetStreamContext, store: JobStore,
                 runner: Runner, registry: WorkerRegistry, usage: UsagePublisher,
                 webhooks: WebhookSender, ack_wait_s: float, default_run_timeout_s: float) -> None:
        self.router_id = router_id
        self.nc = nc
        self.js = js
        self.store = store
        self.runner = runner
        self.registry = registry
        self.usage = usage
        self.webhooks = webhooks
        self.ack_wait_s = ack_wait_s
        self.default_run_timeout_s = default_run_timeout_s
        self.running: dict[str, asyncio.Task[None]] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._cancel_sub: Any = None
        self._stopping = False
        # Set when one of a service's jobs ends, so its pull loop fetches again at once: the
        # worker is free before the job's end is written, so a registry change comes too early.
        self._slot_freed: dict[str, asyncio.Event] = {}

    # --- submit ---------------------------------------------------------------------------------

    async def submit(self, identity: Identity, prep: Prepared, req: router_pb2.SubmitRequest) -> tuple[Job, int]:
        """Commits the job to Postgres, then enqueues it; answers only once both hold."""
        if req.webhook_url:
            await self.webhooks.check_target(req.webhook_url, "webhook_url")
        check_runnable(self.registry, prep.spec, prep.task.service)
        # Validated once (in prepare_*), stored typed; an app job keeps its JSON body instead.
        if prep.stores_json:
            stored: dict[str, Any] = {"input": prep.stored_input()}
        else:
            request_type, request = prep.stored_request()
            stored = {"request": request, "request_type": request_type}
        job, created = await self.store.create(
            request_id=uuid.uuid4().hex, model_id=prep.model_id, service=prep.task.service,
            api_key_id=identity.key_id, **stored, priority=priority_name(req.priority),
            webhook_url=req.webhook_url or None, idempotency_key=req.idempotency_key or None,
            start_timeout_s=req.start_timeout.ToNanoseconds() / 1e9 or None,
            run_timeout_s=req.run_timeout.ToNanoseconds() / 1e9 or None)
        if created or job.status == "IN_QUEUE":
            # A retry with the same idempotency key re-publishes a still-queued job: the first
            # attempt may have committed the row but died before enqueueing it. JetStream drops
            # the duplicate by Nats-Msg-Id, and a late duplicate finds the job claimed or ended.
            try:
                await self.js.publish(bus.queue_subject(job.service, job.priority), job.id.encode(),
                                      headers={"Nats-Msg-Id": job.id}, timeout=5)
            except Exception as exc:  # noqa: BLE001 - not enqueued: take the job back, tell the client
                if created:
                    await self.store.delete(job.id)
                raise Unavailable(f"the queue is unavailable, nothing was enqueued: {exc!r}") from exc
            if created:
                await self.publish_event(job)
        return job, await self.store.queue_position(job)

    # --- events ---------------------------------------------------------------------------------

    async def publish_event(self, job: Job, queue_position: int = 0) -> None:
        with contextlib.suppress(Exception):
            state = job.to_state(logs=False, queue_position=queue_position)
            await self.nc.publish(bus.events_subject(job.id), state.SerializeToString())

    # --- pulling and running --------------------------------------------------------------------

    async def start(self) -> None:
        for service in SERVICES:
            for prio in bus.PRIORITIES:
                await bus.ensure_consumer(self.js, bus.JOBS_STREAM, bus.queue_consumer(service, prio),
                                          bus.queue_subject(service, prio), ack_wait=self.ack_wait_s)
            self._loops.append(asyncio.create_task(self._pull_loop(service)))
        self._cancel_sub = await self.nc.subscribe("genmesh.jobs.*.cancel", cb=self._on_cancel)
        self._loops.append(asyncio.create_task(self._expire_loop()))

    async def drain(self) -> None:
        """Stop pulling; jobs already running finish (or are redelivered if we die)."""
        self._stopping = True
        for task in self._loops:
            task.cancel()
        if self.running:
            await asyncio.wait(list(self.running.values()), timeout=20)

    async def _on_cancel(self, msg: Any) -> None:
        request_id = msg.subject.split(".")[2]
        task = self.running.get(request_id)
        if task is not None:
            task.cancel()

    async def _pull_loop(self, service: str) -> None:
        subs = {}
        for prio in bus.PRIORITIES:
            subs[prio] = await self.js.pull_subscribe_bind(bus.queue_consumer(service, prio), bus.JOBS_STREAM)
        slot_freed = self._slot_freed.setdefault(service, asyncio.Event())
        wait = BUSY_FETCH_S
        while not self._stopping:
            try:
                slot_freed.clear()  # before counting, so a job ending after the count wakes us
                capacity = self.registry.capacity(service)
                mine = sum(1 for t in self.running.values() if getattr(t, "service", "") == service)
                slots = capacity - mine
                if slots <= 0:
                    # Until one of our jobs ends or a worker joins (or a second passes).
                    waits = [asyncio.ensure_future(slot_freed.wait()),
                             asyncio.ensure_future(self.registry.wait_changed(NO_SLOT_RECHECK_S, service))]
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    for waiter in waits:
                        waiter.cancel()
                    continue
                # A fetch is a long poll: a normal job arriving ends it at once. While the queue
                # stays empty the wait grows (to IDLE_FETCH_S), so an idle mesh is not polling
                # JetStream 20 times a second; a low-priority job then starts within that.
                msgs = await self._fetch(subs["normal"], slots, wait)
                if not msgs:
                    msgs = await self._fetch(subs["low"], 1, 0.05)
                wait = BUSY_FETCH_S if msgs else min(IDLE_FETCH_S, wait * 2)
                for msg in msgs:
                    self._spawn(service, msg)
                if msgs:
                    # Let the dispatches register as in flight before we look at free slots again.
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - NATS hiccup: keep the loop alive
                log.warning("pull failed", extra={"service": service, "error": repr(exc)})
                await asyncio.sleep(0.5)

    async def _fetch(self, sub: Any, batch: int, timeout: float) -> list[Any]:
        try:
            return await sub.fetch(batch=max(1, min(batch, 64)), timeout=timeout)
        except asyncio.TimeoutError:
            return []
        except Exception as exc:  # noqa: BLE001
            if "timeout" in repr(exc).lower():
                return []
            raise

    def _spawn(self, service: str, msg: Any) -> None:
        request_id = msg.data.decode()
        task = asyncio.create_task(self._handle(msg, request_id))
        task.service = service  # type: ignore[attr-defined]
        self.running[request_id] = task
        task.add_done_callback(lambda _t: self._job_done(service, request_id))

    def _job_done(self, service: str, request_id: str) -> None:
        self.running.pop(request_id, None)
        event = self._slot_freed.get(service)
        if event is not None:
            event.set()

    async def _handle(self, msg: Any, request_id: str) -> None:
        try:
            # Timed from before the claim is sent, so it never ends later than Postgres's lease.
            lease = asyncio.timeout_at(asyncio.get_running_loop().time() + self.ack_wait_s * 1.5)
            job = await self.store.claim(request_id, self.router_id, self.ack_wait_s * 1.5)
            if job is None:
                await self._settle_unclaimable(msg, request_id)
                return
            await self.publish_event(job)
            keeper = asyncio.create_task(self._keep_alive(msg, request_id, lease))
            try:
                await self._run(job, lease)
            finally:
                keeper.cancel()
            if not await self.usage.acked(request_id, self.ack_wait_s):
                # Not acked: the message stays, and its redelivery finds the job ended and
                # publishes the usage record again (billing's ledger keeps one).
                return
            await msg.ack()
        except asyncio.CancelledError:
            raise
        except LeaseLost:
            # Cut off from Postgres past the lease, or another router claimed the job since: the
            # message stays unacked, and whoever holds (or next claims) the job finishes it.
            log.warning("job lease lost; stopped running it here", extra={"request_id": request_id})
        except Exception:  # noqa: BLE001 - Postgres or NATS down: leave the message for redelivery
            log.exception("job handling failed; it will be redelivered", extra={"request_id": request_id})

    async def _settle_unclaimable(self, msg: Any, request_id: str) -> None:
        job = await self.store.get(request_id)
        if job is None:
            await msg.ack()  # never committed or expired
        elif job.terminal:
            # Ended already (perhaps by a router that died before acking): make sure its usage
            # record went out, then drop the message.
            self._publish_usage(job)
            if await self.usage.acked(job.id, self.ack_wait_s):
                await msg.ack()
        elif job.cancel_requested and job.status == "IN_QUEUE":
            ended = await self.store.finish(request_id, status="CANCELLED", error="cancelled before start",
                                            error_type="cancelled")
            if ended:
                await self._ended(ended)
            await msg.ack()
        else:
            # Another live router holds it; look again after its lease could have expired.
            await msg.nak(delay=self.ack_wait_s)

    async def _keep_alive(self, msg: Any, request_id: str, lease: asyncio.Timeout) -> None:
        """Renews the job's lease and pushes `lease` out with it; a run whose lease could not be
        renewed in time, or was taken over, is stopped by `lease` before anyone else may run it."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.ack_wait_s / 3)
            with contextlib.suppress(Exception):
                await msg.in_progress()
            sent = loop.time()
            # Failing to renew (Postgres unreachable) leaves `lease` to expire on its own; a run
            # already past its lease block has nothing left to reschedule.
            with contextlib.suppress(Exception):
                held = await self.store.renew(request_id, self.router_id, self.ack_wait_s * 1.5)
                lease.reschedule(sent + self.ack_wait_s * 1.5 if held else sent)

    async def _run(self, job: Job, lease: asyncio.Timeout) -> None:
        if job.start_timeout_s and time.time() - job.created_at.timestamp() > job.start_timeout_s:
            await self._end(job, "FAILED", error=f"not started within {job.start_timeout_s:g}s",
                            error_type="start_timeout")
            return
        try:
            if job.request is not None and job.request_type:
                # Validated at submit: its bytes go to the worker as stored.
                prep = self.runner.prepare_stored(job.model_id, job.request_type, job.request)
            else:
                # An app job, or one stored before typed requests (migration 0009): rebuilt from
                # its JSON and validated here, as it was then.
                assert job.input is not None  # the table's check: input or request
                prep = self.runner.prepare_json(job.model_id, job.input)
                assert prep.request is not None
                without_partials(prep.request)  # nobody streams a queued job: no per-step previews
        except GenmeshError as exc:
            await self._end(job, "FAILED", error=exc.message, error_type=exc.error_type)
            return
        outcome = Outcome(usage=common_pb2.Usage())
        run_timeout = job.run_timeout_s or self.default_run_timeout_s
        last_progress = 0.0
        try:
            async with asyncio.timeout(run_timeout), lease:
                async for case, payload in self.runner.events(
                        prep, request_id=job.id, outcome=outcome, wait_s=3600.0,
                        safe_to_retry_after_output=True, key_id=job.api_key_id):
                    if case == "progress" and time.monotonic() - last_progress > PROGRESS_EVERY_S:
                        last_progress = time.monotonic()
                        await self.store.set_progress(job.id, jsonpb.to_dict(payload))
                        await self.publish_event(job)
                    elif case == "log":
                        await self.store.append_log(job.id, log_dict(payload))
        except asyncio.CancelledError:
            if self._stopping:
                raise  # shutting down: leave the job for redelivery to another router
            await self._end(job, "CANCELLED", error="cancelled", error_type="cancelled", outcome=outcome)
            return
        except TimeoutError:
            if lease.expired():
                raise LeaseLost(job.id) from None
            await self._end(job, "FAILED", error=f"ran longer than {run_timeout:g}s",
                            error_type="run_timeout", outcome=outcome)
            return
        except GenmeshError as exc:
            await self._end(job, "FAILED", error=exc.message, error_type=exc.error_type, outcome=outcome)
            return
        if outcome.result is None:
            await self._end(job, "FAILED", error="the worker ended without a result",
                            error_type="internal_error", outcome=outcome)
            return
        # Stored typed, as the worker sent it: rendered into the caller's format when read.
        await self._end(job, "COMPLETED", result=outcome.result, outcome=outcome)

    async def _end(self, job: Job, status: str, *, result: Message | None = None,
                   error: str | None = None, error_type: str | None = None,
                   outcome: Outcome | None = None) -> None:
        ended = await self.store.finish(
            job.id, status=status, result=result,
            usage=usage_items(outcome.usage) if outcome else None, error=error,
            error_type=error_type, router_id=self.router_id)
        if ended is not None:
            await self._ended(ended)

    async def _ended(self, job: Job) -> None:
        await self.publish_event(job)
        self._publish_usage(job)
        if job.webhook_url:
            self.webhooks.deliver_soon(job)

    def _publish_usage(self, job: Job) -> None:
        usage = common_pb2.Usage(items=[common_pb2.UsageItem(**i) for i in (job.usage or [])])
        queue_time = (job.started_at - job.created_at).total_seconds() if job.started_at else 0.0
        run_time = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else 0.0
        spec = self.runner.catalog.find(job.model_id)
        self.usage.publish_soon(record(
            request_id=job.id, model_id=job.model_id, api_key_id=job.api_key_id,
            status=STATUS_ENUM[job.status], usage=usage, error=job.error or "",
            error_type=job.error_type or "", created_at=job.created_at, started_at=job.started_at,
            finished_at=job.finished_at, queue_time_s=queue_time, run_time_s=run_time, mode="queue",
            machine_type=spec.machine_type if spec else ""), track=True)

    # --- cancel ---------------------------------------------------------------------------------

    async def cancel(self, job: Job) -> int:
        if job.terminal:
            return router_pb2.CANCEL_OUTCOME_ALREADY_COMPLETED
        await self.store.request_cancel(job.id)
        if job.status == "IN_QUEUE":
            ended = await self.store.finish(job.id, status="CANCELLED", error="cancelled before start",
                                            error_type="cancelled")
            if ended is not None:
                await self._ended(ended)
                return router_pb2.CANCEL_OUTCOME_CANCELLATION_REQUESTED
        # Running somewhere: whichever router holds it stops it.
        await self.nc.publish(bus.cancel_subject(job.id), b"")
        return router_pb2.CANCEL_OUTCOME_CANCELLATION_REQUESTED

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(3600)
            with contextlib.suppress(Exception):
                await self.store.expire()


def log_dict(entry: common_pb2.LogEntry) -> dict[str, Any]:
    level = common_pb2.LogLevel.Name(entry.level).removeprefix("LOG_LEVEL_").lower()
    return {"message": entry.message, "level": "info" if level == "unspecified" else level,
            "source": entry.source or "worker",
            "timestamp": entry.timestamp.ToJsonString() if entry.HasField("timestamp") else
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


__all__ = ["JobQueue", "Cancelled", "DeadlineExceeded"]
