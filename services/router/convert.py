"""Typed worker events -> the generic Router stream (JSON partials and results)."""
from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from genmesh import jsonpb
from genmesh.results import result_json as result_output  # shared with the edge and stored jobs
from genmesh.v1 import common_pb2, router_pb2

CONTROL_CASES = ("progress", "log", "usage", "result")


def case_of(event: Message) -> tuple[str, Message]:
    """The oneof case and payload of a typed event; a unary response is its own result."""
    if "event" not in event.DESCRIPTOR.oneofs_by_name:
        return "result", event
    case = event.WhichOneof("event")
    return case or "", getattr(event, case) if case else event


def to_generic(request_id: str, case: str, payload: Message) -> router_pb2.StreamResponse:
    out = router_pb2.StreamResponse(request_id=request_id)
    if case == "progress":
        out.progress.CopyFrom(payload)
    elif case == "log":
        out.log.CopyFrom(payload)
    elif case == "usage":
        out.usage.CopyFrom(payload)
    elif case == "result":
        out.result.output.update(result_output(payload))
    elif payload.DESCRIPTOR.full_name == "genmesh.v1.PartialOutput":
        # An app's partial already is JSON (like its result): passed through, not nested.
        out.partial.CopyFrom(payload)
        out.partial.kind = payload.kind or case
    else:
        out.partial.kind = case
        out.partial.data.update(jsonpb.to_dict(payload))
    return out


def usage_items(usage: common_pb2.Usage) -> list[dict[str, Any]]:
    return [{"unit": i.unit, "quantity": i.quantity} for i in usage.items]
