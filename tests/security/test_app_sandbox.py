"""A hostile tenant's app on a running mesh (router and app worker as processes, real NATS and
Postgres): an ordinary key granted `deploy` deploys an app whose endpoint tries each escape and
reports what it got. It runs as an unprivileged uid, sees no mesh secret and no other process,
cannot read the data directory or the Postgres cluster, cannot write its code, reaches none of the
mesh's ports, cannot pose as another runner, and is held to its memory and time limits while the
worker keeps serving. A worker without a sandbox refuses non-admin apps with the reason."""
from __future__ import annotations

import os
import shutil
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlparse

import asyncpg
import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format, struct_pb2

from genmesh import keys
from genmesh.apps import bundle
from genmesh.apps.loader import AppRef, load_class
from genmesh.apps.protocol import DeployBody
from genmesh.v1 import apps_pb2, apps_pb2_grpc, router_pb2, router_pb2_grpc
from tests.conftest import Infra, Mesh, start_mesh

pytestmark = pytest.mark.asyncio(loop_scope="session")

MEMORY_LIMIT_MB = 1024
CALL_TIMEOUT_S = 5
HOSTILE = '''
import glob, os, socket, time
from typing import Any
from pydantic import BaseModel
import genmesh


class Probe(BaseModel):
    probe: str
    paths: list[str] = []
    ports: list[int] = []
    hosts: list[str] = []
    megabytes: int = 0
    seconds: float = 0.0


class Report(BaseModel):
    got: dict[str, Any]


def attempt(fn):
    try:
        return {"ok": True, "value": fn()}
    except BaseException as exc:  # what the sandbox said, reported back
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def read(path):
    with open(path, "rb") as f:
        return f.read(4096).decode(errors="replace")


def connect(host, port):
    with socket.create_connection((host, port), timeout=2):
        return "connected"


def fake_hello():
    from genmesh.apps import wire
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect("/run/genmesh/runner.sock")
    s.sendall(wire.pack({"t": wire.HELLO, "runner": "victim-v1-000000", "token": "guess"}))
    return s.recv(1).decode() or "closed"


class Escape(genmesh.App):
    keep_alive = 60
    max_concurrency = 1

    @genmesh.endpoint("/")
    def run(self, p: Probe) -> Report:
        got: dict[str, Any] = {}
        if p.probe == "identity":
            got = {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
                   "groups": os.getgroups(), "ppid": os.getppid(),
                   "status": read("/proc/self/status"), "limits": read("/proc/self/limits"),
                   "tmp_bytes": os.statvfs("/tmp").f_blocks * os.statvfs("/tmp").f_frsize}
        elif p.probe == "processes":
            pids = sorted(int(d) for d in os.listdir("/proc") if d.isdigit())
            got = {"pids": pids,
                   "parent_environ": attempt(lambda: read(f"/proc/{os.getppid()}/environ")),
                   "environs": {str(pid): attempt(lambda pid=pid: read(f"/proc/{pid}/environ")) for pid in pids},
                   "cmdlines": {str(pid): attempt(lambda pid=pid: read(f"/proc/{pid}/cmdline")) for pid in pids},
                   "own_env": dict(os.environ)}
        elif p.probe == "files":
            got = {path: attempt(lambda path=path: read(path) if os.path.isfile(path) else os.listdir(path))
                   for path in p.paths}
        elif p.probe == "write":
            got = {path: attempt(lambda path=path: open(path, "w").write("pwned")) for path in p.paths}
            got["tmp"] = attempt(lambda: open("/tmp/scratch", "w").write("mine"))
        elif p.probe == "network":
            got = {f"{h}:{port}": attempt(lambda h=h, port=port: connect(h, port))
                   for h in p.hosts for port in p.ports}
            got["gateway"] = attempt(fake_hello)
        elif p.probe == "memory":
            block = bytearray(p.megabytes << 20)
            got = {"allocated": len(block)}
        elif p.probe == "sleep":
            time.sleep(p.seconds)
        return Report(got=got)
'''


def deploy_request(directory: Path, source: str, cls: str, name: str) -> apps_pb2.DeployAppRequest:
    """What `genmesh deploy` sends: the manifest of the class and a zip of its directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.py").write_text(textwrap.dedent(source))
    ref = AppRef.parse(f"{directory / 'app.py'}::{cls}")
    manifest = load_class(ref).manifest(ref.entrypoint(directory)).model_dump()
    manifest["name"] = name
    return DeployBody(**manifest).to_request(bundle.build(directory))


async def insert_key(mesh: Mesh, name: str, scope: str) -> str:
    """A key as CreateApiKey writes it (scope 'deploy' = API_KEY_SCOPE_DEPLOY); its secret."""
    secret = keys.new_secret()
    conn = await asyncpg.connect(mesh.env["GENMESH_DATABASE_URL"])
    try:
        await conn.execute("INSERT INTO api_keys (id, name, scope, prefix, secret_hash) VALUES ($1,$2,$3,$4,$5)",
                           keys.new_key_id(), name, scope, secret[:8], keys.hash_secret(secret))
    finally:
        await conn.close()
    return secret


def auth(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


class Tenant:
    def __init__(self, mesh: Mesh, secret: str) -> None:
        self.mesh = mesh
        self.secret = secret

    async def deploy(self, request: apps_pb2.DeployAppRequest) -> apps_pb2.App:
        async with self.mesh.channel() as ch:
            return (await apps_pb2_grpc.AppsStub(ch).DeployApp(request, metadata=auth(self.secret),
                                                               timeout=60)).app

    async def run(self, model_id: str, data: dict[str, Any]) -> dict[str, Any]:
        body = struct_pb2.Struct()
        body.update(data)
        async with self.mesh.channel() as ch:
            resp = await router_pb2_grpc.RouterStub(ch).Run(
                router_pb2.RunRequest(model_id=model_id, input=body), metadata=auth(self.secret), timeout=120)
        return json_format.MessageToDict(resp.output)["got"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hostile(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Tenant, str]]:
    tmp = tmp_path_factory.mktemp("sandbox-mesh")
    mesh = await start_mesh(infra, tmp, ["router", "apps"], extra_env={
        "GENMESH_APPS_MEMORY_LIMIT_MB": str(MEMORY_LIMIT_MB),
        "GENMESH_APPS_CALL_TIMEOUT_S": str(CALL_TIMEOUT_S)})
    try:
        # What `genmesh up` keeps in the data directory: the admin key and the signing secret.
        for name, value in (("api-key", mesh.api_key), ("signing-secret", mesh.env["GENMESH_SIGNING_SECRET"])):
            (tmp / name).write_text(value)
            os.chmod(tmp / name, 0o600)
        tenant = Tenant(mesh, await insert_key(mesh, "mallory", "deploy"))
        app = await tenant.deploy(deploy_request(tmp / "escape", HOSTILE, "Escape", "mallory/escape"))
        yield tenant, app.id
    finally:
        await mesh.supervisor.stop()


def postgres_cluster(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """The session's embedded Postgres cluster (staged outside the mode-700 tmp dir as root)."""
    for pointer in tmp_path_factory.getbasetemp().glob("infra*/postgres/pgdata.location"):
        return Path(pointer.read_text().strip())
    return None


async def test_app_code_runs_as_an_unprivileged_user_with_no_capabilities_and_its_limits(
        hostile: tuple[Tenant, str]) -> None:
    tenant, app = hostile
    got = await tenant.run(app, {"probe": "identity"})
    assert got["uid"] == got["euid"] == 65534 and got["gid"] == 65534 and got["groups"] == []
    caps = {line.split(":")[0]: line.split(":")[1].strip() for line in got["status"].splitlines() if line.startswith("Cap")}
    assert set(caps.values()) == {"0000000000000000"}, caps  # none, not even in the bounding set
    assert "NoNewPrivs:\t1" in got["status"]
    limits = {line[:26].strip(): line[26:].split() for line in got["limits"].splitlines()[1:]}
    assert limits["Max address space"][:2] == [str(MEMORY_LIMIT_MB << 20)] * 2
    assert limits["Max cpu time"][0] != "unlimited" and limits["Max processes"][0] != "unlimited"
    assert 0 < got["tmp_bytes"] <= 2 << 30  # its private /tmp is a sized tmpfs, not host memory at will


async def test_app_sees_only_its_own_sandbox_processes_and_no_mesh_secret(hostile: tuple[Tenant, str]) -> None:
    tenant, app = hostile
    got = await tenant.run(app, {"probe": "processes"})
    assert len(got["pids"]) <= 3, got["cmdlines"]  # bwrap's init and the runner: its own pid namespace
    programs = {c["value"].split("\x00")[0] for c in got["cmdlines"].values() if c["ok"]}
    assert programs <= {shutil.which("bwrap"), sys.executable}, programs  # no worker, NATS, Postgres
    shown = " ".join(c["value"] for c in got["cmdlines"].values() if c["ok"])
    assert str(tenant.mesh.data_dir) not in shown  # the host's paths stay out of sight too
    assert not got["parent_environ"]["ok"]  # bwrap's init is root's: not readable
    secrets = [tenant.mesh.api_key, tenant.mesh.env["GENMESH_SIGNING_SECRET"],
               tenant.mesh.env["GENMESH_DATABASE_URL"], tenant.mesh.env["GENMESH_NATS_URL"]]
    readable = " ".join(e["value"] for e in got["environs"].values() if e["ok"])
    readable += " ".join(f"{k}={v}" for k, v in got["own_env"].items())
    for secret in secrets:
        assert secret not in readable
    assert {k for k in got["own_env"] if k.startswith("GENMESH_")} <= {
        "GENMESH_APP_ID", "GENMESH_APP_VERSION", "GENMESH_RUNNER_ID"}


async def test_app_cannot_read_the_data_directory_or_the_postgres_cluster(
        hostile: tuple[Tenant, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    tenant, app = hostile
    data = tenant.mesh.data_dir
    paths = [str(data), str(data / "api-key"), str(data / "signing-secret"), str(data / "apps"),
             "/root", os.path.expanduser("~/.genmesh")]
    cluster = postgres_cluster(tmp_path_factory)
    assert cluster is not None or os.environ.get("GENMESH_TEST_DATABASE_URL")  # embedded: it is found
    if cluster is not None:
        # Owned by the very uid the sandbox runs as: only not being mounted keeps it out.
        paths += [str(cluster), str(cluster / "PG_VERSION"), str(cluster / "global" / "pg_control")]
    got = await tenant.run(app, {"probe": "files", "paths": paths})
    for path in paths:
        result = got[path]
        if path == "/root":  # a bare mount point for the Python installation, nothing of root's
            assert result["ok"] and set(result["value"]) <= {".pyenv"}, result
            continue
        assert not result["ok"], (path, result)
        assert "FileNotFoundError" in result["error"] or "PermissionError" in result["error"], (path, result)


async def test_app_cannot_write_its_code_but_has_a_private_tmp(hostile: tuple[Tenant, str]) -> None:
    tenant, app = hostile
    got = await tenant.run(app, {"probe": "write", "paths": ["/app/app.py", "/app/new.py", "/usr/pwned"]})
    for path in ("/app/app.py", "/app/new.py", "/usr/pwned"):
        assert not got[path]["ok"] and ("Read-only" in got[path]["error"] or "Permission" in got[path]["error"])
    assert got["tmp"] == {"ok": True, "value": 4}


async def test_app_reaches_no_mesh_port_and_cannot_pose_as_another_runner(hostile: tuple[Tenant, str]) -> None:
    tenant, app = hostile
    env = tenant.mesh.env
    ports = [urlparse(env["GENMESH_NATS_URL"]).port, urlparse(env["GENMESH_DATABASE_URL"]).port,
             *tenant.mesh.supervisor.ports.values()]
    got = await tenant.run(app, {"probe": "network", "ports": ports, "hosts": ["127.0.0.1", "10.0.0.1"]})
    for port in ports:
        loopback, other = got[f"127.0.0.1:{port}"], got[f"10.0.0.1:{port}"]
        assert not loopback["ok"] and "ConnectionRefusedError" in loopback["error"], (port, loopback)
        assert not other["ok"] and "unreachable" in other["error"].lower(), (port, other)
    # The runner socket is its one channel; a hello without the runner's token is dropped.
    assert got["gateway"] == {"ok": True, "value": "closed"}, got["gateway"]


async def test_memory_beyond_the_limit_fails_that_call_and_the_app_keeps_serving(
        hostile: tuple[Tenant, str]) -> None:
    tenant, app = hostile
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await tenant.run(app, {"probe": "memory", "megabytes": 2 * MEMORY_LIMIT_MB})
    assert err.value.code() == grpc.StatusCode.INTERNAL and "MemoryError" in err.value.details()
    assert (await tenant.run(app, {"probe": "memory", "megabytes": 16}))["allocated"] == 16 << 20


async def test_a_call_past_its_time_limit_is_stopped_and_the_next_call_runs(hostile: tuple[Tenant, str]) -> None:
    tenant, app = hostile
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await tenant.run(app, {"probe": "sleep", "seconds": 600})
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert f"{CALL_TIMEOUT_S}s time limit" in err.value.details()
    assert (await tenant.run(app, {"probe": "identity"}))["uid"] == 65534


# --- a worker without a sandbox -----------------------------------------------------------------

SIMPLE = '''
import os
from pydantic import BaseModel
import genmesh


class Empty(BaseModel):
    pass


class Who(BaseModel):
    uid: int


class WhoAmI(genmesh.App):
    @genmesh.endpoint("/")
    def run(self, x: Empty) -> Who:
        return Who(uid=os.getuid())
'''


async def test_without_a_sandbox_non_admin_apps_are_refused_with_the_reason_and_admin_apps_run(
        infra: Infra, tmp_path: Path) -> None:
    mesh = await start_mesh(infra, tmp_path, ["router", "apps"], extra_env={"GENMESH_APPS_SANDBOX": "off"})
    try:
        tenant = Tenant(mesh, await insert_key(mesh, "trent", "deploy"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await tenant.deploy(deploy_request(tmp_path / "who", SIMPLE, "WhoAmI", "trent/who"))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "sandbox" in err.value.details() and "GENMESH_APPS_SANDBOX=off" in err.value.details()
        admin = Tenant(mesh, mesh.api_key)
        app = await admin.deploy(deploy_request(tmp_path / "who", SIMPLE, "WhoAmI", "ops/who"))
        assert app.trusted
        assert (await run_plain(mesh, app.id))["uid"] == os.getuid()  # unsandboxed, with a warning

        # Code that is not an admin's reaching such a worker anyway (say, deployed before the
        # worker joined): the worker refuses to start it, naming why.
        conn = await asyncpg.connect(mesh.env["GENMESH_DATABASE_URL"])
        try:
            await conn.execute("UPDATE apps SET trusted = false WHERE id = $1", app.id)
        finally:
            await conn.close()
        async with mesh.channel() as ch:  # republishes the app; keep_alive 0 retires the warm runner
            await apps_pb2_grpc.AppsStub(ch).ScaleApp(apps_pb2.ScaleAppRequest(id=app.id, keep_alive_seconds=0),
                                                      metadata=mesh.metadata)
        deadline = time.monotonic() + 60
        while True:
            try:
                await run_plain(mesh, app.id)
            except grpc.aio.AioRpcError as exc:
                refusal = exc
                break
            assert time.monotonic() < deadline, "the worker kept running an untrusted app unsandboxed"
        assert refusal.code() == grpc.StatusCode.FAILED_PRECONDITION, refusal
        assert "runs only sandboxed" in refusal.details() and "GENMESH_APPS_SANDBOX=off" in refusal.details()
    finally:
        await mesh.supervisor.stop()


async def run_plain(mesh: Mesh, model_id: str) -> dict[str, Any]:
    async with mesh.channel() as ch:
        resp = await router_pb2_grpc.RouterStub(ch).Run(router_pb2.RunRequest(model_id=model_id),
                                                        metadata=mesh.metadata, timeout=120)
    return json_format.MessageToDict(resp.output)
