"""OpenAI's /v1/batches on the durable queue: each line of the input file becomes one queued job
(Router.Submit with the typed request as JSON); progress is computed from the jobs' statuses and,
once every job has ended, the output file is written with one line per request.

The batch document lives in the blob store (documents.py); the edge keeps nothing in memory.
Submits carry an idempotency key per (batch, custom_id), so a retried create enqueues nothing twice.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError

from genmesh import jsonpb
from genmesh.errors import GenmeshError, InvalidArgument, NotFound, _BY_TYPE, _index_types
from genmesh.v1 import common_pb2, llm_pb2, router_pb2
from genmesh.services.edge import job_results
from genmesh.services.edge import openai_convert as convert
from genmesh.services.edge.auth import authorization
from genmesh.services.edge.documents import BatchDocuments, OpenAIFiles
from genmesh.services.edge.errors import invalid_argument
from genmesh.services.edge.files import page
from genmesh.services.edge.openai_protocol import (BatchCreateRequest, BatchRequestLine,
                                                   ChatCompletionRequest, CompletionRequest,
                                                   EmbeddingRequest, NamedToolChoice)
from genmesh.services.edge.responses import JSON

router = APIRouter(prefix="/v1", tags=["openai"])
MAX_LINES = 50_000
WINDOW_S = 24 * 3600
CONCURRENCY = 16
ENDED = {common_pb2.JOB_STATUS_COMPLETED, common_pb2.JOB_STATUS_FAILED, common_pb2.JOB_STATUS_CANCELLED}
FINAL = ("completed", "failed", "cancelled", "expired")


class LineError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def public(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "genmesh"}


async def bounded(items: list[Any], fn: Any) -> list[Any]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(item: Any) -> Any:
        async with gate:
            return await fn(item)

    return await asyncio.gather(*(one(i) for i in items), return_exceptions=True)


# --- translating one line -------------------------------------------------------------------------

async def translate(request: Request, endpoint: str, body: dict[str, Any], auth: str) -> dict[str, Any]:
    """{model_id, input (typed request as JSON), render hints} for one request body."""
    if body.get("stream"):
        raise LineError("invalid_request", "streaming is not available in batches", "body.stream")
    view = request.app.state.catalog
    try:
        if endpoint == "/v1/chat/completions":
            chat = ChatCompletionRequest.model_validate(body)
            found = await view.for_task(chat.model, ("chat",), auth, route=endpoint)
            store = request.app.state.blobs
            typed: Any = convert.chat_request(chat, found.model.id, lambda u: store.key_from_url(u) is not None)
            hints = {"logprobs": bool(chat.logprobs), "named_tool": isinstance(chat.tool_choice, NamedToolChoice)}
        elif endpoint == "/v1/completions":
            comp = CompletionRequest.model_validate(body)
            prompts = convert.completion_prompts(comp)
            if len(prompts) != 1:
                raise LineError("invalid_request", "one prompt per line in batches", "body.prompt")
            found = await view.for_task(comp.model, ("completion",), auth, route=endpoint)
            typed = convert.completion_request(comp, prompts[0], found.model.id)
            hints = {"logprobs": comp.logprobs is not None, "n": comp.n or 1}
        else:
            emb = EmbeddingRequest.model_validate(body)
            found = await view.for_task(emb.model, ("embeddings",), auth, route=endpoint)
            typed = convert.embed_request(emb, found.model.id)
            hints = {"encoding_format": emb.encoding_format}
    except ValidationError as exc:
        error = invalid_argument(exc.errors())
        raise LineError("invalid_request", error.message, f"body.{error.field}" if error.field else "body") from None
    except GenmeshError as exc:
        if exc.http_status == 401:
            raise
        raise LineError(exc.code or exc.error_type, exc.message,
                        f"body.{exc.field}" if exc.field else None) from None
    data = jsonpb.to_dict(typed)
    data.pop("model_id", None)
    return {"model_id": found.model.id, "input": data, "hints": hints}


async def parse_input(request: Request, text: str, endpoint: str, auth: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(requests, errors) of an input file; errors are OpenAI batch errors with line numbers."""
    requests: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if len(lines) > MAX_LINES:
        raise InvalidArgument(f"the input file has {len(lines)} requests; the limit is {MAX_LINES}",
                              field="input_file_id")
    for n, raw in lines:
        try:
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise LineError("invalid_json_line", f"line is not valid JSON: {exc.msg}") from None
            try:
                line = BatchRequestLine.model_validate(obj)
            except ValidationError as exc:
                error = invalid_argument(exc.errors())
                raise LineError("invalid_request", error.message, error.field) from None
            if line.url != endpoint:
                raise LineError("mismatched_endpoint", f"url {line.url!r} differs from the batch's endpoint "
                                f"{endpoint!r}", "url")
            if line.custom_id in seen:
                raise LineError("duplicate_custom_id", f"custom_id {line.custom_id!r} is used twice", "custom_id")
            seen.add(line.custom_id)
            requests.append({"custom_id": line.custom_id, "line": n,
                             **await translate(request, endpoint, line.body, auth)})
        except LineError as exc:
            errors.append({"code": exc.code, "line": n, "message": exc.message, "param": exc.param})
    if not lines:
        raise InvalidArgument("the input file holds no requests", field="input_file_id")
    return requests, errors


# --- routes ---------------------------------------------------------------------------------------

@router.post("/batches", summary="Create a batch from an uploaded JSONL file (purpose=batch)")
async def create_batch(body: BatchCreateRequest, request: Request) -> JSON:
    auth = authorization(request)
    identity = await request.app.state.identities.identify(request)
    store = request.app.state.blobs
    files = OpenAIFiles(store)
    try:
        source = await files.get(identity.key_id, body.input_file_id)
    except NotFound:
        raise InvalidArgument(f"no file {body.input_file_id!r}; upload it with purpose=batch",
                              field="input_file_id") from None
    if source["purpose"] != "batch":
        raise InvalidArgument("the file's purpose must be 'batch'", field="input_file_id")
    try:
        text = (await files.content(identity.key_id, body.input_file_id)).data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument("the input file is not UTF-8 JSONL", field="input_file_id") from None
    requests, errors = await parse_input(request, text, body.endpoint, auth)
    now = int(time.time())
    batch_id = "batch_" + secrets.token_hex(12)
    doc: dict[str, Any] = {
        "id": batch_id, "object": "batch", "endpoint": body.endpoint, "input_file_id": body.input_file_id,
        "completion_window": body.completion_window, "status": "validating", "created_at": now,
        "expires_at": now + WINDOW_S, "in_progress_at": None, "finalizing_at": None, "completed_at": None,
        "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
        "output_file_id": None, "error_file_id": None, "errors": None,
        "request_counts": {"total": len(requests) + len(errors), "completed": 0, "failed": 0},
        "metadata": body.metadata, "model": requests[0]["model_id"] if requests else None,
        "genmesh": {"requests": []}}
    if errors:
        doc.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
        await BatchDocuments(store).put(identity.key_id, doc)
        return JSON(public(doc))
    client = request.app.state.mesh

    async def submit(req: dict[str, Any]) -> str:
        resp = await client.unary(client.router.Submit, router_pb2.SubmitRequest(
            model_id=req["model_id"], input=jsonpb.dict_to_struct(req["input"]),
            idempotency_key=f"{batch_id}:{req['custom_id']}"), auth)
        return resp.request_id

    ids = await bounded(requests, submit)
    failures = [(r, e) for r, e in zip(requests, ids, strict=True) if isinstance(e, BaseException)]
    if failures:
        # All or nothing: take back what was enqueued and report why the rest was refused.
        await bounded([i for i in ids if isinstance(i, str)], lambda rid: client.unary(
            client.router.Cancel, router_pb2.CancelRequest(request_id=rid), auth))
        first = failures[0][1]
        if isinstance(first, GenmeshError) and first.http_status in (401, 402, 429):
            raise first
        doc.update(status="failed", failed_at=now, errors={"object": "list", "data": [
            {"code": getattr(e, "error_type", "internal_error"), "line": r["line"],
             "message": getattr(e, "message", "internal error"), "param": None} for r, e in failures]})
    else:
        doc.update(status="in_progress", in_progress_at=int(time.time()))
        doc["genmesh"]["requests"] = [{"custom_id": r["custom_id"], "request_id": rid, "model": r["model_id"],
                                       "hints": r["hints"]} for r, rid in zip(requests, ids, strict=True)]
    await BatchDocuments(store).put(identity.key_id, doc)
    return JSON(public(doc))


@router.get("/batches/{batch_id}", summary="Retrieve a batch (progress from its jobs)")
async def retrieve_batch(batch_id: str, request: Request) -> JSON:
    identity = await request.app.state.identities.identify(request)
    doc = await BatchDocuments(request.app.state.blobs).get(identity.key_id, batch_id)
    return JSON(public(await refresh(request, identity.key_id, doc)))


@router.get("/batches", summary="List batches")
async def list_batches(request: Request, limit: int = Query(20, ge=1, le=100), after: str | None = None) -> JSON:
    identity = await request.app.state.identities.identify(request)
    docs = await BatchDocuments(request.app.state.blobs).list(identity.key_id)
    listed = page(docs, limit=limit, order="desc", after=after)
    listed["data"] = [public(await refresh(request, identity.key_id, d)) for d in listed["data"]]
    return JSON(listed)


@router.post("/batches/{batch_id}/cancel", summary="Cancel a batch (its unfinished jobs are cancelled)")
async def cancel_batch(batch_id: str, request: Request) -> JSON:
    auth = authorization(request)
    identity = await request.app.state.identities.identify(request)
    docs = BatchDocuments(request.app.state.blobs)
    doc = await refresh(request, identity.key_id, await docs.get(identity.key_id, batch_id))
    if doc["status"] in FINAL:
        return JSON(public(doc))
    client = request.app.state.mesh
    await bounded([r["request_id"] for r in doc["genmesh"]["requests"]], lambda rid: client.unary(
        client.router.Cancel, router_pb2.CancelRequest(request_id=rid), auth))
    doc.update(status="cancelling", cancelling_at=int(time.time()))
    await docs.put(identity.key_id, doc)
    return JSON(public(await refresh(request, identity.key_id, doc)))


# --- progress and the output file -----------------------------------------------------------------

async def refresh(request: Request, owner: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The batch with counts from its jobs; finalized (output written) once every job has ended."""
    if doc["status"] in FINAL:
        return doc
    auth = authorization(request)
    client = request.app.state.mesh
    reqs = doc["genmesh"]["requests"]

    async def status(rid: str) -> router_pb2.JobState:
        return (await client.unary(client.router.Status, router_pb2.StatusRequest(request_id=rid), auth)).job

    states = await bounded([r["request_id"] for r in reqs], status)
    for s in states:
        if isinstance(s, BaseException) and not isinstance(s, NotFound):
            raise s
    ended = [s for s in states if isinstance(s, NotFound) or s.status in ENDED]
    completed = sum(1 for s in ended if not isinstance(s, NotFound) and s.status == common_pb2.JOB_STATUS_COMPLETED)
    doc["request_counts"] = {"total": len(reqs), "completed": completed, "failed": len(ended) - completed}
    if len(ended) < len(reqs):
        return doc
    doc.update(status="finalizing", finalizing_at=int(time.time()))
    await finalize(request, owner, doc, auth)
    return doc


async def finalize(request: Request, owner: str, doc: dict[str, Any], auth: str) -> None:
    client = request.app.state.mesh

    async def result(rid: str) -> router_pb2.ResultResponse:
        return await client.unary(client.router.Result, job_results.request(rid), auth)

    reqs = doc["genmesh"]["requests"]
    results = await bounded([r["request_id"] for r in reqs], result)
    lines = [output_line(doc, r, res) for r, res in zip(reqs, results, strict=True)]
    failed = [line for line in lines if line["error"] is not None or line["response"]["status_code"] != 200]
    files = OpenAIFiles(request.app.state.blobs)
    # Deterministic ids: two edges finalizing the same batch at once write the same files.
    suffix = doc["id"].removeprefix("batch_")
    out = await files.create(owner, f"file-{suffix}-output", _jsonl(lines),
                             filename=f"{doc['id']}_output.jsonl", purpose="batch_output",
                             content_type="application/jsonl")
    doc["output_file_id"] = out["id"]
    if failed:
        err = await files.create(owner, f"file-{suffix}-errors", _jsonl(failed),
                                 filename=f"{doc['id']}_error.jsonl", purpose="batch_output",
                                 content_type="application/jsonl")
        doc["error_file_id"] = err["id"]
    now = int(time.time())
    if doc.get("cancelling_at"):
        doc.update(status="cancelled", cancelled_at=now)
    else:
        doc.update(status="completed", completed_at=now)
    await BatchDocuments(request.app.state.blobs).put(owner, doc)


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines)


def output_line(doc: dict[str, Any], req: dict[str, Any], res: Any) -> dict[str, Any]:
    rid = req["request_id"]
    line: dict[str, Any] = {"id": f"batch_req_{rid}", "custom_id": req["custom_id"], "response": None,
                            "error": None}
    if isinstance(res, BaseException):
        line["error"] = {"code": "request_expired", "message": "the request's result is no longer available"}
        return line
    job = res.job
    if job.status == common_pb2.JOB_STATUS_CANCELLED:
        line["error"] = {"code": "batch_cancelled", "message": "the batch was cancelled before this request ran"}
        return line
    if job.status != common_pb2.JOB_STATUS_COMPLETED:
        if not _BY_TYPE:
            _index_types()
        error = _BY_TYPE.get(job.error_type, GenmeshError)(job.error or job.error_type or "failed")
        error.error_type = job.error_type or error.error_type
        line["response"] = {"status_code": error.http_status, "request_id": rid, "body": error.openai_body()}
        return line
    line["response"] = {"status_code": 200, "request_id": rid,
                        "body": render(doc, req, res, int(job.finished_at.seconds))}
    return line


def render(doc: dict[str, Any], req: dict[str, Any], res: router_pb2.ResultResponse, created: int) -> dict[str, Any]:
    """A completed request's OpenAI body, rendered from its typed result."""
    hints = req["hints"]
    model = req.get("model") or doc.get("model") or ""
    if doc["endpoint"] == "/v1/chat/completions":
        chat = job_results.as_message(res, llm_pb2.ChatCompleteResult)
        return convert.chat_completion_json(chat, model=model, created=created,
                                            logprobs=hints["logprobs"], named_tool=hints["named_tool"])
    if doc["endpoint"] == "/v1/completions":
        comp = job_results.as_message(res, llm_pb2.CompleteResult)
        return convert.completion_json([comp], model=model, created=created, n=hints["n"],
                                       logprobs=hints["logprobs"])
    emb = job_results.as_message(res, llm_pb2.EmbedResponse)
    return convert.embedding_json(emb, model=model, encoding_format=hints["encoding_format"])
