"""Live collections: vector stores that follow a NATS subject. A message published there (a text
body, or JSON {"text", "attributes", "id"}) is chunked, embedded (billed to the store's key) and
searchable, typically tens of milliseconds later.

Tenancy: an ordinary key's store follows `genmesh.collections.<store id>`, nothing else; only an
admin key may name a subject of its own, and never one under `genmesh.` (the mesh's internal
subjects: queue, usage, job events, heartbeats), `$` (JetStream/system) or `_INBOX`.

Once each, surviving restarts: `genmesh.collections.>` is a JetStream stream (work-queue
retention) read by one durable consumer that every router replica pulls from, so each message is
indexed by one replica, and one published while no router runs is indexed when one starts. An
admin's own subject is core NATS, read in a queue group per store (one replica each message);
every replica subscribes to those from Postgres at start and again whenever a store is created or
deleted (a broadcast on `genmesh.vector_stores.changed`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from typing import Any

import orjson
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from genmesh import bus
from genmesh.errors import GenmeshError, InvalidArgument, PermissionDenied
from genmesh.keys import Identity
from genmesh.v1 import vector_stores_pb2 as pb
from genmesh.services.router.chunking import Chunking
from genmesh.services.router.vector_stores import FILE_ID, Document, checked_attributes

log = logging.getLogger("genmesh.router.collections")
STREAM = "COLLECTIONS"
PREFIX = "genmesh.collections."
CONSUMER = "collections-indexer"
CHANGED_SUBJECT = "genmesh.vector_stores.changed"
FETCH_BATCH = 64
DRAIN_WAIT_S = 0.005
MAX_DELIVER = 5
_SUBJECT = re.compile(r"[A-Za-z0-9_\-]+|\*|>")
RESERVED_PREFIXES = ("genmesh.", "$", "_INBOX")


def derived_subject(store_id: str) -> str:
    return PREFIX + store_id


def checked_admin_subject(subject: str) -> str:
    """A subject an admin may have a store follow: valid NATS syntax, outside the mesh's own."""
    tokens = subject.split(".")
    if subject.startswith(RESERVED_PREFIXES) or tokens[0] in ("*", ">"):
        raise PermissionDenied("subjects under genmesh., $ and _INBOX (and wildcards over them) are the "
                               "mesh's own", field="subject")
    if not subject or len(subject) > 256 or not all(_SUBJECT.fullmatch(t) for t in tokens) \
            or ">" in tokens[:-1]:
        raise InvalidArgument("must be a NATS subject (dot-separated tokens of letters, digits, _ and -; "
                              "'*' and a final '>' as wildcards)", field="subject")
    return subject


def parse_message(data: bytes, subject: str, fallback_id: str) -> Document:
    """A message's document: JSON {"text", "attributes", "id"} or, otherwise, the body as text
    (ValueError when it is neither)."""
    text: Any = None
    attributes: Any = {}
    doc_id: Any = fallback_id
    stripped = data.lstrip()
    if stripped.startswith(b"{"):
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict) and "text" in body:
            text, attributes, doc_id = body["text"], body.get("attributes") or {}, body.get("id") or fallback_id
    if text is None:
        text = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the message holds no text")
    if not isinstance(attributes, dict):
        raise ValueError("attributes must be an object")
    if not isinstance(doc_id, str) or not FILE_ID.fullmatch(doc_id):
        raise ValueError("id must be letters, digits and _.:- (at most 128)")
    try:
        checked_attributes(attributes)
    except InvalidArgument as exc:
        raise ValueError(exc.message) from None
    return Document(doc_id, subject, text, attributes)


class Collections:
    """The followers of every live collection, on one router replica."""

    def __init__(self, mesh: Any) -> None:
        self.mesh = mesh
        self._core: dict[str, tuple[str, Any]] = {}  # store id -> (subject, subscription)
        self._tasks: list[asyncio.Task[None]] = []
        self._stores: dict[str, tuple[str, Chunking]] = {}  # store id -> (owner key id, chunking)
        self._reconcile_lock = asyncio.Lock()

    def subject_for(self, identity: Identity, request: pb.CreateVectorStoreRequest) -> str:
        if not request.subject:
            return PREFIX + "{id}"
        if not identity.is_admin:
            raise PermissionDenied("only an admin key may choose the subject; leave it out to follow "
                                   "genmesh.collections.<vector store id>", field="subject")
        return checked_admin_subject(request.subject)

    async def start(self) -> None:
        js = self.mesh.nc.jetstream()
        config = StreamConfig(name=STREAM, subjects=[PREFIX + ">"], retention=RetentionPolicy.WORK_QUEUE,
                              storage=StorageType.FILE, max_age=7 * 86400.0)
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)
        await bus.ensure_consumer(js, STREAM, CONSUMER, PREFIX + ">", ack_wait=60.0, max_deliver=MAX_DELIVER)
        self._sub = await js.pull_subscribe_bind(CONSUMER, stream=STREAM)
        await self.mesh.nc.subscribe(CHANGED_SUBJECT, cb=self._on_changed)
        await self.reconcile()
        self._tasks.append(asyncio.create_task(self._pull_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def changed(self) -> None:
        """A store was created or deleted: every replica (this one included) re-reads the followers."""
        self._stores.clear()
        await self.reconcile()
        with contextlib.suppress(Exception):
            await self.mesh.nc.publish(CHANGED_SUBJECT, b"")

    async def _on_changed(self, _msg: Any) -> None:
        self._stores.clear()
        await self.reconcile()

    async def reconcile(self) -> None:
        """Core subscriptions (admin subjects) match Postgres: one per following store."""
        async with self._reconcile_lock:
            rows = await self.mesh.pool.fetch("SELECT id, subject FROM vector_stores WHERE subject <> '' "
                                              "AND subject NOT LIKE 'genmesh.collections.%'")
            wanted = {r["id"]: r["subject"] for r in rows}
            for store_id, (subject, sub) in list(self._core.items()):
                if wanted.get(store_id) != subject:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
                    del self._core[store_id]
            for store_id, subject in wanted.items():
                if store_id not in self._core:
                    sub = await self.mesh.nc.subscribe(subject, queue=f"genmesh-collection-{store_id}",
                                                       cb=self._core_handler(store_id))
                    self._core[store_id] = (subject, sub)

    def _core_handler(self, store_id: str) -> Any:
        async def on_message(msg: Any) -> None:
            try:
                doc = parse_message(msg.data, msg.subject, "msg_" + uuid.uuid4().hex)
            except ValueError as exc:
                log.warning("collection message dropped", extra={"vector_store_id": store_id, "error": str(exc)})
                return
            try:
                await self._index(store_id, [doc])
            except Exception as exc:  # noqa: BLE001 - core NATS has no redelivery; log and go on
                log.error("collection message not indexed", exc_info=exc, extra={"vector_store_id": store_id})
        return on_message

    async def _store(self, store_id: str) -> tuple[str, Chunking] | None:
        hit = self._stores.get(store_id)
        if hit is None:
            row = await self.mesh.pool.fetchrow("SELECT api_key_id, chunking FROM vector_stores WHERE id=$1 "
                                                "AND subject <> ''", store_id)
            if row is None:
                return None
            hit = (row["api_key_id"], Chunking.from_json(row["chunking"]))
            self._stores[store_id] = hit
        return hit

    async def _index(self, store_id: str, docs: list[Document]) -> bool:
        """False when the store no longer follows its subject (the messages are dropped)."""
        store = await self._store(store_id)
        if store is None:
            return False
        owner, chunking = store
        # The last message of one id wins within a batch, as it would one after another.
        unique = list({d.file_id: d for d in docs}.values())
        await self.mesh.vector_stores.index(owner, store_id, unique, chunking, upsert=True, mode="collection")
        return True

    async def _pull_loop(self) -> None:
        while True:
            try:
                # One message long-polled, then whatever else is waiting: nats-py's fetch of a
                # batch waits out its whole timeout for the batch to fill, which would hold a
                # lone message back for seconds.
                msgs = await self._sub.fetch(1, timeout=5)
            except asyncio.TimeoutError:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - NATS reconnecting: try again shortly
                log.warning("collections fetch failed", extra={"error": str(exc)})
                await asyncio.sleep(0.5)
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                msgs += await self._sub.fetch(FETCH_BATCH - 1, timeout=DRAIN_WAIT_S)
            await self._handle_batch(msgs)

    async def _handle_batch(self, msgs: list[Any]) -> None:
        by_store: dict[str, list[tuple[Any, Document]]] = {}
        for msg in msgs:
            store_id = msg.subject[len(PREFIX):]
            try:
                # The stream sequence names a message without an id: a redelivery replaces, not duplicates.
                doc = parse_message(msg.data, msg.subject, f"msg_{msg.metadata.sequence.stream}")
            except ValueError as exc:
                log.warning("collection message dropped", extra={"vector_store_id": store_id, "error": str(exc)})
                await msg.term()
                continue
            by_store.setdefault(store_id, []).append((msg, doc))
        for store_id, items in by_store.items():
            try:
                await self._index(store_id, [d for _, d in items])
            except (GenmeshError, OSError) as exc:
                log.warning("collection batch not indexed; redelivering",
                            extra={"vector_store_id": store_id, "error": str(exc)})
                for msg, _ in items:
                    await msg.nak(delay=1.0)
                continue
            except Exception as exc:  # noqa: BLE001 - a bad batch must not stop the follower
                log.error("collection batch failed", exc_info=exc, extra={"vector_store_id": store_id})
                for msg, _ in items:
                    await msg.nak(delay=1.0)
                continue
            for msg, _ in items:
                await msg.ack()
