"""Chat completions on the durable queue, for the edge routes that answer later (Responses
`background`, xAI's deferred completions): submit a typed chat request as a queued job, and read
its state and typed result back. The job lives in Postgres behind the router, so any edge replica
answers for it, also after restarts."""
from __future__ import annotations

from dataclasses import dataclass

from genmesh import jsonpb
from genmesh.services.edge import job_results
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
    resp = await mesh.unary(mesh.router.Result, job_results.request(job_id), authorization, timeout=10)
    return ChatJob(resp.job, job_results.as_message(resp, llm_pb2.ChatCompleteResult))


async def cancel(mesh, job_id: str, authorization: str) -> int:  # noqa: ANN001
    resp = await mesh.unary(mesh.router.Cancel, router_pb2.CancelRequest(request_id=job_id), authorization,
                            timeout=10)
    return resp.outcome
