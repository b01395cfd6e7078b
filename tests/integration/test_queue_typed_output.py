"""A finished job's output is stored typed (the worker's result message's bytes, migration 0010)
and every reader answers from it what it answered before: FAL's queue result, the Router's Result
(JSON for existing clients, the stored bytes for typed readers), webhooks and deferred chat
completions. A job that ended before the upgrade, with only its JSON output, still reads the same."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from genmesh import db, jsonpb, keys
from genmesh.v1 import common_pb2, llm_pb2, router_pb2, router_pb2_grpc
from tests.conftest import ADMIN_KEY, Infra, serve_in_mesh, start_mesh, wait_for_workers
from tests.integration.test_edge_openai import CHAT, ScriptedLLMComponent
from tests.integration.test_queue_durability import stored_echo, wait_all_ended
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.asyncio(loop_scope="session")
TYPED_OUTPUT_MIGRATION = "0010_typed_job_output.sql"
# Integral numbers in a Struct, beside fractional ones, nested: what JSON rendering can get wrong.
BODY = {"prompt": "typed out", "num_events": 2,
        "data": {"n": 3, "x": 1.5, "nested": {"list": [1, 2.5, "s", True, None]}}}
# What a router before typed results stored as this job's output (the result as JSON: Struct
# numbers are doubles), and what webhooks carried.
STORED_JSON = {"prompt": "typed out", "num_events": 2,
               "data": {"n": 3.0, "x": 1.5, "nested": {"list": [1.0, 2.5, "s", True, None]}}}
SCRIPTED_CHAT = llm_pb2.ChatCompleteResult(  # ScriptedLLM's answer to one plain question
    id="chatcmpl-scripted", model=CHAT,
    usage=llm_pb2.TokenUsage(prompt_tokens=7, completion_tokens=2, total_tokens=9),
    choices=[llm_pb2.ChatChoice(index=0, finish_reason=llm_pb2.FINISH_REASON_LENGTH,
                                message=llm_pb2.ChatMessage(role=llm_pb2.ROLE_ASSISTANT, content="Hello"))])


def exact(value: Any) -> str:
    """JSON text that tells 3 from 3.0, for comparing answers exactly."""
    return json.dumps(value, sort_keys=True)


async def migrate_to_before_typed_output(url: str) -> None:
    """The database as a router from before migration 0010 left it."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE schema_migrations ("
                           "name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        for path in db.migration_files():
            if path.name < TYPED_OUTPUT_MIGRATION:
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations(name) VALUES ($1)", path.name)
    finally:
        await conn.close()


async def insert_ended_json_job(conn: asyncpg.Connection, model_id: str, service: str,
                                output: dict[str, Any]) -> str:
    """A job that completed under a router from before 0010: its output as jsonb, no typed result."""
    job_id = uuid.uuid4().hex
    key_id = "key_admin_" + keys.hash_secret(ADMIN_KEY)[:8]  # the bootstrap key the mesh makes
    await conn.execute(
        "INSERT INTO jobs(id, model_id, service, api_key_id, status, priority, request, request_type,"
        " output, usage, attempts, created_at, started_at, finished_at, expires_at)"
        " VALUES ($1, $2, $3, $4, 'COMPLETED', 'normal', '\\x'::bytea, 'genmesh.v1.EchoRequest',"
        " $5::jsonb, '[{\"unit\": \"requests\", \"quantity\": 1}]'::jsonb, 1, now() - interval '2 s',"
        " now() - interval '1 s', now(), now() + interval '1 day')",
        job_id, model_id, service, key_id, json.dumps(output))
    return job_id


async def result_of(stub: router_pb2_grpc.RouterStub, metadata: Any, request_id: str,
                    view: int = router_pb2.RESULT_VIEW_UNSPECIFIED) -> router_pb2.ResultResponse:
    return await stub.Result(router_pb2.ResultRequest(request_id=request_id, view=view), metadata=metadata)


async def deferred_completion(http: httpx.AsyncClient, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        got = await http.get(f"/v1/chat/deferred-completion/{request_id}")
        if got.status_code != 202:
            assert got.status_code == 200, got.text
            return got.json()
        assert time.monotonic() < deadline, "the deferred completion never became ready"
        await asyncio.sleep(0.1)


async def test_output_is_stored_typed_and_read_back_as_before_also_for_jobs_from_before_the_upgrade(
        infra: Infra, tmp_path: Path) -> None:
    url = await infra.new_database()
    await migrate_to_before_typed_output(url)
    conn = await asyncpg.connect(url)
    try:
        old_echo = await insert_ended_json_job(conn, "genmesh/echo", "echo", STORED_JSON)
        old_chat = await insert_ended_json_job(conn, CHAT, "llm", jsonpb.to_dict(SCRIPTED_CHAT))
    finally:
        await conn.close()
    mesh = await start_mesh(infra, tmp_path, ["router", "billing", "echo", "edge"], database_url=url,
                            extra_env={"GENMESH_OUTBOUND_ALLOW": "127.0.0.1/32"})
    try:
        async with (serve_in_mesh(ScriptedLLMComponent(mesh.worker_settings("llm"))),
                    WebhookReceiver() as receiver,
                    httpx.AsyncClient(base_url=mesh.edge_url, timeout=30,
                                      headers={"authorization": f"Bearer {mesh.api_key}"}) as http,
                    mesh.channel() as ch):
            await wait_for_workers(mesh.supervisor, ["llm"])
            stub = router_pb2_grpc.RouterStub(ch)
            # What a sync run answers: the queue's result must be the same JSON, as it was.
            run = await http.post("/genmesh/echo", json=BODY)
            assert run.status_code == 200, run.text
            submitted = await http.post("/queue/genmesh/echo", json=BODY, params={"fal_webhook": receiver.url})
            assert submitted.status_code == 200, submitted.text
            new_echo = submitted.json()["request_id"]
            deferred = await http.post("/v1/chat/completions", json={
                "model": CHAT, "deferred": True, "messages": [{"role": "user", "content": "hi"}]})
            assert deferred.status_code == 200, deferred.text
            new_chat = deferred.json()["request_id"]
            failing = (await stub.Submit(router_pb2.SubmitRequest(
                model_id="genmesh/echo", input=jsonpb.dict_to_struct({"fail_with": "internal"})),
                metadata=mesh.metadata)).request_id
            rows = {r["id"]: r for r in await wait_all_ended(
                url, [new_echo, new_chat, failing, old_echo, old_chat])}

            # Stored typed: the worker's result message, no JSON; the old rows keep theirs.
            assert rows[new_echo]["status"] == "COMPLETED"
            typed = stored_echo(rows[new_echo])
            assert (typed.prompt, typed.num_events, jsonpb.struct_to_dict(typed.data)) == (
                BODY["prompt"], BODY["num_events"], STORED_JSON["data"])
            assert rows[new_chat]["result_type"] == "genmesh.v1.ChatCompleteResult"
            assert rows[new_chat]["output"] is None
            assert llm_pb2.ChatCompleteResult.FromString(rows[new_chat]["result"]) == SCRIPTED_CHAT
            assert rows[old_echo]["result"] is None and json.loads(rows[old_echo]["output"]) == STORED_JSON

            # A failed job has neither form of output, in any view.
            assert rows[failing]["status"] == "FAILED"
            assert (rows[failing]["result"], rows[failing]["output"]) == (None, None)
            for view in (router_pb2.RESULT_VIEW_JSON, router_pb2.RESULT_VIEW_TYPED):
                res = await result_of(stub, mesh.metadata, failing, view)
                assert res.job.status == common_pb2.JOB_STATUS_FAILED and res.job.error_type == "internal_error"
                assert not res.HasField("result") and not res.output.fields

            # FAL's queue result: the sync run's JSON, for the typed job and the old one alike.
            for job_id in (new_echo, old_echo):
                got = await http.get(f"/queue/genmesh/echo/requests/{job_id}")
                assert got.status_code == 200, got.text
                assert exact(got.json()) == exact(run.json()), job_id

            # The Router's Result for existing clients: the same JSON output as before, typed or not.
            for job_id in (new_echo, old_echo):
                for view in (router_pb2.RESULT_VIEW_UNSPECIFIED, router_pb2.RESULT_VIEW_JSON):
                    res = await result_of(stub, mesh.metadata, job_id, view)
                    assert res.output == jsonpb.dict_to_struct(STORED_JSON), (job_id, view)
                    assert not res.HasField("result")
                    assert [(i.unit, i.quantity) for i in res.usage.items] == [("requests", 1.0)]
            # Typed readers get the stored bytes as they are; an old row has only its JSON.
            res = await result_of(stub, mesh.metadata, new_echo, router_pb2.RESULT_VIEW_TYPED)
            assert res.result.TypeName() == "genmesh.v1.EchoResult"
            assert res.result.value == rows[new_echo]["result"] and not res.output.fields
            res = await result_of(stub, mesh.metadata, old_echo, router_pb2.RESULT_VIEW_TYPED)
            assert not res.HasField("result") and res.output == jsonpb.dict_to_struct(STORED_JSON)

            # The webhook carries the JSON it carried before.
            [(_path, _headers, body)] = await receiver.wait_for(1, timeout=20)
            payload = json.loads(body)
            assert payload["request_id"] == new_echo and payload["status"] == "OK"
            assert exact(payload["payload"]) == exact(STORED_JSON)

            # A deferred completion reads the same from its typed result as from an old JSON one.
            new_answer, old_answer = [await deferred_completion(http, i) for i in (new_chat, old_chat)]
            assert new_answer["choices"][0]["message"]["content"] == "Hello"
            assert new_answer["usage"]["total_tokens"] == 9
            assert ({k: v for k, v in new_answer.items() if k != "created"}
                    == {k: v for k, v in old_answer.items() if k != "created"})
        conn = await asyncpg.connect(url)
        try:
            assert TYPED_OUTPUT_MIGRATION in {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        finally:
            await conn.close()
    finally:
        await mesh.supervisor.stop()

