"""xAI's deferred chat completions: `"deferred": true` on /v1/chat/completions queues the chat on
the durable queue and answers `{"request_id"}`; `GET /v1/chat/deferred-completion/{id}` answers
202 until the completion is ready, then the completion itself (the caller's key only)."""
from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from genmesh.errors import Cancelled, Internal, InvalidArgument, _BY_TYPE, _index_types
from genmesh.services.edge import chat_jobs
from genmesh.services.edge import openai_convert as convert
from genmesh.services.edge.auth import authorization
from genmesh.services.edge.openai_api import mesh
from genmesh.services.edge.openai_protocol import ChatCompletionRequest, NamedToolChoice
from genmesh.services.edge.responses import JSON
from genmesh.v1 import common_pb2, llm_pb2

router = APIRouter(prefix="/v1", tags=["xai"])


async def submit(request: Request, body: ChatCompletionRequest, req: llm_pb2.ChatCompleteRequest,
                 auth: str) -> JSON:
    if body.stream:
        raise InvalidArgument("a deferred completion is fetched later, not streamed", field="stream")
    if body.n not in (None, 1) or isinstance(body.tool_choice, NamedToolChoice) or body.logprobs:
        # What the answer is rendered with must be knowable from the result alone.
        raise InvalidArgument("deferred completions take n=1, no named tool_choice and no logprobs",
                              field="deferred")
    job_id = await chat_jobs.submit(mesh(request), req, auth)
    return JSON({"request_id": job_id})


@router.get("/chat/deferred-completion/{request_id}", summary="A deferred chat completion (202 until ready)")
async def deferred_completion(request_id: str, request: Request) -> Response:
    auth = authorization(request)
    job = await chat_jobs.read(mesh(request), request_id, auth)
    if not job.done:
        return Response(status_code=202)
    if job.result is None:
        if job.state.status == common_pb2.JOB_STATUS_CANCELLED:
            raise Cancelled("the deferred completion was cancelled")
        if not _BY_TYPE:
            _index_types()
        raise _BY_TYPE.get(job.state.error_type, Internal)(job.state.error or "the completion failed")
    created = int(job.state.created_at.seconds or time.time())
    return JSON(convert.chat_completion_json(job.result, model=job.state.model_id, created=created,
                                             logprobs=False, named_tool=False))
