"""Echo's request rules, shared by the worker and the router (which checks before enqueueing)."""
from __future__ import annotations

from genmesh.errors import InvalidArgument
from genmesh.v1 import echo_pb2

MAX_EVENTS = 10_000
MAX_DELAY_MS = 60_000


def validate(request: echo_pb2.EchoRequest) -> None:
    if not 0 <= request.num_events <= MAX_EVENTS:
        raise InvalidArgument(f"must be between 0 and {MAX_EVENTS}", field="num_events")
    if not 0 <= request.delay_ms <= MAX_DELAY_MS:
        raise InvalidArgument(f"must be between 0 and {MAX_DELAY_MS}", field="delay_ms")
    if request.fail_with not in ("", "invalid_argument", "internal"):
        raise InvalidArgument("must be invalid_argument or internal", field="fail_with")
