"""The runners of one app on this worker: on-demand starts up to `max_concurrency`, `min_concurrency`
kept warm, idle runners stopped after `keep_alive` (down to zero), and rollover to a new version
(new calls wait for new-version runners while calls in flight finish on the old ones, which then
stop)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable

from genmesh.errors import NotFound, ResourceExhausted
from genmesh.retry import Backoff
from genmesh.v1 import apps_pb2
from genmesh.services.apps.codecache import Code
from genmesh.services.apps.runners import RunnerFailed, RunnerProcess, State

log = logging.getLogger("genmesh.apps.pool")
ACQUIRE_TIMEOUT_S = 600.0
# A warm runner that fails setup is retried after this long, doubling up to the maximum.
WARM_RETRY_S, WARM_RETRY_MAX_S = 1.0, 60.0

LIVE = (State.STARTING, State.IDLE, State.BUSY)


@dataclass(frozen=True)
class Lease:
    runner: RunnerProcess
    cold_start_seconds: float | None  # set when this call had to start the runner


class RunnerPool:
    def __init__(self, app: apps_pb2.App, *, code: Callable[[apps_pb2.App], Awaitable[Code]],
                 make_runner: Callable[[apps_pb2.App, Code], RunnerProcess],
                 on_change: Callable[[], None]) -> None:
        self.app = app
        self.code = code
        self.make_runner = make_runner
        self.on_change = on_change
        self.runners: set[RunnerProcess] = set()
        self.deleted = False
        self.last_cold_start_s = 0.0
        self.changed = asyncio.Condition()
        self._stopping: set[asyncio.Task[None]] = set()
        self._warm_backoff = Backoff(WARM_RETRY_S, maximum=WARM_RETRY_MAX_S)
        self._warm_after = 0.0
        self.waiting = 0  # calls waiting for a runner

    # --- what the heartbeat reports -------------------------------------------------------------

    @property
    def live(self) -> list[RunnerProcess]:
        return [r for r in self.runners if r.state in LIVE]

    @property
    def busy(self) -> int:
        return sum(1 for r in self.runners if r.state == State.BUSY)

    def current(self) -> list[RunnerProcess]:
        return [r for r in self.live if r.version == self.app.version]

    # --- changes --------------------------------------------------------------------------------

    def update(self, app: apps_pb2.App) -> None:
        """A new version or new scaling; old-version runners retire as they become idle."""
        if app.version < self.app.version:
            return
        self.app = app
        self.deleted = False
        self.maintain()
        self._notify()  # waiting calls now want runners of the new version

    def delete(self) -> None:
        self.deleted = True
        self.maintain()
        self._notify()

    def runner_changed(self, _runner: RunnerProcess) -> None:
        """A runner finished a call, started, stopped or died."""
        self.runners = {r for r in self.runners if r.state != State.DEAD}
        self.maintain()
        self._notify()

    def _notify(self) -> None:
        async def notify() -> None:
            async with self.changed:
                self.changed.notify_all()
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(notify())
        self.on_change()

    # --- calls ----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[Lease]:
        """A runner of the current version reserved for one call; released when the call ends
        (a call left early is cancelled on the runner, which frees itself once it stops)."""
        lease = await self._acquire()
        try:
            yield lease
        finally:
            runner = lease.runner
            if runner.current is None and runner.state == State.BUSY:
                runner.state = State.IDLE
                runner.last_used = time.monotonic()
                self.runner_changed(runner)

    async def _acquire(self) -> Lease:
        async with self.changed:
            self.waiting += 1
            try:
                got = await self._idle_or_slot(time.monotonic() + ACQUIRE_TIMEOUT_S)
            finally:
                self.waiting -= 1
        if isinstance(got, Lease):
            return got
        # The slot is ours (counted toward max_concurrency); start its runner outside the lock.
        started = time.monotonic()
        runner = await self._start(got.app, got, reserved=True)
        runner.state = State.BUSY
        self.last_cold_start_s = time.monotonic() - started
        self.on_change()
        return Lease(runner, self.last_cold_start_s)

    async def _idle_or_slot(self, deadline: float) -> "Lease | _Placeholder":
        """Under `self.changed`: an idle runner of the current version, or a reserved slot to
        start one in, waiting while all `max_concurrency` runners are busy."""
        while True:
            if self.deleted:
                raise NotFound(f"app '{self.app.id}' was deleted")
            version = self.app.version
            idle = [r for r in self.runners if r.version == version and r.state == State.IDLE]
            if idle:
                runner = max(idle, key=lambda r: r.last_used)  # the others may go cold
                runner.state = State.BUSY
                self.on_change()
                return Lease(runner, None)
            if len(self.current()) < self.app.max_concurrency:
                placeholder = _Placeholder(self.app)
                self.runners.add(placeholder)  # type: ignore[arg-type]
                return placeholder
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ResourceExhausted(f"all {self.app.max_concurrency} runners of app "
                                        f"'{self.app.id}' stayed busy for {ACQUIRE_TIMEOUT_S:g}s")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 1.0))

    async def _start(self, app: apps_pb2.App, placeholder: "_Placeholder", *, reserved: bool) -> RunnerProcess:
        try:
            code = await self.code(app)
            runner = self.make_runner(app, code)
        except BaseException:
            self.runners.discard(placeholder)  # type: ignore[arg-type]
            self._notify()
            raise
        runner.reserved = reserved
        self.runners.discard(placeholder)  # type: ignore[arg-type]
        self.runners.add(runner)
        self.on_change()
        try:
            await runner.start()
        except BaseException:
            self.runners.discard(runner)
            self._notify()
            raise
        return runner

    # --- scaling --------------------------------------------------------------------------------

    def maintain(self) -> None:
        """Stops what should not run any more and keeps `min_concurrency` warm; cheap, called on
        every change and periodically."""
        now = time.monotonic()
        app = self.app
        idle_current = sorted((r for r in self.runners if r.version == app.version and r.state == State.IDLE),
                              key=lambda r: r.last_used)
        for r in list(self.runners):
            if r.state != State.IDLE:
                continue
            if self.deleted or r.version != app.version:
                self._stop(r)  # retired: deleted app or an old version
        live = len(self.current())
        for r in idle_current:
            too_many = live > app.max_concurrency
            # A call waiting for a runner takes an idle one rather than see it expire.
            expired = (now - r.last_used >= app.keep_alive_seconds and live > app.min_concurrency
                       and not self.waiting)
            if too_many or expired:
                self._stop(r)
                live -= 1
        if not self.deleted and live < app.min_concurrency and now >= self._warm_after:
            for _ in range(app.min_concurrency - live):
                self._warm(app)

    def _stop(self, runner: RunnerProcess) -> None:
        if runner.state in (State.STOPPING, State.DEAD):
            return
        runner.state = State.STOPPING
        task = asyncio.get_running_loop().create_task(self._stop_runner(runner))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop_runner(self, runner: RunnerProcess) -> None:
        try:
            await runner.stop()
        finally:
            self.runners.discard(runner)
            self._notify()

    def _warm(self, app: apps_pb2.App) -> None:
        placeholder = _Placeholder(app)
        self.runners.add(placeholder)  # type: ignore[arg-type]

        async def warm() -> None:
            try:
                runner = await self._start(app, placeholder, reserved=False)
                self._warm_backoff.reset()
                runner.last_used = time.monotonic()
            except (RunnerFailed, Exception) as exc:  # noqa: BLE001 - logged, retried with backoff
                delay = self._warm_backoff.next_delay()  # the pool's tick waits it out
                self._warm_after = time.monotonic() + delay
                log.warning("warm runner failed to start", extra={"model_id": app.id, "error": str(exc),
                                                                   "retry_in_s": delay})
            self._notify()

        task = asyncio.get_running_loop().create_task(warm())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        """Stops every runner (busy ones are stopped too: the worker is shutting down)."""
        self.deleted = True
        for task in list(self._stopping):
            task.cancel()
        await asyncio.gather(*(r.stop() for r in list(self.runners) if isinstance(r, RunnerProcess)),
                             return_exceptions=True)
        self.runners.clear()


class _Placeholder:
    """A runner slot being started: counts toward `max_concurrency` before the process exists."""

    def __init__(self, app: apps_pb2.App) -> None:
        self.app = app
        self.version = app.version
        self.state = State.STARTING
        self.last_used = time.monotonic()
        self.current = None
