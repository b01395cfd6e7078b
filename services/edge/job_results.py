"""A queued job's result as the edge reads it: the task's typed result message (the router's
Result with RESULT_VIEW_TYPED passes on what the job stored), rendered into the caller's format
once, here. A job that ended before the router stored results typed (migration 0010) has only
the JSON it stored then; it is read from that, as before."""
from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from genmesh import jsonpb, results
from genmesh.errors import Internal
from genmesh.v1 import router_pb2

M = TypeVar("M", bound=Message)


def request(request_id: str) -> router_pb2.ResultRequest:
    """The Result call the edge makes: typed, so that nothing is rendered as JSON on the way."""
    return router_pb2.ResultRequest(request_id=request_id, view=router_pb2.RESULT_VIEW_TYPED)


def as_message(resp: router_pb2.ResultResponse, cls: type[M]) -> M:
    """The result as `cls`, the message an OpenAI-format answer is rendered from."""
    out = cls()
    if not resp.HasField("result"):  # stored as JSON, before typed results
        return json_format.ParseDict(jsonpb.struct_to_dict(resp.output), out, ignore_unknown_fields=True)
    if not resp.result.Unpack(out):
        raise Internal(f"the job's result is a {resp.result.TypeName()}, not a {out.DESCRIPTOR.full_name}")
    return out


def as_json(resp: router_pb2.ResultResponse) -> dict[str, Any]:
    """The result as the generic JSON (FAL's queue result): the same JSON a sync run answers,
    integral numbers as integers."""
    if not resp.HasField("result"):  # stored as JSON, before typed results
        return jsonpb.struct_to_json(resp.output)
    return jsonpb.plain_json(results.result_json(results.unpacked(resp.result)))
