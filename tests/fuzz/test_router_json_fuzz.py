"""Property: any JSON object sent to the router for `genmesh/echo` (Run, Stream, Submit) yields a
result or INVALID_ARGUMENT, never another code, never a hang, and the router keeps serving.
The same holds for any JSON body POSTed to the edge's FAL route (200 or 4xx, never 5xx).

Inputs mix the echo request's own fields (right and wrong types, out-of-range numbers, odd
strings) with unknown keys and arbitrary nesting. Two things are kept out by design: echo's
`fail_with: "internal"` (a deliberate INTERNAL, echo's test hook) is accepted as INTERNAL, and
valid inputs that would make a long stream (many events, long delays) are skipped so the
property runs in seconds.
"""
from __future__ import annotations

import math
import os
from typing import Any

import grpc
import httpx
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from genmesh.v1 import router_pb2, router_pb2_grpc
from tests.conftest import ADMIN_KEY, Mesh

ECHO_FIELDS = ("prompt", "data", "num_events", "delay_ms", "fail_with")
CALL_TIMEOUT_S = 15.0
# Fixed examples in CI; GENMESH_FUZZ_EXPLORE=1 draws new ones on every run.
DERANDOMIZE = not os.environ.get("GENMESH_FUZZ_EXPLORE")
METADATA = (("authorization", f"Bearer {ADMIN_KEY}"),)

# JSON values; Struct numbers are doubles, so integers beyond 2**53 arrive rounded, which is fine.
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 63), max_value=2 ** 64)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
           | st.sampled_from(["", "invalid_argument", "internal", "NaN", "1e309", "\x00", "🙂" * 3]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
keys = st.sampled_from(ECHO_FIELDS) | st.text(max_size=12)
# Half the objects use only echo's fields, with values of about the right type (so many are
# valid and reach the worker); the rest are anything at all.
echo_values = {
    "prompt": st.text(max_size=200) | json_values,
    "data": st.dictionaries(st.text(max_size=10), json_values, max_size=4) | json_values,
    "num_events": st.integers(min_value=-3, max_value=400) | st.floats(-1e3, 1e3) | json_values,
    "delay_ms": st.integers(min_value=-3, max_value=20) | json_values,
    "fail_with": st.sampled_from(["", "invalid_argument", "internal", "other"]) | json_values,
}
echo_objects = st.fixed_dictionaries({}, optional=echo_values)
json_objects = echo_objects | st.dictionaries(keys, json_values, max_size=6)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def would_be_slow(data: dict[str, Any]) -> bool:
    """A valid echo request streaming for more than a fraction of a second."""
    events = _number(data.get("num_events")) or 0.0
    delay = _number(data.get("delay_ms")) or 0.0
    return 0 < events <= 10_000 and 0 <= delay <= 60_000 and (events > 300 or events * delay > 300)


def to_struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


def allowed(data: dict[str, Any], code: grpc.StatusCode) -> bool:
    if code == grpc.StatusCode.OK or code == grpc.StatusCode.INVALID_ARGUMENT:
        return True
    return code == grpc.StatusCode.INTERNAL and data.get("fail_with") == "internal"


def call(stub: router_pb2_grpc.RouterStub, method: str, data: dict[str, Any]) -> grpc.StatusCode:
    inputs = to_struct(data)
    try:
        if method == "Run":
            stub.Run(router_pb2.RunRequest(model_id="genmesh/echo", input=inputs), metadata=METADATA,
                     timeout=CALL_TIMEOUT_S)
        elif method == "Submit":
            stub.Submit(router_pb2.SubmitRequest(model_id="genmesh/echo", input=inputs), metadata=METADATA,
                        timeout=CALL_TIMEOUT_S)
        else:
            for _event in stub.Stream(router_pb2.StreamRequest(model_id="genmesh/echo", input=inputs),
                                      metadata=METADATA, timeout=CALL_TIMEOUT_S):
                pass
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def router_pid(mesh: Mesh) -> int:
    proc = mesh.supervisor.children["router"].proc
    assert proc is not None
    return proc.pid


def test_any_json_object_yields_a_result_or_invalid_argument(echo_mesh: Mesh) -> None:
    pid = router_pid(echo_mesh)
    seen: dict[str, int] = {}
    with grpc.insecure_channel(echo_mesh.router_addr) as channel:
        stub = router_pb2_grpc.RouterStub(channel)

        @given(data=json_objects, method=st.sampled_from(["Run", "Stream", "Submit"]))
        @settings(max_examples=250, deadline=None, database=None, derandomize=DERANDOMIZE,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        def property_holds(data: dict[str, Any], method: str) -> None:
            assume(not would_be_slow(data))
            code = call(stub, method, data)
            seen[code.name] = seen.get(code.name, 0) + 1
            assert code != grpc.StatusCode.DEADLINE_EXCEEDED, f"{method} hung on {data!r}"
            assert allowed(data, code), f"{method}({data!r}) -> {code.name}"

        property_holds()
        # Still serving, and the same process: nothing above crashed it.
        assert call(stub, "Run", {"prompt": "still here"}) == grpc.StatusCode.OK
    assert router_pid(echo_mesh) == pid and echo_mesh.supervisor.children["router"].restarts == 0
    print(f"\nrouter JSON fuzz: {seen}")
    assert seen.get("OK", 0) > 10 and seen.get("INVALID_ARGUMENT", 0) > 10, seen


def test_any_json_body_on_the_fal_route_is_answered_without_5xx(echo_mesh: Mesh) -> None:
    seen: dict[int, int] = {}
    bodies = json_values | json_objects
    with httpx.Client(base_url=echo_mesh.edge_url, timeout=CALL_TIMEOUT_S,
                      headers={"Authorization": f"Key {ADMIN_KEY}"}) as http:

        @given(body=bodies)
        @settings(max_examples=150, deadline=None, database=None, derandomize=DERANDOMIZE,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        def property_holds(body: Any) -> None:
            assume(not (isinstance(body, dict) and would_be_slow(body)))
            assume(not (isinstance(body, float) and math.isnan(body)))
            response = http.post("/genmesh/echo", json=body)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            allowed_500 = isinstance(body, dict) and body.get("fail_with") == "internal"
            assert response.status_code < 500 or allowed_500, (body, response.status_code, response.text)

        property_holds()
    print(f"\nFAL JSON fuzz: {dict(sorted(seen.items()))}")
    assert seen.get(200, 0) > 5 and seen.get(400, 0) > 5, seen
