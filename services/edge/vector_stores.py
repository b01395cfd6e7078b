"""OpenAI's `/v1/vector_stores` at the edge: stores, their files and search, in OpenAI's shapes.

The stores live behind the router (the VectorStores service, pgvector in Postgres); the edge
reads an attached file's bytes from /v1/files under the caller's key, sends them along, and
renders the router's answers. A genmesh extension makes a store a live collection:
`"follow_subject": true` (and, for admin keys only, `"subject"`) on create; the store then shows
the NATS `subject` it follows.

OpenAI's strings for the contract's enums (statuses, chunking type, ranker, filter types, error
codes, order) are mapped here, once each way, by one `WireEnum` per enum: the request models accept
exactly its strings (400 naming the field otherwise), and the answers render them.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from fastapi import APIRouter, Query, Request
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from pydantic import BaseModel, ConfigDict, Field

from genmesh import jsonpb
from genmesh.errors import InvalidArgument
from genmesh.services.edge.auth import authorization
from genmesh.services.edge.files import checked_file_id, openai_files
from genmesh.services.edge.openai_api import mesh
from genmesh.services.edge.openai_protocol import _Body
from genmesh.services.edge.responses import JSON
from genmesh.v1 import vector_stores_pb2 as pb
from genmesh.v1 import vector_stores_pb2_grpc

router = APIRouter(prefix="/v1", tags=["openai"])
Scalar = Union[str, float, bool]


class WireEnum:
    """A proto enum by OpenAI's strings for its values: the value's name less the enum's prefix,
    in lower case (`VECTOR_STORE_FILE_STATUS_IN_PROGRESS` is "in_progress"), unless `renamed`."""

    def __init__(self, enum: EnumTypeWrapper, **renamed: str) -> None:
        short = {n: jsonpb.enum_short_name(enum, n) for n in enum.values() if n}
        self._names = {n: renamed.get(name, name) for n, name in short.items()}
        self._numbers = {name: n for n, name in self._names.items()}
        self.names = tuple(self._names.values())
        # The request models' type for it: exactly these strings (anything else is a 400 naming the field).
        self.literal: Any = Literal[self.names]

    def number(self, name: str) -> int:
        return self._numbers[name]

    def name(self, number: int) -> str:
        return self._names[number]


CHUNKING_TYPE = WireEnum(pb.ChunkingStrategyType)
ANCHOR = WireEnum(pb.ExpiresAfterAnchor)
STORE_STATUS = WireEnum(pb.VectorStoreStatus)
FILE_STATUS = WireEnum(pb.VectorStoreFileStatus)
ERROR_CODE = WireEnum(pb.LastErrorCode)
ORDER = WireEnum(pb.ListOrder)
RANKER = WireEnum(pb.Ranker, default_2024_11_15="default-2024-11-15")
COMPARISON = WireEnum(pb.ComparisonFilterType)
COMPOUND = WireEnum(pb.CompoundFilterType)


class StaticChunking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_chunk_size_tokens: int
    chunk_overlap_tokens: int


class ChunkingParam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: CHUNKING_TYPE.literal
    static: Optional[StaticChunking] = None


class ExpiresAfterParam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    anchor: ANCHOR.literal
    days: int


class CreateVectorStore(_Body):
    name: Optional[str] = None
    description: Optional[str] = None
    file_ids: Optional[list[str]] = Field(default=None, max_length=500)
    metadata: Optional[dict[str, str]] = None
    chunking_strategy: Optional[ChunkingParam] = None
    expires_after: Optional[ExpiresAfterParam] = None
    # genmesh: a live collection following a NATS subject.
    follow_subject: Optional[bool] = None
    subject: Optional[str] = Field(default=None, max_length=256)


class ModifyVectorStore(_Body):
    name: Optional[str] = None
    metadata: Optional[dict[str, str]] = None
    expires_after: Optional[ExpiresAfterParam] = None


class AttachFile(_Body):
    file_id: str
    attributes: Optional[dict[str, Scalar]] = None
    chunking_strategy: Optional[ChunkingParam] = None


class RankingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ranker: Optional[RANKER.literal] = None
    score_threshold: Optional[float] = Field(default=None, ge=0, le=1)


class SearchVectorStore(_Body):
    query: Union[str, list[str]]
    filters: Optional[dict[str, Any]] = None
    max_num_results: Optional[int] = Field(default=None, ge=1, le=50)
    ranking_options: Optional[RankingOptions] = None
    rewrite_query: Optional[bool] = None


# --- to the router --------------------------------------------------------------------------------

def stub(request: Request) -> vector_stores_pb2_grpc.VectorStoresStub:
    state = request.app.state
    if getattr(state, "vector_stores", None) is None:
        state.vector_stores = vector_stores_pb2_grpc.VectorStoresStub(mesh(request).router_channel)
    return state.vector_stores


async def call(request: Request, method: str, message: Any, timeout: float = 60) -> Any:
    return await mesh(request).unary(getattr(stub(request), method), message, authorization(request),
                                     timeout=timeout)


def chunking_proto(param: ChunkingParam | None) -> pb.ChunkingStrategy | None:
    if param is None:
        return None
    out = pb.ChunkingStrategy(type=CHUNKING_TYPE.number(param.type))
    if param.static is not None:
        out.max_chunk_size_tokens = param.static.max_chunk_size_tokens
        out.chunk_overlap_tokens = param.static.chunk_overlap_tokens
    return out


def expires_proto(param: ExpiresAfterParam) -> pb.ExpiresAfter:
    return pb.ExpiresAfter(anchor=ANCHOR.number(param.anchor), days=param.days)


def _filter_value(value: Any, field: str) -> pb.FilterValue:
    if isinstance(value, bool):
        return pb.FilterValue(bool_value=value)
    if isinstance(value, (int, float)):
        try:
            return pb.FilterValue(number_value=float(value))
        except OverflowError:  # a JSON integer beyond a double
            raise InvalidArgument("is out of range", field=field) from None
    if isinstance(value, str):
        return pb.FilterValue(string_value=value)
    raise InvalidArgument("must be a string, number or boolean", field=field)


def filter_proto(spec: Any, field: str = "filters") -> pb.Filter:
    """OpenAI's filter JSON (comparison or compound) as the contract's Filter. Only what the
    message cannot hold is refused here; the limits (key, values, nesting) are the router's."""
    if not isinstance(spec, dict):
        raise InvalidArgument("must be an object", field=field)
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in COMPARISON.names + COMPOUND.names:
        raise InvalidArgument(f"type must be one of {', '.join(COMPARISON.names + COMPOUND.names)}",
                              field=f"{field}.type")
    out = pb.Filter()
    if kind in COMPOUND.names:
        parts = spec.get("filters")
        if not isinstance(parts, list):
            raise InvalidArgument("must be a non-empty list", field=f"{field}.filters")
        out.compound.type = COMPOUND.number(kind)
        out.compound.filters.extend(filter_proto(p, f"{field}.filters[{i}]") for i, p in enumerate(parts))
        return out
    key, value = spec.get("key", ""), spec.get("value")
    if not isinstance(key, str):
        raise InvalidArgument("must be a string", field=f"{field}.key")
    out.comparison.type = COMPARISON.number(kind)
    out.comparison.key = key
    if isinstance(value, list):
        out.comparison.values.extend(_filter_value(v, f"{field}.value") for v in value)
    elif value is not None:
        out.comparison.value.CopyFrom(_filter_value(value, f"{field}.value"))
    return out


async def file_document(request: Request, file_id: str) -> pb.FileDocument:
    """A /v1/files object's bytes, read under the caller's key (another key's file is not found)."""
    checked_file_id(file_id)
    owner = (await request.app.state.identities.identify(request)).key_id
    files = openai_files(request)
    obj = await files.get(owner, file_id)
    blob = await files.content(owner, file_id)
    return pb.FileDocument(file_id=file_id, filename=obj.get("filename", ""),
                           content_type=obj.get("content_type") or blob.content_type, content=blob.data)


# --- rendering ------------------------------------------------------------------------------------

def _chunking_json(c: pb.ChunkingStrategy) -> dict[str, Any]:
    return {"type": "static", "static": {"max_chunk_size_tokens": c.max_chunk_size_tokens,
                                         "chunk_overlap_tokens": c.chunk_overlap_tokens}}


def store_json(s: pb.VectorStore) -> dict[str, Any]:
    counts = s.file_counts
    out: dict[str, Any] = {
        "id": s.id, "object": "vector_store", "created_at": s.created_at, "name": s.name,
        "description": s.description or None, "usage_bytes": s.usage_bytes,
        "file_counts": {"in_progress": counts.in_progress, "completed": counts.completed,
                        "failed": counts.failed, "cancelled": counts.cancelled, "total": counts.total},
        "status": STORE_STATUS.name(s.status), "last_active_at": s.last_active_at, "metadata": dict(s.metadata),
        "expires_after": ({"anchor": ANCHOR.name(s.expires_after.anchor), "days": s.expires_after.days}
                          if s.HasField("expires_after") else None),
        "expires_at": s.expires_at or None}
    if s.subject:
        out["subject"] = s.subject
    return out


def file_json(f: pb.VectorStoreFile) -> dict[str, Any]:
    return {"id": f.id, "object": "vector_store.file", "created_at": f.created_at, "usage_bytes": f.usage_bytes,
            "vector_store_id": f.vector_store_id, "status": FILE_STATUS.name(f.status),
            "last_error": ({"code": ERROR_CODE.name(f.last_error.code), "message": f.last_error.message}
                           if f.HasField("last_error") else None),
            "attributes": jsonpb.struct_to_json(f.attributes), "chunking_strategy": _chunking_json(f.chunking_strategy)}


def list_json(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": has_more}


def result_json(r: pb.SearchResult) -> dict[str, Any]:
    return {"file_id": r.file_id, "filename": r.filename, "score": r.score,
            "attributes": jsonpb.struct_to_json(r.attributes),
            "content": [{"type": "text", "text": t} for t in r.content]}


def search_request(store_ids: list[str], query: str | list[str], *, max_num_results: int | None,
                   filters: dict[str, Any] | None, score_threshold: float | None = None,
                   rewrite_query: bool = False, ranker: str | None = None) -> pb.SearchVectorStoreRequest:
    req = pb.SearchVectorStoreRequest(vector_store_ids=store_ids,
                                      queries=[query] if isinstance(query, str) else list(query),
                                      max_num_results=max_num_results or 0, rewrite_query=bool(rewrite_query),
                                      ranker=RANKER.number(ranker) if ranker else 0)
    if filters:
        req.filters.CopyFrom(filter_proto(filters))
    if score_threshold is not None:
        req.score_threshold = score_threshold
    return req


# --- routes ---------------------------------------------------------------------------------------

@router.post("/vector_stores", summary="Create a vector store (optionally a live collection of a NATS subject)")
async def create_vector_store(body: CreateVectorStore, request: Request) -> JSON:
    req = pb.CreateVectorStoreRequest(metadata=body.metadata or {}, follow_subject=bool(body.follow_subject),
                                      subject=body.subject or "", description=body.description or "")
    if body.name is not None:
        req.name = body.name
    chunking = chunking_proto(body.chunking_strategy)
    if chunking is not None:
        req.chunking_strategy.CopyFrom(chunking)
    if body.expires_after is not None:
        req.expires_after.CopyFrom(expires_proto(body.expires_after))
    for file_id in body.file_ids or ():
        req.files.append(await file_document(request, file_id))
    return JSON(store_json((await call(request, "CreateVectorStore", req)).vector_store))


@router.get("/vector_stores", summary="List vector stores")
async def list_vector_stores(request: Request, limit: int = Query(20, ge=1, le=100),
                             order: ORDER.literal = "desc", after: Optional[str] = None,
                             before: Optional[str] = None) -> JSON:
    resp = await call(request, "ListVectorStores", pb.ListVectorStoresRequest(
        limit=limit, order=ORDER.number(order), after=after or "", before=before or ""))
    return JSON(list_json([store_json(s) for s in resp.data], resp.has_more))


@router.get("/vector_stores/{vector_store_id}", summary="Retrieve a vector store")
async def retrieve_vector_store(vector_store_id: str, request: Request) -> JSON:
    resp = await call(request, "GetVectorStore", pb.GetVectorStoreRequest(id=vector_store_id))
    return JSON(store_json(resp.vector_store))


@router.post("/vector_stores/{vector_store_id}", summary="Modify a vector store")
async def modify_vector_store(vector_store_id: str, body: ModifyVectorStore, request: Request) -> JSON:
    req = pb.ModifyVectorStoreRequest(id=vector_store_id)
    if body.name is not None:
        req.name = body.name
    if "metadata" in body.model_fields_set:
        req.replace_metadata = True
        req.metadata.update(body.metadata or {})
    if "expires_after" in body.model_fields_set:
        if body.expires_after is None:
            req.clear_expires_after = True
        else:
            req.expires_after.CopyFrom(expires_proto(body.expires_after))
    return JSON(store_json((await call(request, "ModifyVectorStore", req)).vector_store))


@router.delete("/vector_stores/{vector_store_id}", summary="Delete a vector store")
async def delete_vector_store(vector_store_id: str, request: Request) -> JSON:
    await call(request, "DeleteVectorStore", pb.DeleteVectorStoreRequest(id=vector_store_id))
    return JSON({"id": vector_store_id, "object": "vector_store.deleted", "deleted": True})


@router.post("/vector_stores/{vector_store_id}/files", summary="Attach a file to a vector store")
async def attach_file(vector_store_id: str, body: AttachFile, request: Request) -> JSON:
    req = pb.AttachFileRequest(vector_store_id=vector_store_id, file=await file_document(request, body.file_id))
    req.attributes.update(body.attributes or {})
    chunking = chunking_proto(body.chunking_strategy)
    if chunking is not None:
        req.chunking_strategy.CopyFrom(chunking)
    return JSON(file_json((await call(request, "AttachFile", req)).file))


@router.get("/vector_stores/{vector_store_id}/files", summary="List a vector store's files")
async def list_files(vector_store_id: str, request: Request, limit: int = Query(20, ge=1, le=100),
                     order: ORDER.literal = "desc", after: Optional[str] = None,
                     before: Optional[str] = None, filter: Optional[FILE_STATUS.literal] = None) -> JSON:
    resp = await call(request, "ListFiles", pb.ListFilesRequest(
        vector_store_id=vector_store_id, limit=limit, order=ORDER.number(order), after=after or "",
        before=before or "", filter=FILE_STATUS.number(filter) if filter else 0))
    return JSON(list_json([file_json(f) for f in resp.data], resp.has_more))


@router.get("/vector_stores/{vector_store_id}/files/{file_id}", summary="Retrieve a vector store file")
async def retrieve_file(vector_store_id: str, file_id: str, request: Request) -> JSON:
    resp = await call(request, "GetFile", pb.GetFileRequest(vector_store_id=vector_store_id, file_id=file_id))
    return JSON(file_json(resp.file))


@router.delete("/vector_stores/{vector_store_id}/files/{file_id}", summary="Remove a file from a vector store")
async def delete_file(vector_store_id: str, file_id: str, request: Request) -> JSON:
    await call(request, "DeleteFile", pb.DeleteFileRequest(vector_store_id=vector_store_id, file_id=file_id))
    return JSON({"id": file_id, "object": "vector_store.file.deleted", "deleted": True})


@router.post("/vector_stores/{vector_store_id}/search", summary="Search a vector store")
async def search(vector_store_id: str, body: SearchVectorStore, request: Request) -> JSON:
    ranking = body.ranking_options
    req = search_request([vector_store_id], body.query, max_num_results=body.max_num_results,
                         filters=body.filters, score_threshold=ranking.score_threshold if ranking else None,
                         rewrite_query=bool(body.rewrite_query), ranker=ranking.ranker if ranking else None)
    resp = await call(request, "SearchVectorStore", req)
    return JSON({"object": "vector_store.search_results.page", "search_query": list(resp.search_query),
                 "data": [result_json(r) for r in resp.data], "has_more": False, "next_page": None})
