"""NATS, PostgreSQL and genmesh services running on lab hosts, bound to the host's own address.

The servers reuse `genmesh.embedded` (binaries, staging for the unprivileged user, initdb, the
data-dir lock and log, stop) and only change how they are launched and probed: launched through
`ip netns exec`, probed from inside the host's namespace, since the root namespace cannot reach
the lab subnet.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import asyncpg

from genmesh import process
from genmesh.embedded import (
    POLL_INTERVAL_S,
    EmbeddedNats,
    EmbeddedPostgres,
    _ensure_database,
    _nats_answers,
    _pg_env,
    nats_server_binary,
)
from genmesh.process import RunAs, spawn
from tests.multihost.netlab import Host, run_in

NATS_PORT = 4222
NATS_MONITOR_PORT = 8222
POSTGRES_PORT = 5432


class HostNats(EmbeddedNats):
    """nats-server with JetStream on `host`'s address (clients on 4222, monitoring on 8222)."""

    def __init__(self, data_dir: Path, host: Host) -> None:
        super().__init__(data_dir)
        self.host = host

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host.addr}:{NATS_MONITOR_PORT}"

    async def _start(self) -> str:
        log_since = self._log_offset()
        self.process = await spawn(
            self.host.argv(str(nats_server_binary()), "--jetstream", "--addr", self.host.addr,
                           "--port", str(NATS_PORT), "--http_port", str(NATS_MONITOR_PORT),
                           "--store_dir", str(self.store_dir)),
            cwd=self.data_dir, stdout=self._log, stderr=self._log, death_signal=signal.SIGTERM)
        url = f"nats://{self.host.addr}:{NATS_PORT}"

        async def answers() -> bool:
            deadline = time.monotonic() + self.start_timeout
            while time.monotonic() < deadline:
                if await _nats_answers(url):
                    return True
                await asyncio.sleep(POLL_INTERVAL_S * 4)
            return False

        if not await asyncio.to_thread(run_in, self.host.ns, answers, self.start_timeout + 5):
            raise self._failed(f"not answering at {url}", log_since)
        return url


class HostPostgres(EmbeddedPostgres):
    """PostgreSQL on `host`'s address, trusting the lab subnet, run as an unprivileged user.

    `data_dir` must be traversable by that user (the cluster lives inside it, never relocated
    to the shared stage root, so deleting `data_dir` deletes it).
    """

    def __init__(self, data_dir: Path, host: Host, *, run_as: str = "nobody") -> None:
        super().__init__(data_dir, run_as=run_as)
        self.host = host

    async def _start(self) -> str:
        user = RunAs.lookup(self.run_as)
        bin_dir = await self._reachable_install(user) / "bin"
        self.pgdata = pgdata = self.data_dir / "pgdata"
        if not (pgdata / "PG_VERSION").is_file():
            await self._initdb(bin_dir, pgdata, user)
        subnet = self.host.addr.rsplit(".", 1)[0] + ".0/24"
        with (pgdata / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {subnet} trust\n")
        log_since = self._log_offset()
        # `ip netns exec` needs root, postgres refuses it: drop to the user after entering the
        # namespace. Changing uid clears the parent-death signal, so setpriv sets it again.
        argv = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
                "--pdeathsig=INT", "--", str(bin_dir / "postgres"), "-D", str(pgdata),
                "-h", self.host.addr, "-p", str(POSTGRES_PORT), "-k", ""]
        for name, value in self.SETTINGS.items():
            argv += ["-c", f"{name}={value}"]
        self.process = await spawn(self.host.argv(*argv), env=_pg_env(pgdata), cwd=pgdata,
                                   stdout=self._log, stderr=self._log, death_signal=signal.SIGINT)
        admin = f"postgresql://{self.SUPERUSER}@{self.host.addr}:{POSTGRES_PORT}/postgres"

        async def ready() -> bool:
            deadline = time.monotonic() + self.start_timeout
            while time.monotonic() < deadline:
                if self.process is None or self.process.returncode is not None:
                    return False
                try:
                    conn = await asyncpg.connect(admin, ssl=False, timeout=2.0)
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await asyncio.sleep(POLL_INTERVAL_S * 4)
                    continue
                try:
                    await _ensure_database(conn, self.database)
                finally:
                    await conn.close()
                return True
            return False

        if not await asyncio.to_thread(run_in, self.host.ns, ready, self.start_timeout + 5):
            raise self._failed(f"not accepting at {self.host.addr}:{POSTGRES_PORT}", log_since)
        return f"postgresql://{self.SUPERUSER}@{self.host.addr}:{POSTGRES_PORT}/{self.database}"


@dataclass
class Service:
    """One genmesh service process on a lab host."""

    name: str  # e.g. router-a
    module: str  # e.g. router
    host: Host
    port: int
    env: dict[str, str]
    log_path: Path
    proc: process.Process | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def addr(self) -> str:
        return f"{self.host.addr}:{self.port}"

    async def start(self) -> None:
        self._log = self.log_path.open("ab")
        env = {**os.environ, **self.env, "GENMESH_HOST": self.host.addr, "GENMESH_PORT": str(self.port)}
        self.proc = await spawn(self.host.argv(sys.executable, "-m", f"genmesh.services.{self.module}"),
                                env=env, cwd=Path(__file__).resolve().parents[2],
                                stdout=self._log, stderr=self._log)

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    async def stop(self, timeout: float = 5.0) -> int | None:
        code = None
        if self.proc is not None:
            code = await process.stop(self.proc, timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
