"""A queued job's input is stored typed (its validated request's bytes) and runs from them; a job
stored in the old JSON form (a database from before migration 0009) still runs after the upgrade."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import asyncpg
import grpc
import nats
import pytest

from genmesh import bus
from genmesh.v1 import echo_pb2, router_pb2, router_pb2_grpc
from tests.conftest import Infra, start_mesh
from tests.integration.test_queue_durability import stored_echo, struct, wait_all_ended

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_submitted_job_is_stored_as_its_typed_request_and_completes(
        infra: Infra, tmp_path: Path) -> None:
    mesh = await start_mesh(infra, tmp_path, ["router", "echo"])
    try:
        async with grpc.aio.insecure_channel(mesh.router_addr) as ch:
            stub = router_pb2_grpc.RouterStub(ch)
            submitted = await stub.Submit(router_pb2.SubmitRequest(
                model_id="genmesh/echo", input=struct({"prompt": "typed", "num_events": 2})),
                metadata=mesh.metadata)
            # Refused at submit, naming the field, and nothing stored.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Submit(router_pb2.SubmitRequest(
                    model_id="genmesh/echo", input=struct({"prompt": "x", "num_events": -1})),
                    metadata=mesh.metadata)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert ("genmesh-field", "num_events") in tuple(err.value.trailing_metadata())
            # The router alone checks what workers now trust, model_id included.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Submit(router_pb2.SubmitRequest(model_id="", input=struct({"prompt": "x"})),
                                  metadata=mesh.metadata)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert ("genmesh-field", "model_id") in tuple(err.value.trailing_metadata())
        db_url = mesh.env["GENMESH_DATABASE_URL"]
        [row] = await wait_all_ended(db_url, [submitted.request_id])
        assert row["status"] == "COMPLETED"
        assert stored_echo(row).prompt == "typed"
        conn = await asyncpg.connect(db_url)
        try:
            stored = await conn.fetchrow("SELECT input, request, request_type FROM jobs WHERE id=$1",
                                         submitted.request_id)
            assert await conn.fetchval("SELECT count(*) FROM jobs") == 1
        finally:
            await conn.close()
        assert stored["input"] is None and stored["request_type"] == "genmesh.v1.EchoRequest"
        request = echo_pb2.EchoRequest.FromString(stored["request"])
        assert (request.model_id, request.prompt, request.num_events) == ("genmesh/echo", "typed", 2)
    finally:
        await mesh.supervisor.stop()


async def insert_json_job(conn: asyncpg.Connection, input: dict) -> str:
    """A job as a router before migration 0009 stored it: JSON input, no typed request."""
    job_id = uuid.uuid4().hex
    await conn.execute(
        "INSERT INTO jobs(id, model_id, service, api_key_id, status, priority, input, expires_at)"
        " VALUES ($1, 'genmesh/echo', 'echo', 'anonymous', 'IN_QUEUE', 'normal', $2::jsonb,"
        " now() + interval '1 day')", job_id, json.dumps(input))
    return job_id


async def test_a_job_stored_as_json_before_the_upgrade_still_runs(infra: Infra, tmp_path: Path) -> None:
    mesh = await start_mesh(infra, tmp_path, ["router", "echo"])
    try:
        db_url = mesh.env["GENMESH_DATABASE_URL"]
        conn = await asyncpg.connect(db_url)
        try:
            old = await insert_json_job(conn, {"prompt": "stored-before", "num_events": 3})
            # Stored unchecked by an older router: validated when it runs, failing with the field.
            bad = await insert_json_job(conn, {"prompt": "x", "num_events": -1})
        finally:
            await conn.close()
        nc = await nats.connect(mesh.env["GENMESH_NATS_URL"])
        try:
            js = nc.jetstream()
            for job_id in (old, bad):
                await js.publish(bus.queue_subject("echo", "normal"), job_id.encode(),
                                 headers={"Nats-Msg-Id": job_id}, timeout=5)
        finally:
            await nc.close()
        rows = {r["id"]: r for r in await wait_all_ended(db_url, [old, bad])}
        assert rows[old]["status"] == "COMPLETED"
        output = stored_echo(rows[old])
        assert (output.prompt, output.num_events) == ("stored-before", 3)
        conn = await asyncpg.connect(db_url)
        try:
            failed = await conn.fetchrow("SELECT status, error, error_type FROM jobs WHERE id=$1", bad)
        finally:
            await conn.close()
        assert failed["status"] == "FAILED" and "num_events" in failed["error"]
        assert failed["error_type"] == "invalid_argument"
    finally:
        await mesh.supervisor.stop()
