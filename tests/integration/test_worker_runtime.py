"""The worker runtime's share of every call: capacity held by the worker itself, and where each
catalog entry's weights are looked for (the typed weight source)."""
from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from genmesh.catalog import Catalog
from genmesh.errors import ModelUnavailable
from genmesh.services.echo.server import EchoComponent
from genmesh.settings import Settings
from genmesh.v1 import echo_pb2, echo_pb2_grpc
from genmesh.weights import WeightKind, WeightSource
from genmesh.worker.weights import checkpoint_dir, weights_owner
from tests.conftest import serve_in_process


async def test_a_worker_refuses_calls_beyond_its_capacity_and_takes_them_again_after(
        tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, nats_url=None, worker_capacity=1, host="127.0.0.1",
                        port=0)
    component = EchoComponent(settings)
    async with serve_in_process(component) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        first = stub.Echo(echo_pb2.EchoRequest(prompt="a", num_events=3, delay_ms=200))
        await first.read()  # the first call is running on the worker now
        with pytest.raises(grpc.aio.AioRpcError) as err:
            [e async for e in stub.Echo(echo_pb2.EchoRequest(prompt="b", num_events=1))]
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "capacity" in (err.value.details() or "")
        last = await first.read()
        while (event := await first.read()) is not grpc.aio.EOF:
            last = event
        assert last.result.prompt == "a"
        again = [e async for e in stub.Echo(echo_pb2.EchoRequest(prompt="c", num_events=1))]
        assert again[-1].result.prompt == "c"
        assert component.runtime.running == {}


def test_weight_sources_are_read_once_into_a_kind() -> None:
    catalog = Catalog.load()
    assert WeightSource.of(catalog.get("genmesh/tiny-sd")) == WeightSource(WeightKind.BUILD,
                                                                            "genmesh/tiny-sd")
    assert WeightSource.of(catalog.get("stabilityai/sd-turbo")).kind is WeightKind.HUB
    assert WeightSource.of(catalog.get("openai/whisper-tiny.en")).kind is WeightKind.PACKAGE
    assert WeightSource.of(catalog.get("genmesh/echo")).kind is WeightKind.BUILTIN


def test_entries_sharing_weights_load_from_their_owners_directory(tmp_path: Path) -> None:
    catalog = Catalog.load()
    img2img = catalog.get("genmesh/tiny-sd/image-to-image")
    models = [catalog.get("genmesh/tiny-sd/image-to-image"), catalog.get("genmesh/tiny-sd")]
    assert weights_owner(img2img, models).id == "genmesh/tiny-sd"
    with pytest.raises(ModelUnavailable) as err:
        checkpoint_dir(img2img, tmp_path, marker="model_index.json")
    assert "genmesh models build genmesh/tiny-sd" in err.value.message
    built = tmp_path / "genmesh/tiny-sd"
    built.mkdir(parents=True)
    (built / "model_index.json").write_text("{}")
    assert checkpoint_dir(img2img, tmp_path, marker="model_index.json") == built
    hub = catalog.get("stabilityai/sd-turbo")
    with pytest.raises(ModelUnavailable) as err:
        checkpoint_dir(hub, tmp_path, marker="model_index.json", what="diffusers")
    assert "stabilityai/sd-turbo diffusers checkpoint" in err.value.message
    assert "genmesh models pull stabilityai/sd-turbo" in err.value.message
