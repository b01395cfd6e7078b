"""The official fal-client, pointed at the edge through its module constants, against a running
mesh: run, queue (submit, status with logs, result, subscribe, cancel), stream, uploads (CDN and
storage fallback), realtime over WebSocket, webhooks, and media runs on the modality workers."""
from __future__ import annotations

import asyncio
import base64
import importlib.util
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import fal_client
import fal_client.client as fal_module
import httpx
import pytest
import pytest_asyncio

from tests.conftest import Infra, Mesh, start_mesh
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.asyncio(loop_scope="session")
ECHO = "genmesh/echo"
CONSTANTS = ("RUN_URL_FORMAT", "QUEUE_URL_FORMAT", "REALTIME_URL_FORMAT", "REST_URL", "CDN_URL")


def echoed(result: dict[str, Any]) -> dict[str, Any]:
    """Echo's result without its empty `data` (echo always sets the field)."""
    return {k: v for k, v in result.items() if v != {}}


def has_service(name: str) -> bool:
    return importlib.util.find_spec(f"genmesh.services.{name}.server") is not None


@pytest.fixture(scope="module")
def fal(echo_mesh: Mesh) -> Iterator[fal_client.AsyncClient]:
    """An AsyncClient whose URLs all point at the edge (the client always builds them from the
    module constants; it has no base-URL option)."""
    saved = {name: getattr(fal_module, name) for name in CONSTANTS}
    point_at(echo_mesh)
    try:
        yield fal_client.AsyncClient(key=echo_mesh.api_key)
    finally:
        for name, value in saved.items():
            setattr(fal_module, name, value)


def point_at(mesh: Mesh) -> None:
    base = mesh.edge_url
    fal_module.RUN_URL_FORMAT = f"{base}/"
    fal_module.QUEUE_URL_FORMAT = f"{base}/queue/"
    fal_module.REALTIME_URL_FORMAT = base.replace("http://", "ws://") + "/"
    fal_module.REST_URL = base
    fal_module.CDN_URL = base


async def test_run_returns_the_result(fal: fal_client.AsyncClient) -> None:
    out = await fal.run(ECHO, {"prompt": "hi", "data": {"k": [1, 2]}})
    assert echoed(out) == {"prompt": "hi", "data": {"k": [1, 2]}}


async def test_bad_input_raises_with_the_field_named(fal: fal_client.AsyncClient) -> None:
    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        await fal.run(ECHO, {"promt": "typo"})
    assert err.value.status_code == 400 and err.value.error_type == "invalid_argument"
    assert "promt" in str(err.value)


async def test_submit_then_status_with_logs_and_result(fal: fal_client.AsyncClient) -> None:
    handle = await fal.submit(ECHO, {"prompt": "queued", "num_events": 5, "delay_ms": 40})
    assert handle.request_id and handle.status_url.startswith(fal_module.QUEUE_URL_FORMAT)
    seen = [status async for status in handle.iter_events(with_logs=True, interval=0.02)]
    assert isinstance(seen[-1], fal_client.Completed)
    assert any(isinstance(s, fal_client.InProgress) for s in seen)
    for status in seen:
        if isinstance(status, (fal_client.InProgress, fal_client.Completed)):
            assert isinstance(status.logs, list)  # asked with logs: a list, possibly empty
    done = seen[-1]
    assert done.error is None and done.error_type is None and done.metrics["inference_time"] > 0
    result = await handle.get()
    assert (result["prompt"], result["num_events"]) == ("queued", 5)
    again = await fal.status(ECHO, handle.request_id, with_logs=False)
    assert isinstance(again, fal_client.Completed) and again.logs is None
    assert await fal.result(ECHO, handle.request_id) == result


async def test_subscribe_reports_queue_updates_until_the_result(fal: fal_client.AsyncClient) -> None:
    updates: list[Any] = []
    enqueued: list[str] = []
    out = await fal.subscribe(ECHO, {"prompt": "sub", "num_events": 4, "delay_ms": 50}, with_logs=True,
                              on_enqueue=enqueued.append, on_queue_update=updates.append, interval=0.02)
    assert out["prompt"] == "sub" and len(enqueued) == 1
    assert isinstance(updates[-1], fal_client.Completed)
    assert any(isinstance(u, fal_client.InProgress) for u in updates)


async def test_handles_of_a_sub_path_drop_the_path(fal: fal_client.AsyncClient) -> None:
    handle = await fal.submit(ECHO, {"prompt": "p"})
    rebuilt = await fal.get_handle(f"{ECHO}/some/sub/path", handle.request_id)
    assert rebuilt.status_url == handle.status_url
    assert (await rebuilt.get())["prompt"] == "p"


async def test_cancel_a_running_request(fal: fal_client.AsyncClient) -> None:
    handle = await fal.submit(ECHO, {"num_events": 200, "delay_ms": 50})
    async for status in handle.iter_events(interval=0.02):
        if isinstance(status, fal_client.InProgress):
            break
    await handle.cancel()  # 202 CANCELLATION_REQUESTED
    done = [s async for s in handle.iter_events(interval=0.02)][-1]
    assert isinstance(done, fal_client.Completed) and done.error_type == "cancelled"
    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        await handle.get()
    assert err.value.error_type == "cancelled"
    with pytest.raises(fal_client.client.FalClientHTTPError) as again:
        await handle.cancel()
    assert again.value.status_code == 400  # ALREADY_COMPLETED
    assert again.value.response.json() == {"status": "ALREADY_COMPLETED"}


async def test_a_failed_job_completes_with_its_error_and_its_result_raises(fal: fal_client.AsyncClient) -> None:
    handle = await fal.submit(ECHO, {"fail_with": "internal"})
    done = [s async for s in handle.iter_events(interval=0.02)][-1]
    assert isinstance(done, fal_client.Completed)
    assert done.error and done.error_type == "internal_error"
    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        await handle.get()
    assert err.value.status_code == 500 and err.value.error_type == "internal_error"
    assert err.value.response_headers["x-fal-request-id"] == handle.request_id


async def test_stream_yields_progress_and_partials_then_the_result_last(fal: fal_client.AsyncClient) -> None:
    events = [e async for e in fal.stream(ECHO, {"prompt": "s", "num_events": 3})]
    assert echoed(events[-1]) == {"prompt": "s", "num_events": 3}
    kinds = [e.get("type") for e in events[:-1]]
    assert kinds.count("progress") == 3 and kinds.count("partial") == 3
    assert events[3]["partial"] == {"index": 1, "prompt": "s"}


async def test_upload_file_through_the_cdn_flow_and_the_storage_fallback(
        fal: fal_client.AsyncClient, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"uploaded through the edge")
    cdn_url = await fal.upload_file(path)
    storage_url = await fal.upload(b"through storage", "text/plain", "s.txt", repository="fal")
    sync_url = await asyncio.to_thread(fal_client.SyncClient(key=fal.key).upload_file, path)
    async with httpx.AsyncClient(timeout=30) as anon:
        for url, body in ((cdn_url, b"uploaded through the edge"), (storage_url, b"through storage"),
                          (sync_url, b"uploaded through the edge")):
            got = await anon.get(url)
            assert got.status_code == 200 and got.content == body
            assert got.headers["content-type"].startswith("text/plain")


async def test_realtime_runs_each_frame_and_reports_errors_in_band(fal: fal_client.AsyncClient) -> None:
    async with fal.realtime(ECHO) as conn:
        for prompt in ("one", "two"):
            await conn.send({"prompt": prompt, "num_events": 2})
            events = []
            while not events or "type" in events[-1]:
                events.append(await conn.recv())
            assert echoed(events[-1]) == {"prompt": prompt, "num_events": 2}
            assert [e["type"] for e in events[:-1]] == ["progress", "partial", "progress", "partial"]
        await conn.send({"num_events": -1})
        with pytest.raises(fal_client.client.RealtimeError) as err:
            await conn.recv()
        assert err.value.error == "INVALID_ARGUMENT" and "num_events" in err.value.reason
        await conn.send({"prompt": "after the error"})  # a failed input does not end the session
        assert echoed(await conn.recv()) == {"prompt": "after the error"}
    async with fal.realtime(ECHO, use_jwt=False) as conn:  # the key in the Authorization header
        await conn.send({"prompt": "header"})
        assert echoed(await conn.recv()) == {"prompt": "header"}


async def test_realtime_refuses_forged_foreign_or_missing_tokens(fal: fal_client.AsyncClient) -> None:
    echo_token = await fal._get_realtime_token(ECHO)
    for query in ("?fal_jwt_token=gmt1.forged", f"?fal_jwt_token={fal.key}", "",
                  f"?fal_jwt_token={echo_token}&other=genmesh/tiny-sd"):
        app = "genmesh/tiny-sd" if "other=" in query else ECHO  # an echo token, used for another app
        async with fal_module._connect_async_ws(f"{fal_module.REALTIME_URL_FORMAT}{app}/realtime{query}") as ws:
            conn = fal_module.AsyncRealtimeConnection(ws)
            with pytest.raises(fal_client.client.RealtimeError) as err:
                await conn.recv()
        assert err.value.error == "UNAUTHENTICATED", query


async def test_fal_webhook_receives_the_result_in_fal_shape(fal: fal_client.AsyncClient) -> None:
    import json

    async with WebhookReceiver() as hook:
        handle = await fal.submit(ECHO, {"prompt": "hooked"}, webhook_url=hook.url)
        [(_path, headers, body)] = await hook.wait_for(1)
    payload = json.loads(body)
    assert payload["request_id"] == handle.request_id and payload["status"] == "OK"
    assert payload["payload"]["prompt"] == "hooked" and payload["error"] is None
    assert headers["x-genmesh-signature"]


# --- media: the modality workers behind the same client ------------------------------------------

async def media_mesh(infra: Infra, tmp: Path, models_dir: Path, service: str) -> Mesh:
    if service == "imagegen":
        from genmesh.models import build

        build.build_missing(models_dir, ["genmesh/tiny-sd"])
    return await start_mesh(infra, tmp, ["router", "billing", service, "edge"], models_dir=models_dir)


@pytest_asyncio.fixture(loop_scope="session")
async def audio_fal(infra: Infra, tmp_path_factory: pytest.TempPathFactory,
                    models_dir: Path) -> AsyncIterator[fal_client.AsyncClient]:
    async for client in _fal_on(await media_mesh(infra, tmp_path_factory.mktemp("falaudio"), models_dir, "audio")):
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def image_fal(infra: Infra, tmp_path_factory: pytest.TempPathFactory,
                    models_dir: Path) -> AsyncIterator[fal_client.AsyncClient]:
    async for client in _fal_on(await media_mesh(infra, tmp_path_factory.mktemp("falimage"), models_dir, "imagegen")):
        yield client


async def _fal_on(mesh: Mesh) -> AsyncIterator[fal_client.AsyncClient]:
    """The client pointed at `mesh` for one test; the mesh stops after it."""
    saved = {name: getattr(fal_module, name) for name in CONSTANTS}
    point_at(mesh)
    try:
        yield fal_client.AsyncClient(key=mesh.api_key)
    finally:
        for name, value in saved.items():
            setattr(fal_module, name, value)
        await mesh.supervisor.stop()


@pytest.mark.skipif(not has_service("audio"), reason="genmesh.services.audio.server does not exist yet")
async def test_an_uploaded_file_url_is_accepted_by_a_worker(audio_fal: fal_client.AsyncClient) -> None:
    speech = await audio_fal.run("espeak-ng/espeak-ng", {"input": "hello world", "response_format": "wav",
                                                          "inline": True})
    wav = base64.b64decode(speech["audio"]["data"])
    assert wav[:4] == b"RIFF"
    url = await audio_fal.upload(wav, "audio/wav", "hello.wav")
    out = await audio_fal.run("cmusphinx/pocketsphinx-en", {"audio_url": url})
    assert isinstance(out["text"], str) and out["duration_seconds"] > 0
    with pytest.raises(fal_client.client.FalClientHTTPError) as err:
        await audio_fal.run("cmusphinx/pocketsphinx-en", {"audio_url": "http://elsewhere.example/a.wav"})
    assert err.value.status_code == 400 and "audio_url" in str(err.value)


@pytest.mark.skipif(not has_service("imagegen"), reason="genmesh.services.imagegen.server does not exist yet")
async def test_an_image_run_returns_a_fetchable_image(image_fal: fal_client.AsyncClient) -> None:
    out = await image_fal.run("genmesh/tiny-sd", {"prompt": "a red square", "num_inference_steps": 2, "seed": 1})
    image = out["images"][0]
    async with httpx.AsyncClient(timeout=30) as anon:
        got = await anon.get(image["url"])
    assert got.status_code == 200 and got.content[:8] == b"\x89PNG\r\n\x1a\n"
    events = [e async for e in image_fal.stream("genmesh/tiny-sd", {"prompt": "x", "num_inference_steps": 2})]
    assert "images" in events[-1]
