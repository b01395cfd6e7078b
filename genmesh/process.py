"""Child processes that never outlive their parent: spawn, stop, and watch a set of them.

Every child runs in its own session, so a terminal's Ctrl-C or hang-up reaches only us and we
decide how and in which order children stop. Each child also gets a Linux parent-death signal,
so a parent killed with SIGKILL still takes its children down with it.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pwd
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("genmesh.process")

Process = asyncio.subprocess.Process
# What asyncio accepts for stdout/stderr: None (inherit), a file object, an fd, or PIPE/DEVNULL.
Stream = IO[Any] | int | None

_PR_SET_PDEATHSIG = 1
# Exit status of a child whose parent was already gone before it could arm its death signal.
ORPHANED_EXIT_CODE = 125


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


# Resolved once here: the child between fork and exec must only make plain system calls.
_prctl = _load_prctl()


@dataclass(frozen=True)
class RunAs:
    """The credentials a child drops to, resolved in the parent (no NSS lookups after fork)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    @classmethod
    def lookup(cls, name: str) -> RunAs:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise LookupError(f"user {name!r} does not exist") from None
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)

    def is_current(self) -> bool:
        return self.uid == os.geteuid() and self.gid == os.getegid()


def _child_setup(parent_pid: int, run_as: RunAs | None, death_signal: int) -> Callable[[], None]:
    """The function run in the child between fork and exec."""

    def setup() -> None:
        if run_as is not None:
            # Groups first, then gid, then uid: after setuid we may no longer change the others.
            os.setgroups(list(run_as.groups))
            os.setgid(run_as.gid)
            os.setuid(run_as.uid)
        # Armed only now: any change of credentials clears the parent-death signal.
        if _prctl is not None and _prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
        # The parent may have died before prctl ran; then nobody would ever signal us.
        if os.getppid() != parent_pid:
            os._exit(ORPHANED_EXIT_CODE)

    return setup


async def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | RunAs | None = None,
    stdout: Stream = None,
    stderr: Stream = None,
    death_signal: int = signal.SIGTERM,
) -> Process:
    """Start `argv` as a child that receives `death_signal` when this process dies.

    The child runs in a new session (no controlling terminal, its own process group whose id is
    its pid), with stdin from /dev/null. With `user`, the child drops to that user's groups, gid
    and uid before exec (needs root unless it is the current user).

    Linux sends the parent-death signal when the *thread* that spawned the child exits, so call
    this from a thread that lives as long as the child should: the event loop's thread.
    """
    run_as = RunAs.lookup(user) if isinstance(user, str) else user
    if run_as is not None and run_as.is_current():
        run_as = None
    if run_as is not None and os.geteuid() != 0:
        raise PermissionError(f"running a child as {run_as.name!r} needs root")
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_child_setup(os.getpid(), run_as, death_signal),
    )
    log.debug("spawned %s pid=%d", argv[0], proc.pid,
              extra={"event": "child_spawned", "argv0": argv[0], "pid": proc.pid,
                     "user": run_as.name if run_as else None})
    return proc


def _signal_group(pgid: int, sig: int) -> None:
    # Our children lead their own process group; anything still in it after the leader exited
    # would otherwise be an orphan. A pgid is not reused while its group has members.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def stop(proc: Process, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    """Send `sig`, wait up to `timeout` seconds, then SIGKILL; return the exit code.

    Safe on a child that already exited. Stragglers left in the child's process group are killed.
    A negative code means the child died of that signal.
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            if proc.returncode is None:
                log.warning("pid %d ignored signal %d for %.1fs; killing", proc.pid, sig,
                            timeout, extra={"event": "child_kill", "pid": proc.pid, "signal": sig})
            # The whole group: on Python 3.11 wait() also waits for the child's pipes to close,
            # which a straggler holding them would delay forever.
            _signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
    _signal_group(proc.pid, signal.SIGKILL)
    code = proc.returncode
    assert code is not None
    return code


async def stop_all(procs: Sequence[Process], *, sig: int = signal.SIGTERM,
                   timeout: float = 10.0) -> list[int]:
    """Stop several children at once; their exit codes in the same order."""
    return list(await asyncio.gather(*(stop(p, sig=sig, timeout=timeout) for p in procs)))


async def wait_first_exit(procs: Mapping[str, Process]) -> tuple[str, int]:
    """Wait until any of the named children exits; return its name and exit code.

    A supervisor awaits this alongside its shutdown signal to notice a child that crashed.
    On Python 3.11 a child given stdout/stderr pipes counts as exited once those close too.
    """
    if not procs:
        raise ValueError("no children to wait for")
    waiters = {asyncio.ensure_future(p.wait()): name for name, p in procs.items()}
    try:
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    first = next(iter(done))
    return waiters[first], first.result()
