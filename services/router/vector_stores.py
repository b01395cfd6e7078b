"""Vector stores on the router: the `vector_stores`, `vector_store_files` and `vector_store_chunks`
tables (pgvector in the mesh's Postgres, so every router replica answers for every store), the
indexing of documents (chunk, embed through the mesh's embedding model, billed to the store's key)
and the VectorStores RPCs. Every query is scoped to the caller's key: another key's store is
NOT_FOUND, never listed, never searched.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Iterable

import asyncpg
import grpc

from genmesh import jsonpb
from genmesh.errors import GenmeshError, InvalidArgument, NotFound
from genmesh.jsonpb import enum_from_short_name, enum_short_name
from genmesh.keys import Identity
from genmesh.rpc import servicer_errors
from genmesh.tasks import PROXIED_METHODS
from genmesh.v1 import llm_pb2, vector_stores_pb2 as pb, vector_stores_pb2_grpc
from genmesh.services.router.chunking import Chunk, Chunking, ChunkTokenizer, parse_chunking, tokenizer_dir
from genmesh.services.router.vector_filters import SqlParams, filter_sql

log = logging.getLogger("genmesh.router.vector_stores")
STORE_ID = re.compile(r"vs_[A-Za-z0-9]{8,64}")
FILE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
MAX_DOCUMENT_BYTES = 32 * 1024 * 1024
MAX_NAME_CHARS = 256
MAX_METADATA_KEYS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512
MAX_ATTRIBUTES, MAX_ATTRIBUTE_KEY, MAX_ATTRIBUTE_VALUE = 16, 64, 512
MAX_FILES_PER_CREATE = 500
EMBED_BATCH = 256
INDEX_LEASE_S = 600.0
DEFAULT_ATTACH_WAIT_S = 5.0
# Text formats this store reads; others fail with `unsupported_file` (as OpenAI answers for them).
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-ndjson", "application/javascript",
              "application/x-yaml", "application/yaml", "application/x-sh", "application/csv")
# A file whose indexing router went away (its lease ran out): what the file shows, and the sweep records.
INTERRUPTED = pb.LastError(code=pb.LAST_ERROR_CODE_SERVER_ERROR,
                           message="indexing was interrupted; attach the file again")
_EMBED = PROXIED_METHODS["/genmesh.v1.LLM/Embed"]


@dataclass
class Document:
    """One text to index into a store (a file's content, or a live collection's message)."""

    file_id: str
    filename: str
    text: str
    attributes: dict[str, Any] = field(default_factory=dict)


def new_store_id() -> str:
    return "vs_" + secrets.token_hex(12)


def _unix(value: dt.datetime | None) -> int:
    return int(value.timestamp()) if value else 0


def _checked_map(values: dict[str, str], field_name: str) -> dict[str, str]:
    if len(values) > MAX_METADATA_KEYS:
        raise InvalidArgument(f"has at most {MAX_METADATA_KEYS} keys", field=field_name)
    for key, value in values.items():
        if len(key) > MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
            raise InvalidArgument(f"keys have at most {MAX_METADATA_KEY} characters, values at most "
                                  f"{MAX_METADATA_VALUE}", field=f"{field_name}.{key[:64]}")
    return dict(values)


def checked_attributes(values: dict[str, Any], field_name: str = "attributes") -> dict[str, Any]:
    """OpenAI's attribute limits: 16 keys, strings up to 512 characters, numbers or booleans."""
    if len(values) > MAX_ATTRIBUTES:
        raise InvalidArgument(f"has at most {MAX_ATTRIBUTES} keys", field=field_name)
    for key, value in values.items():
        if not key or len(key) > MAX_ATTRIBUTE_KEY:
            raise InvalidArgument(f"keys have 1 to {MAX_ATTRIBUTE_KEY} characters", field=field_name)
        if isinstance(value, str):
            if len(value) > MAX_ATTRIBUTE_VALUE:
                raise InvalidArgument(f"strings have at most {MAX_ATTRIBUTE_VALUE} characters",
                                      field=f"{field_name}.{key}")
        elif not isinstance(value, (bool, int, float)):
            raise InvalidArgument("must be a string, number or boolean", field=f"{field_name}.{key}")
    return values


# --- the storage boundary ----------------------------------------------------------------------
# The tables keep OpenAI's strings (a file's `status` column, `last_error` and `expires_after`
# jsonb): readable in psql and by the bench. The enums are mapped to and from them here, once.

def _status_column(status: int) -> str:
    """A file status as its `status` column holds it ("" for none)."""
    return enum_short_name(pb.VectorStoreFileStatus, status)


def _status_of(column: str) -> int:
    return enum_from_short_name(pb.VectorStoreFileStatus, column)


FILE_STATUSES = tuple(_status_column(n) for n in pb.VectorStoreFileStatus.values() if n)


def _error_column(error: pb.LastError) -> dict[str, str]:
    return {"code": enum_short_name(pb.LastErrorCode, error.code), "message": error.message[:1000]}


def _error_of(column: dict[str, str]) -> pb.LastError:
    return pb.LastError(code=enum_from_short_name(pb.LastErrorCode, column["code"]), message=column["message"])


def _expires(msg: pb.ExpiresAfter, field_name: str = "expires_after") -> dict[str, Any] | None:
    """A request's expiry policy, checked, as the `expires_after` column holds it (None: none)."""
    if msg.anchor == pb.EXPIRES_AFTER_ANCHOR_UNSPECIFIED and not msg.days:
        return None
    if msg.anchor != pb.EXPIRES_AFTER_ANCHOR_LAST_ACTIVE_AT:
        raise InvalidArgument("anchor must be 'last_active_at'", field=f"{field_name}.anchor")
    if not 1 <= msg.days <= 365:
        raise InvalidArgument("must be between 1 and 365", field=f"{field_name}.days")
    return {"anchor": enum_short_name(pb.ExpiresAfterAnchor, msg.anchor), "days": msg.days}


def _expires_of(column: dict[str, Any]) -> pb.ExpiresAfter:
    return pb.ExpiresAfter(anchor=enum_from_short_name(pb.ExpiresAfterAnchor, column["anchor"]), days=column["days"])


def decode_text(doc: pb.FileDocument) -> str:
    """A file's text, or ValueError (the file fails as unsupported_file)."""
    media = doc.content_type.split(";", 1)[0].strip().lower()
    if media and not media.startswith(TEXT_TYPES) and media != "application/octet-stream":
        raise ValueError(f"files of type {media} cannot be indexed; upload plain text, Markdown, JSON or CSV")
    try:
        text = doc.content.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the file is not UTF-8 text") from None
    if "\x00" in text:
        raise ValueError("the file is not text (it holds NUL bytes)")
    return text


def vector_literal(values: Iterable[float]) -> str:
    """pgvector's text form: '[0.1,0.2,...]'."""
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


class Embedder:
    """Embeds token windows through the mesh's embedding model, as the store's key: each call is
    a run like any other (placed, retried on a lost worker) and publishes its usage record."""

    def __init__(self, mesh: Any, model_id: str) -> None:
        self.mesh = mesh
        self.model_id = model_id
        self._tokenizer: ChunkTokenizer | None = None

    @property
    def tokenizer(self) -> ChunkTokenizer:
        if self._tokenizer is None:
            spec = self.mesh.catalog.get(self.model_id)
            self._tokenizer = ChunkTokenizer(tokenizer_dir(spec, self.mesh.settings.resolved_models_dir()))
        return self._tokenizer

    async def chunks(self, text: str, chunking: Chunking) -> list[Chunk]:
        return await asyncio.to_thread(self.tokenizer.chunks, text, chunking)

    async def query_ids(self, query: str) -> list[int]:
        chunks = await asyncio.to_thread(self.tokenizer.chunks, query, Chunking(self.tokenizer.window, 0))
        return chunks[0].token_ids if chunks else []

    async def embed(self, key_id: str, windows: list[list[int]], mode: str = "vector_store") -> list[list[float]]:
        out: list[list[float]] = []
        identity = Identity(key_id=key_id, scope="user")
        for start in range(0, len(windows), EMBED_BATCH):
            batch = windows[start:start + EMBED_BATCH]
            request = llm_pb2.EmbedRequest(model_id=self.model_id,
                                           token_input=[llm_pb2.TokenIds(ids=ids) for ids in batch])
            prep = self.mesh.runner.prepare_typed(_EMBED, request)
            result: Any = None
            async for _rid, case, payload in self.mesh.run_events(identity, prep, mode=mode, timeout_s=120,
                                                                  partials_reach_caller=False):
                if case == "result":
                    result = payload
            if result is None:
                raise GenmeshError("the embedding model returned nothing")
            out.extend(list(e.embedding) for e in sorted(result.data, key=lambda e: e.index))
        return out


STORE_COLUMNS = ("s.id, s.name, s.description, s.metadata, s.chunking, s.embedding_model, s.expires_after, s.expires_at, "
                 "s.subject, s.created_at, s.last_active_at")
FILE_COLUMNS = ("f.vector_store_id, f.file_id, f.filename, f.attributes, f.chunking, f.status, f.last_error, "
                "f.usage_bytes, f.lease_until, f.created_at")
_COUNTS = ("(SELECT jsonb_object_agg(status, n) FROM (SELECT status, count(*) AS n FROM vector_store_files "
           "WHERE vector_store_id = s.id GROUP BY status) c) AS counts, "
           "(SELECT coalesce(sum(usage_bytes), 0)::bigint FROM vector_store_files WHERE vector_store_id = s.id) AS bytes")


def _store_proto(row: asyncpg.Record) -> pb.VectorStore:
    counts = row["counts"] or {}
    out = pb.VectorStore(id=row["id"], name=row["name"], description=row["description"], metadata=row["metadata"], subject=row["subject"],
                         created_at=_unix(row["created_at"]), last_active_at=_unix(row["last_active_at"]),
                         expires_at=_unix(row["expires_at"]), usage_bytes=row["bytes"],
                         embedding_model=row["embedding_model"],
                         chunking_strategy=Chunking.from_json(row["chunking"]).to_proto())
    for status in FILE_STATUSES:  # FileCounts has a field for each status, by its column name
        setattr(out.file_counts, status, counts.get(status, 0))
    out.file_counts.total = sum(counts.values())
    if row["expires_after"]:
        out.expires_after.CopyFrom(_expires_of(row["expires_after"]))
    expired = row["expires_at"] is not None and row["expires_at"] < dt.datetime.now(dt.timezone.utc)
    out.status = (pb.VECTOR_STORE_STATUS_EXPIRED if expired else pb.VECTOR_STORE_STATUS_IN_PROGRESS
                  if out.file_counts.in_progress else pb.VECTOR_STORE_STATUS_COMPLETED)
    return out


def _file_proto(row: asyncpg.Record) -> pb.VectorStoreFile:
    status = _status_of(row["status"])
    error = _error_of(row["last_error"]) if row["last_error"] else None
    if status == pb.VECTOR_STORE_FILE_STATUS_IN_PROGRESS and row["lease_until"] \
            and row["lease_until"] < dt.datetime.now(dt.timezone.utc):
        # Its router went away mid-indexing (the start-up sweep records this too).
        status, error = pb.VECTOR_STORE_FILE_STATUS_FAILED, INTERRUPTED
    out = pb.VectorStoreFile(id=row["file_id"], vector_store_id=row["vector_store_id"], status=status,
                             created_at=_unix(row["created_at"]), usage_bytes=row["usage_bytes"],
                             filename=row["filename"], chunking_strategy=Chunking.from_json(row["chunking"]).to_proto())
    out.attributes.update(row["attributes"])
    if error is not None:
        out.last_error.CopyFrom(error)
    return out


def _page_args(limit: int, order: int) -> tuple[int, bool]:
    """The page size and whether the page descends (the default)."""
    limit = limit or 20
    if not 1 <= limit <= 100:
        raise InvalidArgument("must be between 1 and 100", field="limit")
    if order not in (pb.LIST_ORDER_UNSPECIFIED, pb.LIST_ORDER_ASC, pb.LIST_ORDER_DESC):
        raise InvalidArgument("must be 'asc' or 'desc'", field="order")
    return limit, order != pb.LIST_ORDER_ASC


def _past_cursor(row: asyncpg.Record, after: bool, descending: bool, columns: str, id_key: str,
                 params: SqlParams) -> str:
    """The rows past a page cursor, by (created_at, id): descending pages move to older rows after it."""
    op = ">" if descending != after else "<"
    return f"({columns}) {op} ({params.add(row['created_at'])}::timestamptz, {params.add(row[id_key])})"


class VectorStoreDB:
    """The tables, always through the caller's key id."""

    def __init__(self, pool: asyncpg.Pool, embedder: Embedder) -> None:
        self.pool = pool
        self.embedder = embedder
        self._tasks: set[asyncio.Task[None]] = set()

    async def sweep_interrupted(self) -> None:
        """Files whose indexing router went away (its lease ran out) are failed, not in progress forever."""
        await self.pool.execute(
            "UPDATE vector_store_files SET status='failed', last_error=$1::jsonb, lease_until=NULL "
            "WHERE status='in_progress' AND lease_until < now()", _error_column(INTERRUPTED))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- stores ----------------------------------------------------------------------------------

    async def _store_row(self, key_id: str, store_id: str, field_name: str = "vector_store_id", *,
                         counts: bool = False) -> asyncpg.Record:
        """The caller's store; its file counts and bytes (aggregates over its files) only with
        `counts`, for the store object itself: an ownership check needs none."""
        row = None
        if STORE_ID.fullmatch(store_id):
            columns = f"{STORE_COLUMNS}, {_COUNTS}" if counts else STORE_COLUMNS
            row = await self.pool.fetchrow(f"SELECT {columns} FROM vector_stores s "
                                           "WHERE s.id=$1 AND s.api_key_id=$2", store_id, key_id)
        # Another key's store is missing, not forbidden: ids must not leak.
        if row is None:
            raise NotFound(f"No vector store found with id '{store_id}'", field=field_name)
        return row

    async def get(self, key_id: str, store_id: str) -> pb.VectorStore:
        return _store_proto(await self._store_row(key_id, store_id, counts=True))

    async def create(self, key_id: str, req: pb.CreateVectorStoreRequest, subject: str) -> pb.VectorStore:
        if len(req.name) > MAX_NAME_CHARS:
            raise InvalidArgument(f"has at most {MAX_NAME_CHARS} characters", field="name")
        if len(req.description) > 512:
            raise InvalidArgument("has at most 512 characters", field="description")
        if len(req.files) > MAX_FILES_PER_CREATE:
            raise InvalidArgument(f"at most {MAX_FILES_PER_CREATE} files per request", field="file_ids")
        metadata = _checked_map(dict(req.metadata), "metadata")
        chunking = parse_chunking(req.chunking_strategy)
        expires = _expires(req.expires_after)
        store_id = new_store_id()
        subject = subject.replace("{id}", store_id)
        await self.pool.execute(
            "INSERT INTO vector_stores (id, api_key_id, name, metadata, chunking, embedding_model, expires_after, "
            "expires_at, subject, description) VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7::jsonb, "
            "now() + make_interval(days => $8), $9, $10)",
            store_id, key_id, req.name, metadata, chunking.to_json(), self.embedder.model_id, expires,
            expires["days"] if expires else None, subject, req.description)
        for doc in req.files:
            await self.attach(key_id, store_id, doc, {}, chunking, wait_s=0)
        return await self.get(key_id, store_id)

    async def list(self, key_id: str, req: pb.ListVectorStoresRequest) -> tuple[list[pb.VectorStore], bool]:
        limit, descending = _page_args(req.limit, req.order)
        params = SqlParams(3)
        where = ["s.api_key_id = $1"]
        for cursor, after in ((req.after, True), (req.before, False)):
            if cursor:
                row = await self._store_row(key_id, cursor, "after" if after else "before")
                where.append(_past_cursor(row, after, descending, "s.created_at, s.id", "id", params))
        direction = "DESC" if descending else "ASC"
        rows = await self.pool.fetch(
            f"SELECT {STORE_COLUMNS}, {_COUNTS} FROM vector_stores s WHERE {' AND '.join(where)} "
            f"ORDER BY s.created_at {direction}, s.id {direction} LIMIT $2", key_id, limit + 1, *params.values)
        return [_store_proto(r) for r in rows[:limit]], len(rows) > limit

    async def modify(self, key_id: str, req: pb.ModifyVectorStoreRequest) -> pb.VectorStore:
        await self._store_row(key_id, req.id)
        sets, params = [], SqlParams(3)
        if req.HasField("name"):
            if len(req.name) > MAX_NAME_CHARS:
                raise InvalidArgument(f"has at most {MAX_NAME_CHARS} characters", field="name")
            sets.append(f"name = {params.add(req.name)}")
        if req.replace_metadata:
            sets.append(f"metadata = {params.add(_checked_map(dict(req.metadata), 'metadata'))}::jsonb")
        if req.clear_expires_after:
            sets.append("expires_after = NULL, expires_at = NULL")
        else:
            expires = _expires(req.expires_after)
            if expires:
                sets.append(f"expires_after = {params.add(expires)}::jsonb, "
                            f"expires_at = last_active_at + make_interval(days => {params.add(expires['days'])})")
        if sets:
            await self.pool.execute(f"UPDATE vector_stores SET {', '.join(sets)} WHERE id=$1 AND api_key_id=$2",
                                    req.id, key_id, *params.values)
        return await self.get(key_id, req.id)

    async def delete(self, key_id: str, store_id: str) -> bool:
        if not STORE_ID.fullmatch(store_id):
            return False
        async with self.pool.acquire() as conn, conn.transaction():
            owned = await conn.fetchval("SELECT 1 FROM vector_stores WHERE id=$1 AND api_key_id=$2 FOR UPDATE",
                                        store_id, key_id)
            if not owned:
                return False
            await conn.execute("DELETE FROM vector_store_chunks WHERE vector_store_id=$1", store_id)
            await conn.execute("DELETE FROM vector_stores WHERE id=$1", store_id)
        return True

    # --- files -----------------------------------------------------------------------------------

    async def _file_row(self, key_id: str, store_id: str, file_id: str) -> asyncpg.Record:
        await self._store_row(key_id, store_id)
        row = await self.pool.fetchrow(f"SELECT {FILE_COLUMNS} FROM vector_store_files f "
                                       "WHERE f.vector_store_id=$1 AND f.file_id=$2", store_id, file_id)
        if row is None:
            raise NotFound(f"No file found with id '{file_id}' in vector store '{store_id}'", field="file_id")
        return row

    async def get_file(self, key_id: str, store_id: str, file_id: str) -> pb.VectorStoreFile:
        return _file_proto(await self._file_row(key_id, store_id, file_id))

    async def attach(self, key_id: str, store_id: str, doc: pb.FileDocument, attributes: dict[str, Any],
                     chunking: Chunking | None, *, wait_s: float) -> pb.VectorStoreFile:
        """Records the file in progress and indexes it in the background; answers once it is
        indexed or after `wait_s`, whichever comes first."""
        store = await self._store_row(key_id, store_id)
        if not FILE_ID.fullmatch(doc.file_id):
            raise InvalidArgument("must be a file id of letters, digits and _.:- (at most 128)", field="file_id")
        if len(doc.content) > MAX_DOCUMENT_BYTES:
            raise InvalidArgument(f"files of at most {MAX_DOCUMENT_BYTES} bytes can be indexed", field="file_id")
        checked_attributes(attributes)
        if chunking is None:  # the store's own strategy
            chunking = Chunking.from_json(store["chunking"])
        await self._begin_file(store_id, doc.file_id, doc.filename, attributes, chunking)
        task = asyncio.create_task(self._index_file(key_id, store_id, doc, attributes, chunking))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if wait_s > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), wait_s)
        return await self.get_file(key_id, store_id, doc.file_id)

    async def _begin_file(self, store_id: str, file_id: str, filename: str, attributes: dict[str, Any],
                          chunking: Chunking) -> None:
        # Attaching a file again re-indexes it: its old chunks go.
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM vector_store_chunks WHERE vector_store_id=$1 AND file_id=$2",
                               store_id, file_id)
            await conn.execute(
                "INSERT INTO vector_store_files (vector_store_id, file_id, filename, attributes, chunking, status, "
                "lease_until) VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, 'in_progress', "
                "now() + make_interval(secs => $6)) ON CONFLICT (vector_store_id, file_id) DO UPDATE SET "
                "filename=EXCLUDED.filename, attributes=EXCLUDED.attributes, chunking=EXCLUDED.chunking, "
                "status='in_progress', last_error=NULL, usage_bytes=0, lease_until=EXCLUDED.lease_until",
                store_id, file_id, filename, attributes, chunking.to_json(), INDEX_LEASE_S)

    async def _index_file(self, key_id: str, store_id: str, doc: pb.FileDocument, attributes: dict[str, Any],
                          chunking: Chunking) -> None:
        try:
            text = decode_text(doc)
        except ValueError as exc:
            await self._fail(store_id, doc.file_id, pb.LAST_ERROR_CODE_UNSUPPORTED_FILE, str(exc))
            return
        try:
            await self.index(key_id, store_id, [Document(doc.file_id, doc.filename, text, attributes)], chunking)
        except GenmeshError as exc:
            await self._fail(store_id, doc.file_id, pb.LAST_ERROR_CODE_SERVER_ERROR, exc.message)
        except Exception as exc:  # noqa: BLE001 - recorded on the file; the caller polls its status
            log.error("indexing failed", exc_info=exc, extra={"vector_store_id": store_id})
            await self._fail(store_id, doc.file_id, pb.LAST_ERROR_CODE_SERVER_ERROR, "indexing failed")

    async def _fail(self, store_id: str, file_id: str, code: int, message: str) -> None:
        await self.pool.execute("UPDATE vector_store_files SET status='failed', last_error=$3::jsonb, "
                                "lease_until=NULL WHERE vector_store_id=$1 AND file_id=$2",
                                store_id, file_id, _error_column(pb.LastError(code=code, message=message)))

    async def index(self, key_id: str, store_id: str, docs: list[Document], chunking: Chunking,
                    *, upsert: bool = False, mode: str = "vector_store") -> None:
        """Chunks, embeds (one call for all of `docs`) and stores `docs`, each marked completed.
        With `upsert` the file rows are made here too (live collections)."""
        pieces = [await self.embedder.chunks(d.text, chunking) for d in docs]
        windows = [c.token_ids for chunks in pieces for c in chunks]
        vectors = iter(await self.embedder.embed(key_id, windows, mode) if windows else [])
        async with self.pool.acquire() as conn, conn.transaction():
            for doc, chunks in zip(docs, pieces):
                if upsert:
                    await conn.execute("DELETE FROM vector_store_chunks WHERE vector_store_id=$1 AND file_id=$2",
                                       store_id, doc.file_id)
                    await conn.execute(
                        "INSERT INTO vector_store_files (vector_store_id, file_id, filename, attributes, chunking, "
                        "status) VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, 'in_progress') "
                        "ON CONFLICT (vector_store_id, file_id) DO UPDATE SET filename=EXCLUDED.filename, "
                        "attributes=EXCLUDED.attributes, status='in_progress', last_error=NULL",
                        store_id, doc.file_id, doc.filename, doc.attributes, chunking.to_json())
                await conn.executemany(
                    "INSERT INTO vector_store_chunks (vector_store_id, file_id, chunk_index, content, embedding) "
                    "VALUES ($1, $2, $3, $4, $5::vector)",
                    [(store_id, doc.file_id, i, c.text, vector_literal(next(vectors))) for i, c in enumerate(chunks)])
                status = pb.VECTOR_STORE_FILE_STATUS_COMPLETED if chunks else pb.VECTOR_STORE_FILE_STATUS_FAILED
                error = None if chunks else _error_column(
                    pb.LastError(code=pb.LAST_ERROR_CODE_INVALID_FILE, message="the file holds no text"))
                # A file deleted meanwhile stays deleted (no row to update; its chunks go with the FK check).
                done = await conn.execute(
                    "UPDATE vector_store_files SET status=$3, last_error=$4::jsonb, usage_bytes=$5, lease_until=NULL "
                    "WHERE vector_store_id=$1 AND file_id=$2", store_id, doc.file_id, _status_column(status), error,
                    sum(len(c.text.encode()) for c in chunks))
                if done.endswith(" 0"):
                    raise NotFound(f"file '{doc.file_id}' was removed while it was indexed")
            await conn.execute("UPDATE vector_stores SET last_active_at=now() WHERE id=$1", store_id)

    async def list_files(self, key_id: str, req: pb.ListFilesRequest) -> tuple[list[pb.VectorStoreFile], bool]:
        await self._store_row(key_id, req.vector_store_id)
        limit, descending = _page_args(req.limit, req.order)
        params = SqlParams(3)
        where = ["f.vector_store_id = $1"]
        if req.filter:
            if not _status_column(req.filter):
                raise InvalidArgument(f"must be one of {', '.join(FILE_STATUSES)}", field="filter")
            where.append(f"f.status = {params.add(_status_column(req.filter))}")
        for cursor, after in ((req.after, True), (req.before, False)):
            if cursor:
                row = await self._file_row(key_id, req.vector_store_id, cursor)
                where.append(_past_cursor(row, after, descending, "f.created_at, f.file_id", "file_id", params))
        direction = "DESC" if descending else "ASC"
        rows = await self.pool.fetch(
            f"SELECT {FILE_COLUMNS} FROM vector_store_files f WHERE {' AND '.join(where)} "
            f"ORDER BY f.created_at {direction}, f.file_id {direction} LIMIT $2",
            req.vector_store_id, limit + 1, *params.values)
        return [_file_proto(r) for r in rows[:limit]], len(rows) > limit

    async def delete_file(self, key_id: str, store_id: str, file_id: str) -> bool:
        await self._file_row(key_id, store_id, file_id)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM vector_store_chunks WHERE vector_store_id=$1 AND file_id=$2",
                               store_id, file_id)
            await conn.execute("DELETE FROM vector_store_files WHERE vector_store_id=$1 AND file_id=$2",
                               store_id, file_id)
        return True

    # --- search ----------------------------------------------------------------------------------

    async def search(self, key_id: str, req: pb.SearchVectorStoreRequest) -> list[pb.SearchResult]:
        if not req.vector_store_ids:
            raise InvalidArgument("is required", field="vector_store_ids")
        for store_id in req.vector_store_ids:
            await self._store_row(key_id, store_id)
        queries = [q for q in req.queries if q.strip()]
        if not queries:
            raise InvalidArgument("must be a non-empty string or list of strings", field="query")
        limit = req.max_num_results or 10
        if not 1 <= limit <= 50:
            raise InvalidArgument("must be between 1 and 50", field="max_num_results")
        if req.HasField("score_threshold") and not 0 <= req.score_threshold <= 1:
            raise InvalidArgument("must be between 0 and 1", field="ranking_options.score_threshold")
        params = SqlParams(4)
        where = ["c.vector_store_id = ANY($2::text[])", "f.status = 'completed'"]
        if req.HasField("filters"):
            where.append(filter_sql(req.filters, params))
        vectors = await self.embedder.embed(key_id, [await self.embedder.query_ids(q) for q in queries],
                                            mode="vector_store_search")
        best: dict[tuple[str, str, int], tuple[float, asyncpg.Record]] = {}
        sql = (f"SELECT c.vector_store_id, c.file_id, c.chunk_index, c.content, f.filename, f.attributes, "
               f"1 - (c.embedding <=> $1::vector) AS score FROM vector_store_chunks c "
               f"JOIN vector_store_files f USING (vector_store_id, file_id) WHERE {' AND '.join(where)} "
               f"ORDER BY c.embedding <=> $1::vector LIMIT $3")
        for vector in vectors:
            for row in await self.pool.fetch(sql, vector_literal(vector), list(req.vector_store_ids), limit,
                                             *params.values):
                key = (row["vector_store_id"], row["file_id"], row["chunk_index"])
                if key not in best or best[key][0] < row["score"]:
                    best[key] = (row["score"], row)
        await self.pool.execute("UPDATE vector_stores SET last_active_at=now(), expires_at = CASE WHEN "
                                "expires_after IS NULL THEN NULL ELSE now() + make_interval(days => "
                                "(expires_after->>'days')::int) END WHERE id = ANY($1::text[])",
                                list(req.vector_store_ids))
        ranked = sorted(best.values(), key=lambda s: -s[0])
        out = []
        for score, row in ranked[:limit]:
            if req.HasField("score_threshold") and score < req.score_threshold:
                continue
            result = pb.SearchResult(file_id=row["file_id"], filename=row["filename"], score=score,
                                     content=[row["content"]], vector_store_id=row["vector_store_id"])
            result.attributes.update(row["attributes"])
            out.append(result)
        return out


class VectorStoresServicer(vector_stores_pb2_grpc.VectorStoresServicer):
    """The VectorStores RPCs; needs the router's Mesh (auth, the store, the collections)."""

    def __init__(self, mesh: Any) -> None:
        self.mesh = mesh

    @property
    def db(self) -> VectorStoreDB:
        return self.mesh.vector_stores

    @servicer_errors
    async def CreateVectorStore(self, request: pb.CreateVectorStoreRequest,
                                context: grpc.aio.ServicerContext) -> pb.CreateVectorStoreResponse:
        identity = await self.mesh.auth.admit(context)
        subject = self.mesh.collections.subject_for(identity, request) if request.follow_subject else ""
        store = await self.db.create(identity.key_id, request, subject)
        if store.subject:
            await self.mesh.collections.changed()
        return pb.CreateVectorStoreResponse(vector_store=store)

    @servicer_errors
    async def ListVectorStores(self, request: pb.ListVectorStoresRequest,
                               context: grpc.aio.ServicerContext) -> pb.ListVectorStoresResponse:
        identity = await self.mesh.auth.identify(context)
        data, more = await self.db.list(identity.key_id, request)
        return pb.ListVectorStoresResponse(data=data, has_more=more)

    @servicer_errors
    async def GetVectorStore(self, request: pb.GetVectorStoreRequest,
                             context: grpc.aio.ServicerContext) -> pb.GetVectorStoreResponse:
        identity = await self.mesh.auth.identify(context)
        return pb.GetVectorStoreResponse(vector_store=await self.db.get(identity.key_id, request.id))

    @servicer_errors
    async def ModifyVectorStore(self, request: pb.ModifyVectorStoreRequest,
                                context: grpc.aio.ServicerContext) -> pb.ModifyVectorStoreResponse:
        identity = await self.mesh.auth.identify(context)
        return pb.ModifyVectorStoreResponse(vector_store=await self.db.modify(identity.key_id, request))

    @servicer_errors
    async def DeleteVectorStore(self, request: pb.DeleteVectorStoreRequest,
                                context: grpc.aio.ServicerContext) -> pb.DeleteVectorStoreResponse:
        identity = await self.mesh.auth.identify(context)
        if not await self.db.delete(identity.key_id, request.id):
            raise NotFound(f"No vector store found with id '{request.id}'", field="vector_store_id")
        await self.mesh.collections.changed()
        return pb.DeleteVectorStoreResponse(deleted=True)

    @servicer_errors
    async def AttachFile(self, request: pb.AttachFileRequest,
                         context: grpc.aio.ServicerContext) -> pb.AttachFileResponse:
        identity = await self.mesh.auth.admit(context)
        chunking = parse_chunking(request.chunking_strategy) if request.HasField("chunking_strategy") else None
        wait = request.wait_seconds if request.wait_seconds > 0 else DEFAULT_ATTACH_WAIT_S
        file = await self.db.attach(identity.key_id, request.vector_store_id, request.file,
                                    jsonpb.struct_to_json(request.attributes), chunking, wait_s=min(wait, 30.0))
        return pb.AttachFileResponse(file=file)

    @servicer_errors
    async def ListFiles(self, request: pb.ListFilesRequest,
                        context: grpc.aio.ServicerContext) -> pb.ListFilesResponse:
        identity = await self.mesh.auth.identify(context)
        data, more = await self.db.list_files(identity.key_id, request)
        return pb.ListFilesResponse(data=data, has_more=more)

    @servicer_errors
    async def GetFile(self, request: pb.GetFileRequest, context: grpc.aio.ServicerContext) -> pb.GetFileResponse:
        identity = await self.mesh.auth.identify(context)
        return pb.GetFileResponse(file=await self.db.get_file(identity.key_id, request.vector_store_id,
                                                              request.file_id))

    @servicer_errors
    async def DeleteFile(self, request: pb.DeleteFileRequest,
                         context: grpc.aio.ServicerContext) -> pb.DeleteFileResponse:
        identity = await self.mesh.auth.identify(context)
        return pb.DeleteFileResponse(deleted=await self.db.delete_file(identity.key_id, request.vector_store_id,
                                                                       request.file_id))

    @servicer_errors
    async def SearchVectorStore(self, request: pb.SearchVectorStoreRequest,
                                context: grpc.aio.ServicerContext) -> pb.SearchVectorStoreResponse:
        identity = await self.mesh.auth.admit(context)
        data = await self.db.search(identity.key_id, request)
        return pb.SearchVectorStoreResponse(data=data, search_query=list(request.queries))
