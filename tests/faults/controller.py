"""The fault injector: a process of its own that owns a private NATS, a private Postgres and the
mesh's service processes, and restarts, kills or stops them on command.

    python -m tests.faults.controller <workdir>     # JSON commands on stdin, one answer per line

Why a separate process: genmesh.process.spawn forks with a preexec function, and a fork while
other threads of the same process are inside gRPC crashes the child (SIGSEGV/SIGABRT) about one
time in five with gRPC's fork support on. The test process keeps gRPC clients busy through every
fault, so it never forks; this process runs with GRPC_ENABLE_FORK_SUPPORT=false and makes no
gRPC calls while spawning. When its stdin closes (the test ended or died) it stops everything.

Embedded servers pick a fresh port at every start; a real deployment's NATS or Postgres comes
back on the address the services were configured with, so these keep their first port.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from genmesh import embedded
from genmesh.embedded import EmbeddedNats, EmbeddedPostgres
from genmesh.up import Supervisor

ADMIN_KEY_ENV = "GENMESH_API_KEY"


class PinnedNats(EmbeddedNats):
    """EmbeddedNats that comes back on the port it first had."""

    port: int | None = None

    async def _start(self) -> str:
        if self.port is None:
            url = await super()._start()
            self.port = int(url.rsplit(":", 1)[1])
            return url
        real_spawn = embedded.spawn

        async def spawn_on_port(argv: list[str], **kwargs: Any) -> Any:
            argv = list(argv)
            argv[argv.index("--port") + 1] = str(self.port)
            return await real_spawn(argv, **kwargs)

        embedded.spawn = spawn_on_port  # type: ignore[assignment]
        try:
            return await super()._start()
        finally:
            embedded.spawn = real_spawn


class PinnedPostgres(EmbeddedPostgres):
    """EmbeddedPostgres that comes back on the port it first had."""

    port: int | None = None

    async def _start(self) -> str:
        if self.port is None:
            url = await super()._start()
            self.port = int(url.rsplit(":", 1)[1].split("/")[0])
            return url
        real_free_port = embedded._free_port
        embedded._free_port = lambda: self.port  # type: ignore[assignment]
        try:
            return await super()._start()
        finally:
            embedded._free_port = real_free_port


class Controller:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.nats = PinnedNats(workdir / "nats")
        self.pg = PinnedPostgres(workdir / "postgres")
        self.env: dict[str, str] = {}
        self.supervisors: dict[str, Supervisor] = {}  # "main", "extra-1", ...
        self.stopped = False

    def _pids(self) -> dict[str, dict[str, int]]:
        return {key: {n: c.proc.pid for n, c in sup.children.items() if c.proc is not None}
                for key, sup in self.supervisors.items()}

    async def start(self, services: list[str], env: dict[str, str]) -> dict[str, Any]:
        nats_url = await self.nats.start()
        db_url = await self.pg.start()
        self.env = {"GENMESH_NATS_URL": nats_url, "GENMESH_DATABASE_URL": db_url,
                    "GENMESH_DATA_DIR": str(self.workdir), **env}
        sup = Supervisor(env=dict(self.env), log_dir=self.workdir / "logs", services=services)
        self.supervisors["main"] = sup
        await sup.start()
        return {"nats_url": nats_url, "database_url": db_url, "ports": sup.ports, "pids": self._pids()}

    async def add_worker(self, service: str) -> dict[str, Any]:
        key = f"extra-{len(self.supervisors)}"
        sup = Supervisor(env=dict(self.env), log_dir=self.workdir / key, services=[service])
        self.supervisors[key] = sup
        await sup.start()
        return {"key": key, "pids": self._pids()}

    async def kill(self, service: str, sig: int = signal.SIGKILL, key: str = "main") -> dict[str, Any]:
        code = await self.supervisors[key].stop_child(service, sig=sig)
        return {"code": code}

    async def start_service(self, service: str, key: str = "main") -> dict[str, Any]:
        sup = self.supervisors[key]
        await sup.start_child(service)
        await sup.wait_healthy(service)
        return {"pids": self._pids()}

    async def restart_nats(self, down_s: float) -> dict[str, Any]:
        await self.nats.stop()
        await asyncio.sleep(down_s)
        url = await self.nats.start()
        return {"url": url}

    async def stop_postgres(self) -> dict[str, Any]:
        await self.pg.stop()
        return {}

    async def start_postgres(self) -> dict[str, Any]:
        return {"url": await self.pg.start()}

    async def shutdown(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        for sup in reversed(list(self.supervisors.values())):
            await sup.stop()
        await self.pg.stop()
        await self.nats.stop()
        # As root the cluster lives outside the work dir (see EmbeddedPostgres): do not leave it.
        if self.pg.pgdata is not None and not self.pg.pgdata.is_relative_to(self.workdir):
            shutil.rmtree(self.pg.pgdata, ignore_errors=True)


async def serve(workdir: Path) -> None:
    controller = Controller(workdir)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            command = json.loads(line)
            name = command.pop("command")
            try:
                result = await getattr(controller, name)(**command)
                answer = {"ok": True, "result": result}
            except Exception as exc:  # noqa: BLE001 - the test sees the failure as an answer
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
            if name == "shutdown":
                return
    finally:
        await controller.shutdown()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1])))
