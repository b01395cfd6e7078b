"""Chat completions on the durable queue, for the edge routes that answer later (Responses
`background`, xAI's deferred completions): submit a typed chat request as a queued job, and read
its state and typed result back. The job lives in Postgres behind the router, so any edge replica
answers for it, also after restarts."""
from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import json_format

from genmesh import jsonpb
from genmesh.v1 import common_pb2, llm_pb2, router_pb2

TERMINAL = (common_pb2.JOB_STATUS_COMPLETED, common_pb2.JOB_STATUS_FAILED, common_pb2.JOB_STATUS_CANCELLED)


@dataclass(frozen=True)
class ChatJob:
    state: router_pb2.JobState
    result: llm_pb2.ChatCompleteResult | None  # set once the job completed

    @property
    def done(self) -> bool:
        return self.state.status in TERMINAL


async def submit(mesh, request: llm_pb2.ChatCompleteRequest, authorization: str) -> str:  # noqa: ANN001
    """The queued job's request id; durable once returned."""
    data = jsonpb.to_dict(request)
    data.pop("model_id", None)  # the router fills it from SubmitRequest.model_id
    resp = await mesh.unary(mesh.router.Submit, router_pb2.SubmitRequest(
        model_id=request.model_id, input=jsonpb.dict_to_struct(data)), authorization, timeout=30)
    return resp.request_id


async def read(mesh, job_id: str, authorization: str) -> ChatJob:  # noqa: ANN001
    status = await mesh.unary(mesh.router.Status, router_pb2.StatusRequest(request_id=job_id), authorization,
                              timeout=10)
    if status.job.status != common_pb2.JOB_STATUS_COMPLETED:
        return ChatJob(status.job, None)
    resp = await mesh.unary(mesh.router.Result, router_pb2.ResultRequest(request_id=job_id), authorization,
                            timeout=10)
    result = llm_pb2.ChatCompleteResult()
    json_format.ParseDict(jsonpb.struct_to_dict(resp.output), result, ignore_unknown_fields=True)
    return ChatJob(resp.job, result)


async def cancel(mesh, job_id: str, authorization: str) -> int:  # noqa: ANN001
    resp = await mesh.unary(mesh.router.Cancel, router_pb2.CancelRequest(request_id=job_id), authorization,
                            timeout=10)
    return resp.outcome
