"""Apps without a mesh: the App API and its manifest, calling endpoints in-process, the `genmesh
run` server, code bundles, deploy-request checks and the runner protocol against a real runner
process."""
from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest
from pydantic import BaseModel
from starlette.testclient import TestClient

import genmesh
from genmesh.apps import bundle, wire
from genmesh.apps.app import AppDefinitionError
from genmesh.apps.invoke import AppFailure, InvalidInput, call
from genmesh.apps.loader import AppRef, load_class
from genmesh.apps.local import create_app
from genmesh.apps.spec import app_request, check_deploy, spec_of
from genmesh.errors import InvalidArgument, NotFound
from genmesh.services.apps.codecache import missing_requirements
from genmesh.v1 import apps_pb2

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "text_stats"


class In(BaseModel):
    n: int


class Out(BaseModel):
    value: int


class Counter(genmesh.App):
    @genmesh.endpoint("/")
    def double(self, x: In) -> Out:
        return Out(value=2 * x.n)

    @genmesh.endpoint("/count")
    def count(self, x: In) -> Iterator[Out]:
        for i in range(x.n):
            yield Out(value=i)
        return Out(value=-1)

    @genmesh.endpoint("/async")
    async def later(self, x: In) -> Out:
        await asyncio.sleep(0)
        return Out(value=x.n + 1)

    @genmesh.endpoint("/async-stream")
    async def later_stream(self, x: In) -> AsyncIterator[Out]:
        for i in range(x.n):
            yield Out(value=i)

    @genmesh.endpoint("/fail")
    def fail(self, x: In) -> Out:
        raise ValueError(f"cannot do {x.n}")

    @genmesh.endpoint("/wrong")
    def wrong(self, x: In) -> Out:
        return {"value": "not a number"}  # type: ignore[return-value]


def test_the_manifest_exports_each_endpoint_schema_and_the_hardware() -> None:
    m = Counter.manifest("app.py::Counter")
    assert m.name == "counter" and m.machine_type == "CPU" and m.num_gpus == 0
    paths = {e.path: e for e in m.endpoints}
    assert set(paths) == {"/", "/count", "/async", "/async-stream", "/fail", "/wrong"}
    assert paths["/count"].streaming and paths["/async-stream"].streaming and not paths["/"].streaming
    assert paths["/"].input_schema["properties"]["n"]["type"] == "integer"
    assert paths["/count"].output_schema["title"] == "Out"


@pytest.mark.parametrize("source, message", [
    ("class A(genmesh.App):\n    pass\n", "no @genmesh.endpoint"),
    ("class A(genmesh.App):\n    @genmesh.endpoint('/')\n    def f(self, x): ...\n", "annotate"),
    ("class A(genmesh.App):\n    @genmesh.endpoint('/')\n    def f(self, x: int) -> dict: ...\n", "Pydantic model"),
    ("class A(genmesh.App):\n    @genmesh.endpoint('/')\n    def f(self) -> dict: ...\n"
     "    @genmesh.endpoint('/')\n    def g(self) -> dict: ...\n", "two endpoints"),
])
def test_a_wrongly_declared_app_is_refused_with_the_reason(source: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("import genmesh\n" + source)
    with pytest.raises(AppDefinitionError, match=message):
        load_class(AppRef.parse(f"{tmp_path / 'a.py'}::A")).manifest()


@pytest.mark.parametrize("path", ["no-slash", "/Upper", "/a//b", "/x/stream", "/requests"])
def test_endpoint_paths_are_checked(path: str) -> None:
    with pytest.raises(AppDefinitionError):
        genmesh.endpoint(path)


def test_calls_run_plain_generator_and_async_endpoints() -> None:
    import asyncio as aio

    app, eps, loop = Counter(), Counter.endpoints(), aio.new_event_loop()
    try:
        assert list(call(app, eps["/"], {"n": 4})) == [("result", {"value": 8})]
        assert list(call(app, eps["/count"], {"n": 2})) == [
            ("partial", {"value": 0}), ("partial", {"value": 1}), ("result", {"value": -1})]
        assert list(call(app, eps["/async"], {"n": 1}, loop=loop)) == [("result", {"value": 2})]
        assert list(call(app, eps["/async-stream"], {"n": 2}, loop=loop))[-1] == ("result", {"value": 1})
    finally:
        loop.close()


def test_call_errors_name_the_field_or_carry_the_apps_own_message() -> None:
    app, eps = Counter(), Counter.endpoints()
    with pytest.raises(InvalidInput) as bad:
        list(call(app, eps["/"], {"n": 1, "m": 2}))
    assert bad.value.field == "m"
    with pytest.raises(InvalidInput) as typed:
        list(call(app, eps["/"], {"n": "x"}))
    assert typed.value.field == "n"
    with pytest.raises(AppFailure, match="ValueError: cannot do 3"):
        list(call(app, eps["/fail"], {"n": 3}))
    with pytest.raises(AppFailure, match="invalid Out"):
        list(call(app, eps["/wrong"], {"n": 3}))


def test_genmesh_run_server_answers_json_and_streams_sse() -> None:
    cls = load_class(AppRef.parse(f"{EXAMPLE / 'app.py'}::TextStats"))
    with TestClient(create_app(cls)) as client:
        assert client.post("/", json={"text": "a b"}).json()["words"] == 2
        with client.stream("POST", "/transform/stream", json={"text": "a b"}) as resp:
            lines = [line for line in resp.iter_lines() if line.startswith("data:")]
        assert len(lines) == 3
        assert client.post("/missing", json={}).status_code == 404
        assert client.post("/", json={"text": 1}).json()["field"] == "text"


def test_bundles_hold_code_only_and_unsafe_archives_are_refused(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("x = 1\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "util.py").write_text("y = 2\n")
    for junk in (".git/config", "__pycache__/app.cpython-311.pyc", "weights.safetensors", ".env"):
        (tmp_path / junk).parent.mkdir(exist_ok=True)
        (tmp_path / junk).write_text("junk")
    data = bundle.build(tmp_path)
    assert bundle.names(data) == ["app.py", "pkg/util.py"]
    assert bundle.build(tmp_path) == data  # deterministic
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.py", "boom")
    with pytest.raises(bundle.BundleError, match="unsafe"):
        bundle.names(evil.getvalue())


def _deploy_request(**overrides: object) -> apps_pb2.DeployAppRequest:
    req = apps_pb2.DeployAppRequest(name="alice/stats", entrypoint="app.py::TextStats",
                                    code=bundle.build(EXAMPLE), machine_type="CPU", max_concurrency=2,
                                    keep_alive_seconds=30)
    for ep in load_class(AppRef.parse(f"{EXAMPLE / 'app.py'}::TextStats")).manifest().endpoints:
        out = req.endpoints.add(path=ep.path, streaming=ep.streaming)
        out.input_schema.update(ep.input_schema)
    for key, value in overrides.items():
        if isinstance(value, list):
            getattr(req, key)[:] = value
        else:
            setattr(req, key, value)
    return req


@pytest.mark.parametrize("overrides, field", [
    ({"name": "Alice/Stats"}, "name"), ({"name": "a/b/c"}, "name"), ({"entrypoint": "../app.py::X"}, "entrypoint"),
    ({"entrypoint": "other.py::X"}, "entrypoint"), ({"machine_type": "GPU-B200"}, "machine_type"),
    ({"machine_type": "GPU-A100", "num_gpus": 9}, "num_gpus"), ({"num_gpus": 1}, "num_gpus"),
    ({"min_concurrency": 3}, "min_concurrency"), ({"keep_alive_seconds": -1}, "keep_alive_seconds"),
    ({"requirements": ["not a requirement!!"]}, "requirements[0]"), ({"code": b"not a zip"}, "code"),
    # The worker fetches requirements: never from a URL the tenant names (file://, internal hosts).
    ({"requirements": ["msgpack", "x @ file:///etc/shadow"]}, "requirements[1]"),
    ({"requirements": ["x @ http://127.0.0.1:4222/x.whl"]}, "requirements[0]"),
])
def test_deploy_requests_are_checked_field_by_field(overrides: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_deploy(_deploy_request(**overrides), "key_x")
    assert err.value.field == field


def test_an_alias_alone_deploys_under_the_callers_key_and_gpu_apps_need_gpus() -> None:
    assert check_deploy(_deploy_request(name="stats"), "key_ab12").id == "key_ab12/stats"
    gpu = check_deploy(_deploy_request(machine_type="GPU-H100"), "k")
    assert gpu.num_gpus == 1
    spec = spec_of(apps_pb2.App(id="a/b", machine_type="GPU-H100", num_gpus=1, version=3))
    assert spec.gpu_required and spec.gpu_classes == ["H100"] and spec.prices[0].unit == "runner_seconds"


def test_app_input_is_checked_against_the_endpoint_schema_and_versioned() -> None:
    app = check_deploy(_deploy_request(), "k")
    app.version = 7
    spec = spec_of(app)
    req = app_request(spec, "alice/stats/transform", {"text": "x", "mode": "upper"})
    assert req.version == 7 and req.input["mode"] == "upper"
    with pytest.raises(InvalidArgument) as err:
        app_request(spec, "alice/stats/transform", {"text": "x", "mode": "sideways"})
    assert err.value.field == "mode"
    with pytest.raises(NotFound, match="alice/stats/transform"):
        app_request(spec, "alice/stats/nope", {})


def test_requirements_already_installed_are_not_installed_again() -> None:
    assert missing_requirements(["pydantic>=2", "msgpack"]) == []
    wanted = ["pydantic<1", "surely-not-installed-pkg"]
    assert missing_requirements(wanted) == wanted
    assert missing_requirements(["surely-not-installed-pkg; python_version < '3'"]) == []


def test_a_runner_process_serves_calls_over_the_socket_and_tears_down(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text(textwrap.dedent('''
        import genmesh
        from pydantic import BaseModel

        class In(BaseModel):
            n: int

        class Echo(genmesh.App):
            def setup(self):
                print("setup done")

            def teardown(self):
                open("teardown.txt", "w").write("bye")

            @genmesh.endpoint("/")
            def run(self, x: In) -> In:
                print("got", x.n)
                return x
    '''))
    path = tmp_path / "r.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    proc = subprocess.Popen([sys.executable, "-m", "genmesh.apps.runner", "--socket", str(path),
                             "--runner-id", "r1", "--root", str(code), "--entrypoint", "app.py::Echo",
                             "--parent-pid", str(os.getpid())], stdin=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"t0ken\n")  # the one-time hello token, as the worker hands it over
        proc.stdin.close()
        conn, _ = server.accept()
        conn.settimeout(60)
        frames = [wire.recv_frame(conn)]
        while frames[-1]["t"] not in (wire.READY, wire.FAILED):
            frames.append(wire.recv_frame(conn))
        assert frames[0] == {"t": wire.HELLO, "runner": "r1", "token": "t0ken", "pid": proc.pid}
        assert frames[-1]["t"] == wire.READY
        assert any(f["t"] == wire.LOG and f["message"] == "setup done" and "id" not in f for f in frames)
        conn.sendall(wire.pack({"t": wire.INVOKE, "id": 1, "path": "/", "input": {"n": 5}}))
        got = [wire.recv_frame(conn)]
        while got[-1]["t"] not in wire.TERMINAL:
            got.append(wire.recv_frame(conn))
        assert {"t": wire.LOG, "message": "got 5", "level": "info", "id": 1} in got
        assert got[-1]["t"] == wire.RESULT and got[-1]["output"] == {"n": 5} and got[-1]["seconds"] >= 0
        conn.sendall(wire.pack({"t": wire.INVOKE, "id": 2, "path": "/", "input": {"n": "x"}}))
        while (frame := wire.recv_frame(conn))["t"] not in wire.TERMINAL:
            pass
        assert frame["kind"] == wire.INVALID_INPUT and frame["field"] == "n"
        conn.sendall(wire.pack({"t": wire.STOP}))
        assert proc.wait(timeout=30) == 0
        assert (code / "teardown.txt").read_text() == "bye"
    finally:
        proc.kill()
        server.close()
