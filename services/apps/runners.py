"""Runner processes as the app worker sees them: spawning one (in the sandbox, see sandbox.py),
the unix socket it connects back to, one call at a time over the runner protocol with a wall-clock
limit, its printed output as app logs, and stopping it (teardown first, then SIGTERM, then
SIGKILL). A runner that dies mid-call fails that call only."""
from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import os
import secrets
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from genmesh import process
from genmesh.apps import wire
from genmesh.errors import DeadlineExceeded, Internal
from genmesh.v1 import apps_pb2
from genmesh.services.apps import sandbox as sandboxing
from genmesh.services.apps.codecache import Code
from genmesh.services.apps.sandbox import Sandbox

log = logging.getLogger("genmesh.apps.runners")
HELLO_TIMEOUT_S = 60.0
SETUP_TIMEOUT_S = 900.0
STOP_GRACE_S = 10.0
# Runners get none of the worker's GENMESH_* settings (keys, database URLs, secrets): user code
# learns only which app and runner it is.
_PRIVATE_PREFIXES = ("GENMESH_",)

OnLog = Callable[["RunnerProcess", str, str, int | None], None]  # (runner, message, level, call id)


class State(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    DEAD = "dead"


class RunnerFailed(Internal):
    """A runner failed to start, or died while serving a call."""


class Gateway:
    """The unix socket runners connect back to; each connection is handed to the runner that
    names itself in its hello frame with the one-time token it was given on stdin (so one app's
    runner, which can reach this socket, cannot pose as another app's)."""

    def __init__(self) -> None:
        # Short path: unix socket paths are limited to ~100 bytes.
        self.dir = Path("/tmp") / f"gm-apps-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.path = self.dir / "runners.sock"
        self._waiting: dict[str, tuple[str, asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]] = {}
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        _remove_stale_dirs(self.dir.parent)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.path),
                                                       limit=wire.MAX_FRAME_BYTES)
        # Sandboxed runners connect as another uid; the directory (0700) keeps everyone else out,
        # and only the socket itself is bound into a sandbox.
        os.chmod(self.path, 0o666)

    def expect(self, runner_id: str, token: str) -> asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        future = asyncio.get_running_loop().create_future()
        self._waiting[runner_id] = (token, future)
        return future

    def forget(self, runner_id: str) -> None:
        self._waiting.pop(runner_id, None)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = await asyncio.wait_for(wire.read_frame(reader), HELLO_TIMEOUT_S)
        except (asyncio.TimeoutError, wire.ProtocolError, OSError):
            hello = None
        future = None
        if hello is not None and hello.get("t") == wire.HELLO:
            runner_id = str(hello.get("runner", ""))
            token, waiting = self._waiting.get(runner_id, ("", None))
            if waiting is not None and secrets.compare_digest(token.encode(), str(hello.get("token", "")).encode()):
                future = waiting
                del self._waiting[runner_id]
        if future is None or future.done():
            writer.close()
            return
        future.set_result((reader, writer))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        with contextlib.suppress(OSError):
            self.path.unlink()
            self.dir.rmdir()


def _remove_stale_dirs(parent: Path) -> None:
    """Socket directories of workers that died without cleaning up (SIGKILL)."""
    for path in parent.glob("gm-apps-*-*"):
        try:
            pid = int(path.name.split("-")[2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


@dataclass
class Call:
    id: int
    request_id: str = ""
    frames: asyncio.Queue[dict[str, Any] | BaseException] = field(default_factory=asyncio.Queue)
    done: bool = False


_ids = itertools.count(1)


class RunnerProcess:
    """One runner of one app version."""

    def __init__(self, app: apps_pb2.App, code: Code, gateway: Gateway, *, worker_id: str,
                 on_log: OnLog, on_state: Callable[["RunnerProcess"], None],
                 sandbox: Sandbox | None = None, call_timeout_s: float = 0.0) -> None:
        self.app_id = app.id
        self.version = app.version
        self.entrypoint = app.entrypoint
        self.code = code
        self.gateway = gateway
        self.worker_id = worker_id
        self.runner_id = f"{app.id.split('/')[-1]}-v{app.version}-{uuid.uuid4().hex[:6]}"
        self.token = secrets.token_urlsafe(24)
        self.sandbox = sandbox
        self.gpu = app.num_gpus > 0 or app.machine_type.upper().startswith("GPU")
        self.call_timeout_s = call_timeout_s
        self.on_log = on_log
        self.on_state = on_state
        self.state = State.STARTING
        self.reserved = False          # started for a waiting request, which gets it first
        self.created = time.monotonic()
        self.last_used = time.monotonic()
        self.setup_seconds = 0.0
        self.start_seconds = 0.0
        self.exit_code: int | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.current: Call | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.get_running_loop().create_future()

    # --- lifecycle ------------------------------------------------------------------------------

    def _command(self) -> tuple[list[str], dict[str, str], str]:
        """The runner's command line, environment and working directory."""
        ids = dict(GENMESH_APP_ID=self.app_id, GENMESH_APP_VERSION=str(self.version),
                   GENMESH_RUNNER_ID=self.runner_id)
        if self.sandbox is not None:
            argv = [sys.executable, "-P", "-m", "genmesh.apps.runner", "--socket", sandboxing.SOCKET_PATH,
                    "--runner-id", self.runner_id, "--root", sandboxing.CODE_DIR,
                    "--entrypoint", self.entrypoint]
            if self.code.site:
                ids["PYTHONPATH"] = sandboxing.SITE_DIR
            cmd = self.sandbox.command(argv, code=self.code.root, site_dir=self.code.site,
                                       socket=self.gateway.path, gpu=self.gpu)
            return cmd, sandboxing.sandbox_env(ids), "/"
        # Unsandboxed (admin apps on a worker without a sandbox): the worker's own user.
        argv = [sys.executable, "-P", "-m", "genmesh.apps.runner", "--socket", str(self.gateway.path),
                "--runner-id", self.runner_id, "--root", str(self.code.root),
                "--entrypoint", self.entrypoint, "--parent-pid", str(os.getpid())]
        return argv, self._env(), str(self.code.root)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_PREFIXES)}
        paths = [p for p in (str(self.code.site) if self.code.site else "", env.get("PYTHONPATH", "")) if p]
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(paths)
        env.update(PYTHONUNBUFFERED="1", GENMESH_APP_ID=self.app_id,
                   GENMESH_APP_VERSION=str(self.version), GENMESH_RUNNER_ID=self.runner_id)
        return env

    async def start(self) -> None:
        """Spawns the runner and waits until its setup() finished; RunnerFailed otherwise."""
        started = time.monotonic()
        connected = self.gateway.expect(self.runner_id, self.token)
        try:
            # Not process.spawn: its preexec_fn runs Python between fork and exec, which crashes
            # (SIGSEGV) in a process whose gRPC threads are busy. Without it the child is started
            # by vfork/exec, and the runner arms its own parent-death signal (--parent-pid;
            # in the sandbox bwrap's --die-with-parent).
            # -P: the app's directory (the cwd) must not shadow the runner's own imports.
            cmd, env, cwd = self._command()
            pass_fds: tuple[int, ...] = ()
            if self.sandbox is not None:
                # bwrap reads its arguments from a pipe, so the sandbox's /proc/1/cmdline does
                # not spell out the host's paths (the data directory, the code cache).
                cmd, args_fd = sandboxing.args_via_pipe(cmd)
                pass_fds = (args_fd,)
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    *cmd, env=env, cwd=cwd, stdin=asyncio.subprocess.PIPE, pass_fds=pass_fds,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
            finally:
                for fd in pass_fds:
                    os.close(fd)
            assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
            # The hello token on stdin: not in argv or the environment, which /proc shows.
            self.proc.stdin.write(self.token.encode() + b"\n")
            with contextlib.suppress(OSError):
                await self.proc.stdin.drain()
            self.proc.stdin.close()
            self._tasks += [asyncio.create_task(self._pipe(self.proc.stdout, "info")),
                            asyncio.create_task(self._pipe(self.proc.stderr, "error"))]
            exited = asyncio.ensure_future(self.proc.wait())
            done, _ = await asyncio.wait({connected, exited}, timeout=HELLO_TIMEOUT_S,
                                         return_when=asyncio.FIRST_COMPLETED)
            if connected not in done:
                exited.cancel()
                raise RunnerFailed(self._exit_message("exited before connecting") if exited in done
                                   else f"the runner did not connect within {HELLO_TIMEOUT_S:g}s")
            exited.cancel()
            reader, self._writer = connected.result()
            self._tasks.append(asyncio.create_task(self._read(reader)))
            await asyncio.wait_for(asyncio.shield(self._ready), SETUP_TIMEOUT_S)
        except BaseException as exc:
            self.gateway.forget(self.runner_id)
            await self.kill()
            if isinstance(exc, asyncio.TimeoutError):
                raise RunnerFailed(f"app '{self.app_id}' setup() did not finish within "
                                   f"{SETUP_TIMEOUT_S:g}s") from None
            raise
        self.start_seconds = time.monotonic() - started
        self.state = State.IDLE

    def _exit_message(self, what: str) -> str:
        code = self.proc.returncode if self.proc is not None else None
        return f"the runner of app '{self.app_id}' v{self.version} {what} (exit code {code})"

    async def _pipe(self, stream: asyncio.StreamReader, level: str) -> None:
        """Output that bypassed the runner's log frames (C extensions, crashes) as app logs."""
        with contextlib.suppress(Exception):
            while line := await stream.readline():
                self.on_log(self, line.decode(errors="replace").rstrip("\n"), level, None)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                frame = await wire.read_frame(reader)
                if frame is None:
                    break
                self._dispatch(frame)
        except (wire.ProtocolError, OSError) as exc:
            log.warning("runner protocol error", extra={"model_id": self.app_id, "runner_id": self.runner_id,
                                                        "error": repr(exc)})
        await self._died()

    def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame["t"]
        if kind == wire.READY:
            self.setup_seconds = float(frame.get("setup_s", 0.0))
            if not self._ready.done():
                self._ready.set_result(None)
        elif kind == wire.FAILED:
            if not self._ready.done():
                self._ready.set_exception(RunnerFailed(
                    f"app '{self.app_id}' v{self.version} failed to start: {frame.get('error', '')}"
                    f" (genmesh apps logs {self.app_id})"))
        elif kind == wire.LOG:
            self.on_log(self, str(frame.get("message", "")), str(frame.get("level", "info")), frame.get("id"))
            call = self.current
            if call is not None and frame.get("id") == call.id:
                call.frames.put_nowait(frame)
        else:
            call = self.current
            if call is None or frame.get("id") != call.id:
                return  # the tail of a call whose caller left; nothing waits for it
            call.frames.put_nowait(frame)
            if kind in wire.TERMINAL:
                call.done = True
                self.current = None
                self.last_used = time.monotonic()
                if self.state == State.BUSY:
                    self.state = State.IDLE
                self.on_state(self)

    async def _died(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 2.0)
            self.exit_code = self.proc.returncode
        was = self.state
        self.state = State.DEAD
        if not self._ready.done():
            self._ready.set_exception(RunnerFailed(self._exit_message("exited during setup()")))
        call = self.current
        if call is not None and not call.done:
            call.done = True
            call.frames.put_nowait(RunnerFailed(self._exit_message("crashed while serving this request")))
        self.current = None
        if was not in (State.STOPPING, State.DEAD):
            log.warning("runner died", extra={"model_id": self.app_id, "runner_id": self.runner_id,
                                              "exit_code": self.exit_code})
        self.on_state(self)

    async def stop(self) -> None:
        """Asks the runner to run teardown() and exit; kills it if it does not."""
        if self.state == State.DEAD:
            return
        self.state = State.STOPPING
        self.on_state(self)
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.write(wire.pack({"t": wire.STOP}))
                await self._writer.drain()
        if self.proc is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), STOP_GRACE_S)
        await self.kill()

    async def kill(self) -> None:
        if self.proc is not None:
            await process.stop(self.proc, timeout=STOP_GRACE_S)
        if self._writer is not None:
            self._writer.close()
        for task in self._tasks:
            if task is not asyncio.current_task():
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(task), 2.0)
        if self.state != State.DEAD:
            self.state = State.DEAD
            self.on_state(self)

    # --- calls ----------------------------------------------------------------------------------

    def request_of(self, call_id: int | None) -> str:
        """The request a call id belongs to (for tagging log lines)."""
        call = self.current
        return call.request_id if call is not None and call_id is not None and call.id == call_id else ""

    async def invoke(self, path: str, payload: dict[str, Any], *, request_id: str = ""
                     ) -> AsyncIterator[dict[str, Any]]:
        """The frames of one call (logs, partials, then one terminal frame). Leaving early sends
        a cancel; the runner becomes idle once it has stopped the call."""
        if self.state != State.BUSY or self._writer is None:
            raise RunnerFailed(f"runner {self.runner_id} is not reserved for a call")
        call = Call(next(_ids), request_id)
        self.current = call
        self.last_used = time.monotonic()
        try:
            self._writer.write(wire.pack({"t": wire.INVOKE, "id": call.id, "path": path, "input": payload}))
            await self._writer.drain()
        except (OSError, wire.ProtocolError) as exc:
            call.done = True
            self.current = None
            raise RunnerFailed(f"could not reach the runner of app '{self.app_id}': {exc}") from None
        deadline = time.monotonic() + self.call_timeout_s if self.call_timeout_s > 0 else None
        try:
            while True:
                if deadline is None:
                    frame = await call.frames.get()
                else:
                    try:
                        frame = await asyncio.wait_for(call.frames.get(), max(0.0, deadline - time.monotonic()))
                    except asyncio.TimeoutError:
                        # The runner may be stuck in user code that ignores cancellation: stop it.
                        call.done = True
                        self.current = None
                        await self.kill()
                        raise DeadlineExceeded(f"app '{self.app_id}' ran past its {self.call_timeout_s:g}s "
                                               "time limit for one call; its runner was stopped") from None
                if isinstance(frame, BaseException):
                    raise frame
                yield frame
                if frame["t"] in wire.TERMINAL:
                    return
        finally:
            if not call.done and self._writer is not None and self.state != State.DEAD:
                with contextlib.suppress(Exception):
                    self._writer.write(wire.pack({"t": wire.CANCEL, "id": call.id}))
