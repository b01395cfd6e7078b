"""The router with real NATS, Postgres and an echo worker: sync, streamed, typed and queued calls."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2

from genmesh.services.router import webhooks
from genmesh.v1 import common_pb2, echo_pb2, echo_pb2_grpc, router_pb2, router_pb2_grpc
from tests.conftest import Mesh
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.asyncio(loop_scope="session")


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


async def wait_status(stub: router_pb2_grpc.RouterStub, md, request_id: str, statuses: set[int],
                      timeout: float = 30.0) -> router_pb2.JobState:
    deadline = time.monotonic() + timeout
    while True:
        job = (await stub.Status(router_pb2.StatusRequest(request_id=request_id, logs=True), metadata=md)).job
        if job.status in statuses:
            return job
        assert time.monotonic() < deadline, f"job stuck in {job.status}"
        await asyncio.sleep(0.02)


async def test_run_returns_the_input(echo_mesh: Mesh) -> None:
    async with echo_mesh.channel() as ch:
        resp = await router_pb2_grpc.RouterStub(ch).Run(
            router_pb2.RunRequest(model_id="genmesh/echo", input=struct({"prompt": "hi", "data": {"k": [1, 2]}})),
            metadata=echo_mesh.metadata)
    assert resp.output["prompt"] == "hi"
    assert list(resp.output["data"]["k"]) == [1, 2]
    assert resp.request_id and resp.usage.items[0].unit == "requests"


async def test_stream_emits_progress_partials_then_the_result_last(echo_mesh: Mesh) -> None:
    async with echo_mesh.channel() as ch:
        events = [e async for e in router_pb2_grpc.RouterStub(ch).Stream(
            router_pb2.StreamRequest(model_id="genmesh/echo", input=struct({"prompt": "p", "num_events": 3})),
            metadata=echo_mesh.metadata)]
    cases = [e.WhichOneof("event") for e in events]
    assert cases.count("progress") == 3 and cases.count("partial") == 3
    assert cases[-1] == "result"
    assert events[-1].result.output["prompt"] == "p"
    assert {e.request_id for e in events} == {events[0].request_id}


async def test_typed_stub_talks_to_the_router_only(echo_mesh: Mesh) -> None:
    async with echo_mesh.channel() as ch:
        events = [e async for e in echo_pb2_grpc.EchoStub(ch).Echo(
            echo_pb2.EchoRequest(model_id="genmesh/echo", prompt="typed", num_events=1), metadata=echo_mesh.metadata)]
    assert events[-1].result.prompt == "typed"


async def test_unknown_model_is_not_found(echo_mesh: Mesh) -> None:
    async with echo_mesh.channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await router_pb2_grpc.RouterStub(ch).Run(router_pb2.RunRequest(model_id="nobody/nothing"),
                                                     metadata=echo_mesh.metadata)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nobody/nothing" in err.value.details()


@pytest.mark.parametrize("data, field", [({"promt": "x"}, "promt"), ({"num_events": -1}, "num_events"),
                                         ({"num_events": "many"}, "num_events")])
async def test_bad_input_is_invalid_argument_naming_the_field(echo_mesh: Mesh, data: dict, field: str) -> None:
    async with echo_mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        for call in (stub.Run(router_pb2.RunRequest(model_id="genmesh/echo", input=struct(data)), metadata=echo_mesh.metadata),
                     stub.Submit(router_pb2.SubmitRequest(model_id="genmesh/echo", input=struct(data)), metadata=echo_mesh.metadata)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in err.value.details()
            assert ("genmesh-field", field) in tuple(err.value.trailing_metadata())


async def test_missing_or_wrong_key_is_unauthenticated(echo_mesh: Mesh) -> None:
    async with echo_mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        for md in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Run(router_pb2.RunRequest(model_id="genmesh/echo"), metadata=md)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_worker_errors_keep_their_code_and_the_worker_keeps_serving(echo_mesh: Mesh) -> None:
    async with echo_mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Run(router_pb2.RunRequest(model_id="genmesh/echo", input=struct({"fail_with": "internal"})),
                           metadata=echo_mesh.metadata)
        assert err.value.code() == grpc.StatusCode.INTERNAL
        ok = await stub.Run(router_pb2.RunRequest(model_id="genmesh/echo", input=struct({"prompt": "still"})),
                            metadata=echo_mesh.metadata)
        assert ok.output["prompt"] == "still"


async def test_submit_status_watch_and_result(echo_mesh: Mesh) -> None:
    async with echo_mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        sub = await stub.Submit(router_pb2.SubmitRequest(
            model_id="genmesh/echo", input=struct({"prompt": "queued", "num_events": 3, "delay_ms": 50})),
            metadata=echo_mesh.metadata)
        assert sub.request_id and sub.status == common_pb2.JOB_STATUS_IN_QUEUE
        seen = [w.job.status async for w in stub.WatchStatus(
            router_pb2.WatchStatusRequest(request_id=sub.request_id), metadata=echo_mesh.metadata)]
        assert seen[-1] == common_pb2.JOB_STATUS_COMPLETED
        assert common_pb2.JOB_STATUS_IN_PROGRESS in seen
        result = await stub.Result(router_pb2.ResultRequest(request_id=sub.request_id), metadata=echo_mesh.metadata)
        assert result.output["prompt"] == "queued"
        assert result.job.inference_time_seconds > 0
        assert [(i.unit, i.quantity) for i in result.usage.items] == [("requests", 1.0)]


async def test_idempotency_key_returns_the_same_request(echo_mesh: Mesh) -> None:
    async with echo_mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        req = router_pb2.SubmitRequest(model_id="genmesh/echo", input=struct({"prompt": "once"}),
                                       idempotency_key=f"idem-{time.time_ns()}")
        a = await stub.Submit(req, metadata=echo_mesh.metadata)
        b = await stub.Submit(req, metadata=echo_mesh.metadata)
    assert a.request_id == b.request_id


async def test_cancel_a_running_job_ends_it_cancelled(echo_mesh: Mesh) -> None:
    async with echo_mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        sub = await stub.Submit(router_pb2.SubmitRequest(
            model_id="genmesh/echo", input=struct({"num_events": 100, "delay_ms": 100})), metadata=echo_mesh.metadata)
        await wait_status(stub, echo_mesh.metadata, sub.request_id, {common_pb2.JOB_STATUS_IN_PROGRESS})
        resp = await stub.Cancel(router_pb2.CancelRequest(request_id=sub.request_id), metadata=echo_mesh.metadata)
        assert resp.outcome == router_pb2.CANCEL_OUTCOME_CANCELLATION_REQUESTED
        job = await wait_status(stub, echo_mesh.metadata, sub.request_id, {common_pb2.JOB_STATUS_CANCELLED}, timeout=10)
        assert job.inference_time_seconds < 5  # stopped, not run to its 10 s end
        again = await stub.Cancel(router_pb2.CancelRequest(request_id=sub.request_id), metadata=echo_mesh.metadata)
        assert again.outcome == router_pb2.CANCEL_OUTCOME_ALREADY_COMPLETED
        missing = await stub.Cancel(router_pb2.CancelRequest(request_id="nope"), metadata=echo_mesh.metadata)
        assert missing.outcome == router_pb2.CANCEL_OUTCOME_NOT_FOUND


async def test_start_timeout_fails_a_job_that_waited_too_long(echo_mesh: Mesh) -> None:
    async with echo_mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        blocker = [await stub.Submit(router_pb2.SubmitRequest(
            model_id="genmesh/echo", input=struct({"num_events": 10, "delay_ms": 100})), metadata=echo_mesh.metadata)
            for _ in range(8)]
        late = await stub.Submit(router_pb2.SubmitRequest(
            model_id="genmesh/echo", input=struct({}), start_timeout=duration_pb2.Duration(nanos=300_000_000)), metadata=echo_mesh.metadata)
        job = await wait_status(stub, echo_mesh.metadata, late.request_id,
                                {common_pb2.JOB_STATUS_FAILED, common_pb2.JOB_STATUS_COMPLETED})
        for b in blocker:
            await stub.Cancel(router_pb2.CancelRequest(request_id=b.request_id), metadata=echo_mesh.metadata)
    assert job.status == common_pb2.JOB_STATUS_FAILED and job.error_type == "start_timeout"


async def test_webhook_is_signed_and_retried_until_delivered(echo_mesh: Mesh) -> None:
    async with WebhookReceiver(failures=2) as receiver, echo_mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        sub = await stub.Submit(router_pb2.SubmitRequest(
            model_id="genmesh/echo", input=struct({"prompt": "hooked"}),
            webhook_url=receiver.url), metadata=echo_mesh.metadata)
        *_, (_path, headers, body) = await receiver.wait_for(3, timeout=20)
        # The third attempt is recorded once its 200 is back at the router, after it arrived here.
        deadline = time.monotonic() + 20
        while len(deliveries := (await stub.ListWebhookDeliveries(
                router_pb2.ListWebhookDeliveriesRequest(request_id=sub.request_id),
                metadata=echo_mesh.metadata)).deliveries) < 3:
            assert time.monotonic() < deadline, list(deliveries)
            await asyncio.sleep(0.02)
    assert webhooks.verify("test-signing-secret", headers, body)
    assert not webhooks.verify("wrong-secret", headers, body)
    assert not webhooks.verify("test-signing-secret", headers, body + b" ")
    payload = json.loads(body)
    assert payload["request_id"] == sub.request_id and payload["status"] == "OK"
    assert payload["payload"]["prompt"] == "hooked"
    assert [d.status_code for d in deliveries][:3] == [500, 500, 200]


async def test_another_keys_jobs_are_invisible(echo_mesh: Mesh) -> None:
    import asyncpg

    from genmesh import keys

    pool = await asyncpg.connect(echo_mesh.env["GENMESH_DATABASE_URL"])
    other = keys.new_secret()
    await pool.execute("INSERT INTO api_keys(id, scope, prefix, secret_hash) VALUES ($1,'user',$2,$3)",
                       keys.new_key_id(), other[:8], keys.hash_secret(other))
    await pool.close()
    async with echo_mesh.channel() as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        sub = await stub.Submit(router_pb2.SubmitRequest(model_id="genmesh/echo", input=struct({"prompt": "mine"})),
                                metadata=echo_mesh.metadata)
        md = (("authorization", f"Bearer {other}"),)
        for call in (stub.Status(router_pb2.StatusRequest(request_id=sub.request_id), metadata=md),
                     stub.Result(router_pb2.ResultRequest(request_id=sub.request_id), metadata=md)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        resp = await stub.Cancel(router_pb2.CancelRequest(request_id=sub.request_id), metadata=md)
        assert resp.outcome == router_pb2.CANCEL_OUTCOME_NOT_FOUND
