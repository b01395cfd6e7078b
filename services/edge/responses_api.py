"""OpenAI Responses routes (`/v1/responses`): create (plain, streamed, background), retrieve,
delete, cancel and list input items.

A response runs as the same LLM chat as /v1/chat/completions. Stored responses live behind the
router (Router.PutResponse/GetResponse/DeleteResponse over Postgres) and background ones run as
queued jobs (the durable queue), so the edge holds no state: any edge replica answers for any
response, also after restarts. `previous_response_id` carries the earlier conversation whole,
its tool calls and their outputs included.
"""
from __future__ import annotations

import logging
from typing import Any, AsyncIterator, Literal, Optional

import orjson
from fastapi import APIRouter, Query, Request
from sse_starlette import ServerSentEvent
from starlette.responses import Response

from genmesh import jsonpb
from genmesh.errors import GenmeshError, Internal, InvalidArgument, NotFound
from genmesh.services.edge import chat_jobs, file_search
from genmesh.services.edge import responses_convert as convert
from genmesh.services.edge.auth import authorization
from genmesh.services.edge.openai_api import (SSE_SEP, accepted_url, catalog, event_stream, final_result, mesh,
                                              prime, replay)
from genmesh.services.edge.responses import JSON
from genmesh.services.edge.responses_protocol import ResponsesRequest
from genmesh.v1 import common_pb2, router_pb2

log = logging.getLogger("genmesh.edge.responses")
router = APIRouter(prefix="/v1", tags=["openai"])
ACTIVE = ("queued", "in_progress")


# --- the store, behind the router -----------------------------------------------------------------

async def store_put(request: Request, auth: str, response: dict[str, Any], context: dict[str, Any],
                    job_id: str = "") -> None:
    client = mesh(request)
    stored = router_pb2.StoredResponse(id=response["id"], job_id=job_id,
                                       response=jsonpb.dict_to_struct(response),
                                       context=jsonpb.dict_to_struct(context))
    await client.unary(client.router.PutResponse, router_pb2.PutResponseRequest(response=stored), auth, timeout=10)


async def store_get(request: Request, auth: str, response_id: str,
                    field: str | None = None) -> tuple[dict[str, Any], dict[str, Any], str]:
    client = mesh(request)
    try:
        resp = await client.unary(client.router.GetResponse, router_pb2.GetResponseRequest(id=response_id), auth,
                                  timeout=10)
    except NotFound:
        raise NotFound(f"response '{response_id}' not found", field=field) from None
    stored = resp.response
    return jsonpb.struct_to_json(stored.response), jsonpb.struct_to_json(stored.context), stored.job_id


def sse(event: dict[str, Any]) -> ServerSentEvent:
    """One event, named by its type (`event:` then `data:` lines, as OpenAI's SDKs parse them)."""
    return ServerSentEvent(orjson.dumps(event).decode(), event=event["type"], sep=SSE_SEP)


# --- create ---------------------------------------------------------------------------------------

@router.post("/responses", summary="Create a model response (streamed with stream: true; queued with background)")
async def create_response(body: ResponsesRequest, request: Request) -> Response:
    auth = authorization(request)
    found = await catalog(request).for_task(body.model, ("chat",), auth, route="/v1/responses")
    if body.background and body.store is False:
        raise InvalidArgument("background responses are stored: leave store unset or true", field="store")
    history: list[dict[str, Any]] = []
    if body.previous_response_id:
        prev, prev_context, _ = await store_get(request, auth, body.previous_response_id, "previous_response_id")
        if prev.get("status") in ACTIVE:
            raise InvalidArgument("that response has not finished yet", field="previous_response_id")
        history = [*prev_context.get("history", []), *prev_context.get("input", []), *prev.get("output", [])]
    items = convert.input_items(body, accepted_url(request))
    response_id = convert.new_response_id()
    # file_search runs before the model: its results join the conversation as retrieved context.
    searched = await file_search.run(request, auth, body, items, response_id)
    messages = convert.chat_messages([*history, *searched.context_items, *items], body.instructions)
    req = convert.chat_request(body, found.model.id, messages)
    # What file_search found stays in the stored context, so previous_response_id carries it too.
    context = {"history": [*history, *searched.context_items], "input": items}
    response = convert.response_json(body, response_id=response_id, model=found.model.id, status="in_progress")
    client = mesh(request)
    if body.background:
        job_id = await chat_jobs.submit(client, req, auth)
        response = {**response, "status": "queued", "output": searched.output_items}
        await store_put(request, auth, response, context, job_id)
        if body.stream:
            return event_stream(background_events(request, auth, response, context, job_id,
                                                  searched.output_items))
        return JSON(response)
    events = client.stream(client.llm.ChatComplete, req, auth)
    if not body.stream:
        result = await final_result(events)
        done = convert.finish(response, result)
        done["output"] = searched.output_items + done["output"]
        if body.store is not False:
            await store_put(request, auth, done, context)
        return JSON(done)
    state = convert.ResponseStream(response)
    first = await prime(events, ("chunk", "result"))

    async def chunks() -> AsyncIterator[ServerSentEvent]:
        try:
            for event in [*state.start(), *state.finished_items(searched.output_items)]:
                yield sse(event)
            ended = False
            async for event in replay(first, events):
                case = event.WhichOneof("event")
                if case == "chunk":
                    for out in state.on_chunk(event.chunk):
                        yield sse(out)
                elif case == "result":
                    closing, final = state.on_result(event.result)
                    for out in closing:
                        yield sse(out)
                    if body.store is not False:
                        await store_put(request, auth, final, context)  # retrievable once completed is seen
                    yield sse(state.end(final))
                    ended = True
            if not ended:
                raise Internal("the model ended without a result")
        except Exception as exc:  # noqa: BLE001 - the status line is sent: report in-band
            message = exc.message if isinstance(exc, GenmeshError) else "internal error"
            if not isinstance(exc, GenmeshError):
                log.error("response stream failed", exc_info=exc)
            yield sse(state.fail(message))
        finally:
            await events.aclose()  # a client that went away cancels the model's run

    return event_stream(chunks())


async def background_events(request: Request, auth: str, response: dict[str, Any], context: dict[str, Any],
                            job_id: str, done_items: list[dict[str, Any]]) -> AsyncIterator[ServerSentEvent]:
    """A background response, streamed: it runs as a queued job (which goes on if the client
    leaves), watched here until it ends; its answer arrives as one delta when the job completes."""
    state = convert.ResponseStream(response)
    client = mesh(request)
    try:
        for event in [*state.start(), *state.finished_items(done_items)]:
            yield sse(event)
        async for _change in client.stream(client.router.WatchStatus,
                                           router_pb2.WatchStatusRequest(request_id=job_id), auth):
            pass  # the watch ends once the job is terminal
        job = await chat_jobs.read(client, job_id, auth)
        if job.result is None:
            message = job.state.error or ("the response was cancelled"
                                          if job.state.status == common_pb2.JOB_STATUS_CANCELLED else "the model failed")
            final = convert.failed(response, message)
            await store_put(request, auth, final, context, job_id)
            yield sse(state.fail(message))
            return
        closing, final = state.on_result(job.result)
        for out in closing:
            yield sse(out)
        await store_put(request, auth, final, context, job_id)
        yield sse(state.end(final))
    except Exception as exc:  # noqa: BLE001 - the status line is sent: report in-band
        message = exc.message if isinstance(exc, GenmeshError) else "internal error"
        if not isinstance(exc, GenmeshError):
            log.error("background response stream failed", exc_info=exc)
        yield sse(state.fail(message))


# --- retrieve, cancel, delete, input items --------------------------------------------------------

async def _current(request: Request, auth: str, response_id: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The stored response, brought up to date with its background job (and stored again) when
    that job ended since."""
    response, context, job_id = await store_get(request, auth, response_id)
    if response.get("status") not in ACTIVE or not job_id:
        return response, context, job_id
    job = await chat_jobs.read(mesh(request), job_id, auth)
    if job.result is not None:
        done = convert.finish(response, job.result)
        done["output"] = [*response.get("output", []), *done["output"]]
    elif job.state.status == common_pb2.JOB_STATUS_FAILED:
        done = convert.failed(response, job.state.error or "the model failed")
    elif job.state.status == common_pb2.JOB_STATUS_CANCELLED:
        done = {**response, "status": "cancelled"}
    else:
        status = "in_progress" if job.state.status == common_pb2.JOB_STATUS_IN_PROGRESS else "queued"
        return {**response, "status": status}, context, job_id
    await store_put(request, auth, done, context, job_id)
    return done, context, job_id


@router.get("/responses/{response_id}", summary="Retrieve a stored response")
async def retrieve_response(response_id: str, request: Request) -> JSON:
    response, _, _ = await _current(request, authorization(request), response_id)
    return JSON(response)


@router.post("/responses/{response_id}/cancel", summary="Cancel a background response")
async def cancel_response(response_id: str, request: Request) -> JSON:
    auth = authorization(request)
    response, context, job_id = await _current(request, auth, response_id)
    if not response.get("background"):
        raise InvalidArgument("only background responses can be cancelled", field="response_id")
    if response.get("status") not in ACTIVE:
        return JSON(response)
    outcome = await chat_jobs.cancel(mesh(request), job_id, auth)
    if outcome == router_pb2.CANCEL_OUTCOME_ALREADY_COMPLETED:
        response, _, _ = await _current(request, auth, response_id)
        return JSON(response)
    response = {**response, "status": "cancelled"}
    await store_put(request, auth, response, context, job_id)
    return JSON(response)


@router.delete("/responses/{response_id}", summary="Delete a stored response")
async def delete_response(response_id: str, request: Request) -> JSON:
    auth = authorization(request)
    client = mesh(request)
    response, _, job_id = await store_get(request, auth, response_id)
    if job_id and response.get("status") in ACTIVE:
        await chat_jobs.cancel(client, job_id, auth)  # nobody can read its answer any more
    await client.unary(client.router.DeleteResponse, router_pb2.DeleteResponseRequest(id=response_id), auth,
                       timeout=10)
    return JSON({"id": response_id, "object": "response", "deleted": True})


@router.get("/responses/{response_id}/input_items", summary="List a response's input items")
async def list_input_items(response_id: str, request: Request, limit: int = Query(20, ge=1, le=100),
                           order: Literal["asc", "desc"] = "desc", after: Optional[str] = None) -> JSON:
    _, context, _ = await store_get(request, authorization(request), response_id)
    items = list(context.get("input", []))
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [i.get("id") for i in items]
        if after not in ids:
            raise InvalidArgument(f"'{after}' is not an input item of this response", field="after")
        items = items[ids.index(after) + 1:]
    page = items[:limit]
    return JSON({"object": "list", "data": page, "first_id": page[0]["id"] if page else "",
                 "last_id": page[-1]["id"] if page else "", "has_more": len(items) > limit})
