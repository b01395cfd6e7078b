"""The NATS JetStream bus: connection, streams and consumers (idempotent set-up), and subjects.

Subjects:
  genmesh.queue.<service>.<priority>   durable job queue (stream JOBS, work-queue retention)
  genmesh.usage.<model-owner>          usage records, one per finished request (stream USAGE)
  genmesh.usage.batch.<router>         usage records in batches (UsageBatch, header Genmesh-Usage)
  genmesh.jobs.<request_id>.events     live status changes of one job (core NATS)
  genmesh.jobs.<request_id>.cancel     cancel a running job on whichever router holds it
  genmesh.workers.heartbeat            worker state, every heartbeat interval (core NATS)
  genmesh.keys.revoked                 an API key was revoked: drop it from caches now
"""
from __future__ import annotations

import logging
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType,
                         StreamConfig)
from nats.js.errors import BadRequestError, NotFoundError

log = logging.getLogger("genmesh.bus")

JOBS_STREAM = "JOBS"
USAGE_STREAM = "USAGE"
HEARTBEAT_SUBJECT = "genmesh.workers.heartbeat"
KEY_REVOKED_SUBJECT = "genmesh.keys.revoked"
PRIORITIES = ("normal", "low")


def queue_subject(service: str, priority: str) -> str:
    return f"genmesh.queue.{service}.{priority}"


def queue_consumer(service: str, priority: str) -> str:
    return f"queue-{service}-{priority}"


def usage_subject(model_id: str) -> str:
    return "genmesh.usage." + model_id.split("/", 1)[0].replace(".", "_")


# Batches have four subject tokens, so no model owner's subject (three) is ever one.
USAGE_BATCH_HEADER = "Genmesh-Usage"


def usage_batch_subject(publisher_id: str) -> str:
    return "genmesh.usage.batch." + publisher_id.replace(".", "_")


def usage_records(data: bytes, headers: dict[str, str] | None) -> list[Any]:
    """The UsageRecords of one message on the USAGE stream, batched or single (DecodeError when
    it is neither)."""
    from genmesh.v1 import billing_pb2

    if headers and headers.get(USAGE_BATCH_HEADER) == "batch":
        return list(billing_pb2.UsageBatch.FromString(data).records)
    return [billing_pb2.UsageRecord.FromString(data)]


def events_subject(request_id: str) -> str:
    return f"genmesh.jobs.{request_id}.events"


def cancel_subject(request_id: str) -> str:
    return f"genmesh.jobs.{request_id}.cancel"


async def connect(url: str, name: str) -> Client:
    """Connects with unbounded reconnects: a NATS restart must not take a service down."""
    async def on_disconnect() -> None:
        log.warning("nats disconnected", extra={"url": url})

    async def on_reconnect() -> None:
        log.info("nats reconnected", extra={"url": url})

    return await nats.connect(url, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.25,
                              disconnected_cb=on_disconnect, reconnected_cb=on_reconnect,
                              connect_timeout=5, allow_reconnect=True, drain_timeout=2,
                              # A silently dead link (a cut network) is noticed in ~10 s, not 4 min.
                              ping_interval=5, max_outstanding_pings=2)


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError:
        # Exists with other settings: bring it to ours.
        await js.update_stream(config)


async def ensure_streams(js: JetStreamContext) -> None:
    """Creates (or updates) the durable streams; safe to call from every service at start."""
    await _ensure_stream(js, StreamConfig(
        name=JOBS_STREAM, subjects=["genmesh.queue.>"], retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE, duplicate_window=120.0))
    await _ensure_stream(js, StreamConfig(
        name=USAGE_STREAM, subjects=["genmesh.usage.>"], retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE, duplicate_window=600.0, max_age=30 * 86400.0))


async def ensure_consumer(js: JetStreamContext, stream: str, durable: str, filter_subject: str, *,
                          ack_wait: float = 30.0, max_deliver: int = -1,
                          max_ack_pending: int = 10000) -> None:
    config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT,
                            deliver_policy=DeliverPolicy.ALL, filter_subject=filter_subject,
                            ack_wait=ack_wait, max_deliver=max_deliver,
                            max_ack_pending=max_ack_pending)
    try:
        info = await js.consumer_info(stream, durable)
        if info.config.filter_subject == filter_subject and info.config.ack_wait == ack_wait:
            return
    except NotFoundError:
        pass
    await js.add_consumer(stream, config)


async def ensure_queue_consumers(js: JetStreamContext, services: list[str]) -> None:
    for service in services:
        for priority in PRIORITIES:
            await ensure_consumer(js, JOBS_STREAM, queue_consumer(service, priority),
                                  queue_subject(service, priority), ack_wait=30.0)
