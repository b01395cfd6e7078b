"""FAL-compatible routes: run, stream, and the queue (submit, status, status stream, result,
cancel), answering exactly what the official fal-client reads (see shared/PROTOCOLS.md)."""
from __future__ import annotations

import json
import re
import time
from typing import Any, AsyncIterator

from fastapi import APIRouter, Request
from google.protobuf import duration_pb2
from genmesh.services.edge.responses import JSON, json_body
from sse_starlette.sse import EventSourceResponse

from genmesh import jsonpb
from genmesh.errors import (DeadlineExceeded, GenmeshError, InvalidArgument, NotFound, _BY_TYPE,
                            _index_types)
from genmesh.v1 import common_pb2, router_pb2
from genmesh.services.edge import job_results, jsonlimits
from genmesh.services.edge.auth import authorization

router = APIRouter()
JSON_BODY = {"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}}
QUEUE_PREFIX = "/queue"

_STATUS = {common_pb2.JOB_STATUS_IN_QUEUE: "IN_QUEUE", common_pb2.JOB_STATUS_IN_PROGRESS: "IN_PROGRESS"}
_LEVEL = {common_pb2.LOG_LEVEL_DEBUG: "DEBUG", common_pb2.LOG_LEVEL_INFO: "INFO",
          common_pb2.LOG_LEVEL_WARNING: "WARNING", common_pb2.LOG_LEVEL_ERROR: "ERROR"}


def mesh(request: Request) -> Any:
    return request.app.state.mesh


def base_url(request: Request) -> str:
    return (request.app.state.settings.public_url or str(request.base_url)).rstrip("/")


# The longest X-Fal-Request-Timeout taken: a day. Beyond it the value is a mistake (1e10 s
# overflowed the gRPC deadline and failed at once with 504).
MAX_REQUEST_TIMEOUT_S = 86400.0


# Idempotency keys are stored and indexed with the job; FAL's and Stripe's are UUID-sized.
MAX_IDEMPOTENCY_KEY_CHARS = 255


def request_timeout(request: Request) -> duration_pb2.Duration | None:
    """The `X-Fal-Request-Timeout` header as the router's Duration; None (unset) without one."""
    value = request.headers.get("x-fal-request-timeout")
    if value is None:
        return None
    message = f"must be a number of seconds from 0 to {MAX_REQUEST_TIMEOUT_S:g}"
    try:
        seconds = float(value)
    except ValueError:
        raise InvalidArgument(message, field="X-Fal-Request-Timeout") from None
    if not 0.0 <= seconds <= MAX_REQUEST_TIMEOUT_S:  # also refuses nan and inf
        raise InvalidArgument(message, field="X-Fal-Request-Timeout")
    if not seconds:
        return None  # 0: no limit of the caller's own, as without the header
    timeout = duration_pb2.Duration()
    timeout.FromNanoseconds(round(seconds * 1e9))
    return timeout


def input_struct(payload: Any) -> Any:
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise InvalidArgument("the request body must be a JSON object", field="body")
    # HTTP bodies were checked on arrival (JsonDepthLimit); realtime frames come here directly.
    if jsonlimits.depth_exceeds(payload):
        raise InvalidArgument(f"nested deeper than {jsonlimits.MAX_JSON_DEPTH} levels", field="body")
    try:
        return jsonpb.dict_to_struct(payload)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InvalidArgument(f"unsupported JSON value: {exc}", field="body") from None


def handle(model_path: str) -> str:
    """owner/alias of a model path: FAL's queue URLs drop the sub-path."""
    parts = model_path.strip("/").split("/")
    return "/".join(parts[:2])


def log_json(entry: common_pb2.LogEntry) -> dict[str, Any]:
    return {"message": entry.message, "level": _LEVEL.get(entry.level, "INFO"),
            "source": entry.source or "worker",
            "timestamp": entry.timestamp.ToJsonString() if entry.HasField("timestamp") else None}


def status_json(job: router_pb2.JobState, response_url: str, with_logs: bool) -> dict[str, Any]:
    status = _STATUS.get(job.status, "COMPLETED")
    out: dict[str, Any] = {"status": status, "request_id": job.request_id, "response_url": response_url}
    if status == "IN_QUEUE":
        out["queue_position"] = job.queue_position
        return out
    out["logs"] = [log_json(e) for e in job.logs] if with_logs else None
    if status == "IN_PROGRESS":
        if job.HasField("progress"):
            out["progress"] = jsonpb.to_dict(job.progress)
        return out
    out["metrics"] = {"inference_time": job.inference_time_seconds or None}
    failed = job.status in (common_pb2.JOB_STATUS_FAILED, common_pb2.JOB_STATUS_CANCELLED)
    out["error"] = (job.error or "cancelled") if failed else None
    out["error_type"] = (job.error_type or "cancelled") if failed else None
    return out


# Error types the router sets on queued jobs that no genmesh error class carries.
_JOB_ERROR_TYPES = {"start_timeout": DeadlineExceeded, "run_timeout": DeadlineExceeded}


def error_for(job: router_pb2.JobState) -> GenmeshError:
    if not _BY_TYPE:
        _index_types()
    cls = _BY_TYPE.get(job.error_type) or _JOB_ERROR_TYPES.get(job.error_type)
    if cls is None:
        from genmesh.errors import Internal
        cls = Internal
    error = cls(job.error or job.error_type)
    error.error_type = job.error_type or error.error_type
    return error


# The router's request ids are plain tokens; anything else is no request of ours, and must never
# be echoed into a response header (a control character there kills the connection).
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def checked_id(request_id: str) -> str:
    if not _REQUEST_ID.fullmatch(request_id):
        raise NotFound(f"request {request_id!r} not found")
    return request_id


def id_headers(request_id: str) -> dict[str, str]:
    """The request's id under FAL's name and the edge's (`x-request-id`, as every route returns it)."""
    return {"x-fal-request-id": request_id, "x-request-id": request_id}


def wants_logs(request: Request) -> bool:
    return request.query_params.get("logs", "0").lower() in ("1", "true", "yes")


# --- queue --------------------------------------------------------------------------------------

@router.post(QUEUE_PREFIX + "/{model_path:path}", tags=["fal"], summary="Submit a job to the queue",
             openapi_extra=JSON_BODY)
async def submit(model_path: str, request: Request) -> JSON:
    auth = authorization(request)
    payload = await json_body(request)
    priority = request.headers.get("x-fal-queue-priority", "normal").lower()
    if priority not in ("normal", "low"):
        raise InvalidArgument("must be normal or low", field="X-Fal-Queue-Priority")
    webhook = request.query_params.get("fal_webhook", "")
    idempotency_key = request.headers.get("idempotency-key", "")
    if len(idempotency_key) > MAX_IDEMPOTENCY_KEY_CHARS or not idempotency_key.isprintable():
        raise InvalidArgument(f"must be printable, at most {MAX_IDEMPOTENCY_KEY_CHARS} characters",
                              field="Idempotency-Key")
    try:
        resp = await mesh(request).unary(mesh(request).router.Submit, router_pb2.SubmitRequest(
            model_id=model_path.strip("/"), input=input_struct(payload),
            priority=common_pb2.PRIORITY_LOW if priority == "low" else common_pb2.PRIORITY_NORMAL,
            webhook_url=webhook, idempotency_key=idempotency_key,
            start_timeout=request_timeout(request)), auth)
    except InvalidArgument as exc:
        if exc.field != "webhook_url":
            raise
        # The router checks the target (genmesh/outbound.py); FAL callers know it by this name.
        raise InvalidArgument(exc.message.removeprefix("webhook_url: "), field="fal_webhook") from None
    base = f"{base_url(request)}{QUEUE_PREFIX}/{handle(model_path)}/requests/{resp.request_id}"
    return JSON({
        "request_id": resp.request_id, "gateway_request_id": resp.request_id,
        "response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel",
        "queue_position": resp.queue_position}, headers=id_headers(resp.request_id))


@router.get(QUEUE_PREFIX + "/{owner}/{alias}/requests/{request_id}/status", tags=["fal"])
async def status(owner: str, alias: str, request_id: str, request: Request) -> JSON:
    checked_id(request_id)
    auth = authorization(request)
    logs = wants_logs(request)
    resp = await mesh(request).unary(mesh(request).router.Status,
                                     router_pb2.StatusRequest(request_id=request_id, logs=logs), auth)
    url = f"{base_url(request)}{QUEUE_PREFIX}/{owner}/{alias}/requests/{request_id}"
    code = 202 if resp.job.status in _STATUS else 200
    return JSON(status_json(resp.job, url, logs), status_code=code,
                          headers=id_headers(request_id))


@router.get(QUEUE_PREFIX + "/{owner}/{alias}/requests/{request_id}/status/stream", tags=["fal"])
async def status_stream(owner: str, alias: str, request_id: str, request: Request) -> EventSourceResponse:
    checked_id(request_id)
    auth = authorization(request)
    logs = wants_logs(request)
    url = f"{base_url(request)}{QUEUE_PREFIX}/{owner}/{alias}/requests/{request_id}"
    client = mesh(request)
    # Fail before the stream starts (404, 401) so the client gets a real status code.
    await client.unary(client.router.Status, router_pb2.StatusRequest(request_id=request_id), auth)

    async def events() -> AsyncIterator[dict[str, Any]]:
        async for change in client.stream(client.router.WatchStatus,
                                          router_pb2.WatchStatusRequest(request_id=request_id, logs=logs), auth):
            yield {"data": json.dumps(status_json(change.job, url, logs))}

    return EventSourceResponse(events(), headers=id_headers(request_id))


@router.get(QUEUE_PREFIX + "/{owner}/{alias}/requests/{request_id}", tags=["fal"])
async def result(owner: str, alias: str, request_id: str, request: Request) -> JSON:
    checked_id(request_id)
    auth = authorization(request)
    resp = await mesh(request).unary(mesh(request).router.Result, job_results.request(request_id), auth)
    job = resp.job
    headers = id_headers(request_id)
    if job.status in _STATUS:
        return JSON({"detail": "Request is still in progress", "error_type": "request_in_progress",
                               "status": _STATUS[job.status]}, status_code=400, headers=headers)
    if job.status != common_pb2.JOB_STATUS_COMPLETED:
        error = error_for(job)
        headers["x-fal-error-type"] = error.error_type
        if job.error_type == "start_timeout":
            headers["x-fal-request-timeout-type"] = "user"  # the caller's own limit: no retry
        status_code = 499 if job.status == common_pb2.JOB_STATUS_CANCELLED else error.http_status
        return JSON(error.fal_body(), status_code=status_code, headers=headers)
    return JSON(job_results.as_json(resp), headers=headers)


@router.put(QUEUE_PREFIX + "/{owner}/{alias}/requests/{request_id}/cancel", tags=["fal"])
async def cancel(owner: str, alias: str, request_id: str, request: Request) -> JSON:
    if not _REQUEST_ID.fullmatch(request_id):
        return JSON({"status": "NOT_FOUND"}, status_code=404)
    auth = authorization(request)
    resp = await mesh(request).unary(mesh(request).router.Cancel,
                                     router_pb2.CancelRequest(request_id=request_id), auth)
    outcome = router_pb2.CancelOutcome.Name(resp.outcome).removeprefix("CANCEL_OUTCOME_")
    code = {"CANCELLATION_REQUESTED": 202, "ALREADY_COMPLETED": 400, "NOT_FOUND": 404}.get(outcome, 400)
    return JSON({"status": outcome}, status_code=code, headers=id_headers(request_id))


# --- run and stream -----------------------------------------------------------------------------

def stream_event_json(event: router_pb2.StreamResponse) -> dict[str, Any] | None:
    case = event.WhichOneof("event")
    if case == "progress":
        return {"type": "progress", "progress": jsonpb.to_dict(event.progress)}
    if case == "log":
        return {"type": "log", "log": log_json(event.log)}
    if case == "partial":
        return {"type": event.partial.kind, event.partial.kind: jsonpb.struct_to_json(event.partial.data)}
    if case == "result":
        return jsonpb.struct_to_json(event.result.output)
    return None  # usage is billing's business


async def stream_model(model_path: str, request: Request, payload: Any) -> EventSourceResponse:
    auth = authorization(request)
    client = mesh(request)
    call = client.stream(client.router.Stream, router_pb2.StreamRequest(
        model_id=model_path, input=input_struct(payload), timeout=request_timeout(request)), auth)
    # Read the first event before answering, so early errors (404, 400) keep their status code.
    try:
        first = await call.__anext__()
    except StopAsyncIteration:
        first = None

    async def events() -> AsyncIterator[dict[str, Any]]:
        try:
            if first is not None:
                data = stream_event_json(first)
                if data is not None:
                    yield {"data": json.dumps(data)}
            async for event in call:
                data = stream_event_json(event)
                if data is not None:
                    yield {"data": json.dumps(data)}
        except GenmeshError as exc:
            yield {"event": "error", "data": json.dumps({**exc.fal_body(), "status_code": exc.http_status})}

    rid = first.request_id if first is not None else ""
    return EventSourceResponse(events(), headers=id_headers(rid))


@router.post("/{model_path:path}", tags=["fal"], summary="Run a model (or stream it: .../stream)",
             openapi_extra=JSON_BODY)
async def run(model_path: str, request: Request) -> Any:
    return await run_payload(model_path, request, await json_body(request))


async def run_payload(model_path: str, request: Request, payload: Any) -> Any:
    """`run` with the body already parsed (the edge's run shortcut parses it once, checking it)."""
    model_path = model_path.strip("/")
    if not model_path:
        raise NotFound("no model in the path: POST /{owner}/{model}")
    if model_path.endswith("/stream"):
        return await stream_model(model_path[: -len("/stream")], request, payload)
    auth = authorization(request)
    started = time.perf_counter()
    resp = await mesh(request).unary(mesh(request).router.Run, router_pb2.RunRequest(
        model_id=model_path, input=input_struct(payload), timeout=request_timeout(request)), auth)
    return JSON(jsonpb.struct_to_json(resp.output), headers={
        **id_headers(resp.request_id),
        "x-genmesh-inference-time": f"{time.perf_counter() - started:.6f}"})


@router.api_route("/{path:path}", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def no_route(path: str, request: Request) -> JSON:
    # Without this, any unknown GET would answer 405 (the run catch-all above takes POST).
    raise NotFound(f"no route {request.method} {request.url.path}")
