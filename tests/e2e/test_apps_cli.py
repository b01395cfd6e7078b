"""The apps CLI as a user runs it: `genmesh run` serves the example locally; `genmesh deploy`
puts it on a mesh (through the edge, with GENMESH_URL and GENMESH_API_KEY) where it is callable
at once; `genmesh apps list | scale | logs | delete` manage it."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from genmesh.up import free_port
from tests.conftest import Mesh, start_mesh

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = f"{ROOT / 'examples' / 'text_stats' / 'app.py'}::TextStats"


def genmesh(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GENMESH_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "genmesh.cli", *args], env=full_env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mesh(infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    mesh = await start_mesh(infra, tmp_path_factory.mktemp("apps-cli"), ["router", "apps", "edge"])
    try:
        yield mesh
    finally:
        await mesh.supervisor.stop()


def test_genmesh_run_serves_the_app_locally_without_a_mesh() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENMESH_")}
    proc = subprocess.Popen([sys.executable, "-m", "genmesh.cli", "run", EXAMPLE, "--port", str(port)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                manifest = httpx.get(url + "/", timeout=1).json()
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "genmesh run did not start"
                time.sleep(0.1)
        assert [e["path"] for e in manifest["endpoints"]] == ["/", "/transform"]
        assert httpx.post(url + "/", json={"text": "local run works"}).json()["words"] == 3
        with httpx.stream("POST", url + "/transform/stream", json={"text": "a b"}) as stream:
            data = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
        assert data[-1]["text"] == "A B"
        assert data[0] == {"type": "partial", "partial": {"text": "A", "done": 1, "total": 2}}
        bad = httpx.post(url + "/", json={"txt": "typo"})
        assert bad.status_code == 400 and bad.json()["field"] == "txt"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


@pytest.mark.asyncio(loop_scope="session")
async def test_deploy_then_call_list_scale_logs_and_delete(mesh: Mesh) -> None:
    env = {"GENMESH_URL": mesh.edge_url, "GENMESH_API_KEY": mesh.api_key}
    name = "cli/text-stats"

    deployed = await asyncio.to_thread(genmesh, "deploy", EXAMPLE, "--name", name, "--json", env=env)
    assert deployed.returncode == 0, deployed.stderr
    app = json.loads(deployed.stdout)
    assert app["id"] == name and app["version"] == 1
    urls = {e["path"]: e["url"] for e in app["endpoints"]}
    assert urls["/"] == f"{mesh.edge_url}/{name}"

    async with httpx.AsyncClient(headers={"Authorization": f"Key {mesh.api_key}"}, timeout=60) as http:
        answer = await http.post(urls["/"], json={"text": "deployed in one command"})
    assert answer.status_code == 200 and answer.json()["words"] == 4

    listed = await asyncio.to_thread(genmesh, "apps", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(name))
    assert row.split()[1] == "1" and int(row.split()[3]) >= 1  # version 1, a live runner

    scaled = await asyncio.to_thread(genmesh, "apps", "scale", name, "--max", "3", "--keep-alive", "5",
                                     "--json", env=env)
    assert scaled.returncode == 0, scaled.stderr
    assert json.loads(scaled.stdout)["max_concurrency"] == 3

    logs = await asyncio.to_thread(genmesh, "apps", "logs", name, env=env)
    assert logs.returncode == 0, logs.stderr
    assert "deployed version 1" in logs.stdout and "text-stats ready" in logs.stdout

    wrong = await asyncio.to_thread(genmesh, "apps", "delete", name,
                                    env={**env, "GENMESH_API_KEY": "gm_not_a_key"})
    assert wrong.returncode == 1 and "401" in wrong.stderr

    deleted = await asyncio.to_thread(genmesh, "apps", "delete", name, env=env)
    assert deleted.returncode == 0, deleted.stderr
    after = await asyncio.to_thread(genmesh, "apps", "list", "--json", env=env)
    assert name not in [a["id"] for a in json.loads(after.stdout)]


def test_deploy_names_what_is_wrong_with_a_bad_reference(tmp_path: Path) -> None:
    missing = genmesh("deploy", f"{tmp_path}/nope.py::App", env={"GENMESH_URL": "http://127.0.0.1:9"})
    assert missing.returncode == 1 and "no such file" in missing.stderr
    (tmp_path / "plain.py").write_text("class NotAnApp:\n    pass\n")
    wrong = genmesh("deploy", f"{tmp_path}/plain.py::NotAnApp", env={"GENMESH_URL": "http://127.0.0.1:9"})
    assert wrong.returncode == 1 and "not a genmesh.App subclass" in wrong.stderr
