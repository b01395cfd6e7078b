"""Vector stores through the official openai SDK (strict response validation) against a running mesh
(router, billing, llm with SmolLM2 and MiniLM, edge): create, upload, attach and poll, search with
filters, list and delete; another key sees none of it; the Responses file_search tool finds the
document (plain, streamed, stored); a live collection indexes what is published on its NATS
subject, once, also after the router restarts, billed to the store's key; an ordinary key cannot
follow the mesh's own subjects, an admin may choose a subject outside them."""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from typing import Any, AsyncIterator

import grpc
import httpx
import nats
import openai
import pytest

from tests.conftest import Mesh
from tests.e2e.smollm2 import SMOLLM2
from tests.e2e.smollm2 import strict_sdk as sdk

DOCS = {
    "volcano.txt": ("The Zorblat volcano on the island of Kelvara last erupted in 1821 and its lava "
                    "fields now grow purple moss.", {"topic": "geology", "year": 1821, "public": True}),
    "bakery.txt": ("Mina's bakery in Lisbon sells cinnamon pastries every morning from six o'clock; "
                   "the sourdough sells out by noon.", {"topic": "food", "year": 2019, "public": False}),
}


@pytest.fixture(scope="module")
def mesh(smollm2: Mesh) -> Mesh:
    """The session's SmolLM2 mesh (tests/e2e/conftest.py) under this module's own admin key."""
    return smollm2


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> openai.OpenAI:
    return sdk(mesh)


@pytest.fixture(scope="module")
def other_key(mesh: Mesh) -> str:
    made = httpx.post(f"{mesh.edge_url}/v1/keys", json={"name": "tenant-b"},
                      headers={"authorization": f"Bearer {mesh.api_key}"})
    made.raise_for_status()
    return made.json()["secret"]


@pytest.fixture(scope="module")
def store(client: openai.OpenAI) -> openai.types.VectorStore:
    """A store with both documents attached (uploaded through /v1/files, polled until indexed)."""
    vs = client.vector_stores.create(name="facts", metadata={"team": "e2e"})
    (volcano, volcano_attrs), (bakery, bakery_attrs) = DOCS["volcano.txt"], DOCS["bakery.txt"]
    uploaded = client.files.create(file=("volcano.txt", io.BytesIO(volcano.encode()), "text/plain"),
                                   purpose="assistants")
    done = [client.vector_stores.files.create_and_poll(vector_store_id=vs.id, file_id=uploaded.id,
                                                       attributes=volcano_attrs, poll_interval_ms=100),
            client.vector_stores.files.upload_and_poll(vector_store_id=vs.id, attributes=bakery_attrs,
                                                       file=("bakery.txt", io.BytesIO(bakery.encode()), "text/plain"),
                                                       poll_interval_ms=100)]
    assert all(f.status == "completed" and f.last_error is None and f.usage_bytes > 0 for f in done)
    return vs


def test_create_attach_and_search_finds_the_document(client: openai.OpenAI, store: openai.types.VectorStore) -> None:
    got = client.vector_stores.retrieve(store.id)
    assert got.name == "facts" and got.metadata == {"team": "e2e"} and got.status == "completed"
    assert got.file_counts.completed == 2 and got.file_counts.total == 2 and got.usage_bytes > 0
    page = client.vector_stores.search(store.id, query="When did the volcano erupt?", max_num_results=2)
    hits = list(page)
    assert hits[0].filename == "volcano.txt" and "1821" in hits[0].content[0].text
    assert hits[0].score > hits[-1].score and hits[0].attributes["topic"] == "geology"
    files = client.vector_stores.files.list(store.id)
    assert sorted(f.status for f in files.data) == ["completed", "completed"]


@pytest.mark.parametrize("filters, expected", [
    ({"type": "eq", "key": "topic", "value": "food"}, {"bakery.txt"}),
    ({"type": "gt", "key": "year", "value": 1900}, {"bakery.txt"}),
    ({"type": "in", "key": "topic", "value": ["geology", "music"]}, {"volcano.txt"}),
    ({"type": "or", "filters": [{"type": "eq", "key": "public", "value": True},
                                {"type": "lte", "key": "year", "value": 2000}]}, {"volcano.txt"}),
    ({"type": "and", "filters": [{"type": "ne", "key": "topic", "value": "geology"},
                                 {"type": "nin", "key": "year", "value": [2019]}]}, set()),
])
def test_search_filters_on_file_attributes(client: openai.OpenAI, store: openai.types.VectorStore,
                                           filters: dict, expected: set[str]) -> None:
    page = client.vector_stores.search(store.id, query="volcano", filters=filters)
    assert {hit.filename for hit in page} == expected


def test_bad_input_names_the_field(client: openai.OpenAI, store: openai.types.VectorStore) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.vector_stores.search(store.id, query="x", filters={"type": "like", "key": "a", "value": 1})
    assert "filters.type" in str(info.value)
    with pytest.raises(openai.BadRequestError) as info:
        client.vector_stores.create(chunking_strategy={"type": "static", "static": {
            "max_chunk_size_tokens": 50, "chunk_overlap_tokens": 0}})
    assert "max_chunk_size_tokens" in str(info.value)


@pytest.mark.parametrize("call, field", [
    (lambda c, vs: c.vector_stores.list(order="sideways"), "order"),
    (lambda c, vs: c.vector_stores.files.list(vs, filter="done"), "filter"),
    (lambda c, vs: c.vector_stores.search(vs, query="x", ranking_options={"ranker": "best"}), "ranking_options.ranker"),
    (lambda c, vs: c.vector_stores.create(chunking_strategy={"type": "fixed"}), "chunking_strategy.type"),
    (lambda c, vs: c.vector_stores.create(expires_after={"anchor": "created_at", "days": 1}), "expires_after.anchor"),
])
def test_a_value_outside_openais_set_is_a_400_naming_the_field(client: openai.OpenAI, store: openai.types.VectorStore,
                                                              call: Any, field: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        call(client, store.id)
    assert info.value.body["param"] == field


def test_openais_strings_map_to_the_contract_and_back(client: openai.OpenAI, store: openai.types.VectorStore) -> None:
    assert [f.status for f in client.vector_stores.files.list(store.id, filter="completed", order="asc")] == \
        ["completed", "completed"]
    assert client.vector_stores.files.list(store.id, filter="failed").data == []
    page = client.vector_stores.search(store.id, query="volcano", ranking_options={"ranker": "default-2024-11-15"})
    assert list(page)
    vs = client.vector_stores.create(name="expiring", expires_after={"anchor": "last_active_at", "days": 7},
                                     chunking_strategy={"type": "static", "static": {
                                         "max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50}})
    try:
        got = client.vector_stores.retrieve(vs.id)
        assert got.status == "completed" and got.expires_after.anchor == "last_active_at"
        assert got.expires_after.days == 7 and got.expires_at
    finally:
        client.vector_stores.delete(vs.id)


def test_another_key_cannot_see_the_store(mesh: Mesh, client: openai.OpenAI, store: openai.types.VectorStore,
                                          other_key: str) -> None:
    other = sdk(mesh, other_key)
    with pytest.raises(openai.NotFoundError):
        other.vector_stores.retrieve(store.id)
    with pytest.raises(openai.NotFoundError):
        other.vector_stores.search(store.id, query="volcano")
    with pytest.raises(openai.NotFoundError):
        other.vector_stores.delete(store.id)
    assert store.id not in [s.id for s in other.vector_stores.list()]
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model=SMOLLM2, input="volcano?", max_output_tokens=2,
                               tools=[{"type": "file_search", "vector_store_ids": [store.id]}])
    assert client.vector_stores.retrieve(store.id).id == store.id


def test_list_pages_with_cursors_and_delete_forgets(client: openai.OpenAI) -> None:
    made = [client.vector_stores.create(name=f"page-{i}") for i in range(3)]
    first = client.vector_stores.list(limit=2, order="asc", after=made[0].id)
    assert [s.id for s in first.data] == [made[1].id, made[2].id]
    newest = client.vector_stores.list(limit=1)
    assert newest.data[0].id == made[2].id and newest.has_more
    for vs in made:
        assert client.vector_stores.delete(vs.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(made[0].id)


def test_a_file_is_removed_from_search_when_deleted(client: openai.OpenAI) -> None:
    vs = client.vector_stores.create(name="temp")
    uploaded = client.files.create(file=("note.txt", io.BytesIO(b"The secret password is heliotrope."), "text/plain"),
                                   purpose="assistants")
    client.vector_stores.files.create_and_poll(vector_store_id=vs.id, file_id=uploaded.id, poll_interval_ms=100)
    assert [h.file_id for h in client.vector_stores.search(vs.id, query="password")] == [uploaded.id]
    assert client.vector_stores.files.delete(file_id=uploaded.id, vector_store_id=vs.id).deleted
    assert list(client.vector_stores.search(vs.id, query="password")) == []
    binary = client.files.create(file=("blob.bin", io.BytesIO(b"\x00\x01\x02"), "application/octet-stream"),
                                 purpose="assistants")
    failed = client.vector_stores.files.create_and_poll(vector_store_id=vs.id, file_id=binary.id, poll_interval_ms=100)
    assert failed.status == "failed" and failed.last_error.code == "unsupported_file"
    client.vector_stores.delete(vs.id)


def test_responses_file_search_finds_the_document(client: openai.OpenAI, store: openai.types.VectorStore) -> None:
    tool = {"type": "file_search", "vector_store_ids": [store.id], "max_num_results": 1}
    out = client.responses.create(model=SMOLLM2, input="Where is Mina's bakery?", tools=[tool], temperature=0,
                                  max_output_tokens=24, include=["file_search_call.results"])
    call = out.output[0]
    assert call.type == "file_search_call" and call.status == "completed"
    assert call.queries == ["Where is Mina's bakery?"] and call.results[0].filename == "bakery.txt"
    assert "Lisbon" in out.output_text  # the model read the retrieved passage
    stored = client.responses.retrieve(out.id)
    assert stored.output[0].type == "file_search_call" and stored.output_text == out.output_text
    plain = client.responses.create(model=SMOLLM2, input="Where is Mina's bakery?", tools=[tool],
                                    max_output_tokens=2)
    assert plain.output[0].type == "file_search_call" and plain.output[0].results is None
    with client.responses.stream(model=SMOLLM2, input="Where is Mina's bakery?", tools=[tool], temperature=0,
                                 max_output_tokens=24, include=["file_search_call.results"]) as stream:
        events = [e for e in stream]
    kinds = [e.type for e in events]
    assert kinds[2:7] == ["response.output_item.added", "response.file_search_call.in_progress",
                          "response.file_search_call.searching", "response.file_search_call.completed",
                          "response.output_item.done"]
    final = events[-1].response
    assert final.output[0].results[0].filename == "bakery.txt" and "Lisbon" in final.output_text


def test_a_background_response_streams(client: openai.OpenAI) -> None:
    with client.responses.stream(model=SMOLLM2, input="Say hello", background=True, max_output_tokens=8,
                                 temperature=0) as stream:
        events = [e for e in stream]
    final = events[-1].response
    assert events[0].type == "response.created" and final.background and final.status in ("completed", "incomplete")
    assert client.responses.retrieve(final.id).output_text == final.output_text


def search_ids(client: openai.OpenAI, store_id: str, query: str) -> list[str]:
    return [hit.file_id for hit in client.vector_stores.search(store_id, query=query)]


async def wait_found(client: openai.OpenAI, store_id: str, query: str, file_id: str,
                     deadline_s: float = 60.0) -> float:
    """Seconds until `file_id` is found (a generous deadline: the target is a bench measurement)."""
    start = time.monotonic()
    while file_id not in await asyncio.to_thread(search_ids, client, store_id, query):
        assert time.monotonic() - start < deadline_s, f"{file_id} not searchable after {deadline_s} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def collection_tokens(mesh: Mesh, key: str, records: int) -> list[float]:
    """The input tokens of each `collection` usage record of `key`, once billing has `records` of them."""
    async with httpx.AsyncClient(base_url=mesh.edge_url, headers={"authorization": f"Bearer {key}"}) as http:
        deadline = time.monotonic() + 30
        while True:
            logs = (await http.get("/v1/requests", params={"limit": 1000})).json()["data"]
            found = [log for log in logs if log["mode"] == "collection"]
            if len(found) >= records or time.monotonic() > deadline:
                return [sum(u["quantity"] for u in log["usage"] if u["unit"] == "input_tokens") for log in found]
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def router_replica(mesh: Mesh) -> AsyncIterator[None]:
    """A second router of the mesh, in this process: same NATS, Postgres and workers."""
    from genmesh.rpc import SERVER_OPTIONS
    from genmesh.services.router.server import RouterComponent

    settings = mesh.worker_settings("router", database_url=mesh.env["GENMESH_DATABASE_URL"],
                                    signing_secret=mesh.env["GENMESH_SIGNING_SECRET"],
                                    models_dir=mesh.env.get("GENMESH_MODELS_DIR"))
    component = RouterComponent(settings)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    component.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await component.start(port)
    await server.start()
    try:
        yield
    finally:
        await component.drain()
        await server.stop(None)
        await component.stop()


@pytest.mark.asyncio(loop_scope="session")
async def test_two_router_replicas_index_each_message_once(mesh: Mesh) -> None:
    made = httpx.post(f"{mesh.edge_url}/v1/keys", json={"name": "replicas"},
                      headers={"authorization": f"Bearer {mesh.api_key}"}).json()
    tenant = sdk(mesh, made["secret"])
    vs = await asyncio.to_thread(tenant.vector_stores.create, extra_body={"follow_subject": True})
    note = b"Replica note: the otters moved to the east pond."
    nc = await nats.connect(mesh.env["GENMESH_NATS_URL"])
    try:
        await nc.publish(vs.model_extra["subject"], note)
        await nc.flush()
        [one] = await collection_tokens(mesh, made["secret"], 1)  # what indexing the note once costs
        async with router_replica(mesh):  # pulling the same durable consumer
            for _ in range(20):
                await nc.publish(vs.model_extra["subject"], note)
            await nc.flush()
            files = await asyncio.to_thread(tenant.vector_stores.files.list, vs.id, limit=100)
            deadline = time.monotonic() + 60
            while sum(f.status == "completed" for f in files.data) < 21 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                files = await asyncio.to_thread(tenant.vector_stores.files.list, vs.id, limit=100)
        assert len(files.data) == 21 and all(f.status == "completed" for f in files.data)
        tokens = await collection_tokens(mesh, made["secret"], 2)
        # Batches of several notes make fewer records; a note indexed twice would bill more tokens.
        deadline = time.monotonic() + 30
        while sum(tokens) < 21 * one and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            tokens = await collection_tokens(mesh, made["secret"], 2)
        assert sum(tokens) == 21 * one
    finally:
        await nc.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_live_collection_indexes_what_is_published_once_also_after_a_router_restart(
        mesh: Mesh, other_key: str) -> None:
    tenant = sdk(mesh, other_key)
    vs = await asyncio.to_thread(tenant.vector_stores.create, name="live", extra_body={"follow_subject": True})
    subject = vs.model_extra["subject"]
    assert subject == f"genmesh.collections.{vs.id}"
    nc = await nats.connect(mesh.env["GENMESH_NATS_URL"])
    try:
        await nc.publish(subject, json.dumps({"id": "post-1", "text": "Breaking: the Quokka bridge opened today.",
                                              "attributes": {"source": "wire"}}).encode())
        await nc.flush()
        latency = await wait_found(tenant, vs.id, "Quokka bridge", "post-1")
        print(f"live collection publish->searchable: {latency * 1000:.0f} ms")
        hits = await asyncio.to_thread(lambda: list(tenant.vector_stores.search(vs.id, query="Quokka bridge")))
        assert hits[0].attributes == {"source": "wire"} and hits[0].filename == subject
        # Published while no router runs: indexed when one is back, and only once.
        await mesh.supervisor.stop_child("router")
        await nc.publish(subject, b"Plain text news: the Wombat festival starts at dawn.")
        await nc.flush()
        await mesh.supervisor.start_child("router")
        await mesh.supervisor.wait_healthy("router")
        files = await asyncio.to_thread(tenant.vector_stores.files.list, vs.id)
        deadline = time.monotonic() + 60
        while len(files.data) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            files = await asyncio.to_thread(tenant.vector_stores.files.list, vs.id)
        assert sorted(f.id.split("_")[0] for f in files.data) == ["msg", "post-1"]
        await wait_found(tenant, vs.id, "Wombat festival", next(f.id for f in files.data if f.id.startswith("msg_")))
        # The embeddings are billed to the store's key, like any request of its own.
        async with httpx.AsyncClient(base_url=mesh.edge_url, headers={"authorization": f"Bearer {other_key}"}) as http:
            deadline = time.monotonic() + 30
            while True:
                logs = (await http.get("/v1/requests", params={"limit": 1000})).json()["data"]
                modes = {log["mode"] for log in logs if log["model_id"].endswith("all-MiniLM-L6-v2")}
                if {"collection", "vector_store_search"} <= modes or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        assert {"collection", "vector_store_search"} <= modes
        assert all(any(u["unit"] == "input_tokens" and u["quantity"] > 0 for u in log["usage"])
                   for log in logs if log["mode"] == "collection")
    finally:
        await nc.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_an_ordinary_key_cannot_follow_the_meshs_own_subjects_and_an_admin_may_choose_one(
        mesh: Mesh, client: openai.OpenAI, other_key: str) -> None:
    await asyncio.to_thread(_subjects_refused, mesh, client, other_key)
    vs = await asyncio.to_thread(client.vector_stores.create,
                                 extra_body={"follow_subject": True, "subject": "news.e2e"})
    assert vs.model_extra["subject"] == "news.e2e"
    nc = await nats.connect(mesh.env["GENMESH_NATS_URL"])
    try:
        # A core subject is followed by every router once it has (re)read the stores: publish until
        # the first message lands (core NATS keeps nothing for a subscriber that is not there yet).
        deadline = time.monotonic() + 30
        files: list = []
        while not files and time.monotonic() < deadline:
            await nc.publish("news.e2e", b"The heron parade is on Sunday.")
            await nc.flush()
            await asyncio.sleep(0.2)
            files = (await asyncio.to_thread(client.vector_stores.files.list, vs.id)).data
        await wait_found(client, vs.id, "heron parade", files[0].id)
    finally:
        await nc.close()
    await asyncio.to_thread(client.vector_stores.delete, vs.id)


def _subjects_refused(mesh: Mesh, client: openai.OpenAI, other_key: str) -> None:
    tenant = sdk(mesh, other_key)
    with pytest.raises(openai.PermissionDeniedError):
        tenant.vector_stores.create(extra_body={"follow_subject": True, "subject": "genmesh.usage.>"})
    with pytest.raises(openai.PermissionDeniedError):
        tenant.vector_stores.create(extra_body={"follow_subject": True, "subject": "news.>"})
    with pytest.raises(openai.PermissionDeniedError):  # not even an admin
        client.vector_stores.create(extra_body={"follow_subject": True, "subject": "genmesh.workers.heartbeat"})
