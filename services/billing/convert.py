"""Billing's proto <-> Python conversions: timestamps, statuses, prices."""
from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp

from genmesh.pricing import Price
from genmesh.v1 import billing_pb2, common_pb2, router_pb2


def to_timestamp(value: dt.datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def from_timestamp(msg: object, name: str) -> dt.datetime | None:
    """A request's optional Timestamp field as an aware datetime (None when unset)."""
    if not msg.HasField(name):  # type: ignore[attr-defined]
        return None
    return getattr(msg, name).ToDatetime(tzinfo=dt.timezone.utc)


def status_name(status: int) -> str:
    """COMPLETED, FAILED, CANCELLED, ... (the enum name without its prefix)."""
    try:
        return common_pb2.JobStatus.Name(status).removeprefix("JOB_STATUS_")
    except ValueError:
        return "UNSPECIFIED"


def status_enum(name: str) -> int:
    try:
        return common_pb2.JobStatus.Value("JOB_STATUS_" + name)
    except ValueError:
        return common_pb2.JOB_STATUS_UNSPECIFIED


def model_price(price: Price) -> billing_pb2.ModelPrice:
    return billing_pb2.ModelPrice(
        model_id=price.model_id, machine_type=price.machine_type,
        price=router_pb2.Price(unit=price.unit, unit_price=price.unit_price, per=price.per,
                               currency=price.currency),
        effective_from=to_timestamp(price.effective_from))
