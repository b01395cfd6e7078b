"""The apps this worker runs: followed from the NATS KV bucket (only those its hardware fits), made
servable through the worker runtime, each with its runner pool; and the worker's heartbeat state
extended with runner counts. App logs go out on NATS for `genmesh apps logs`."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from genmesh.apps import bus as apps_bus
from genmesh.apps.machines import can_run, worker_machine_type
from genmesh.apps.spec import spec_of
from genmesh.errors import FailedPrecondition
from genmesh.v1 import apps_pb2, common_pb2, worker_pb2
from genmesh.worker import WorkerRuntime
from genmesh.services.apps.codecache import CodeCache
from genmesh.services.apps.pool import RunnerPool
from genmesh.services.apps.runners import Gateway, RunnerProcess
from genmesh.services.apps.sandbox import Sandbox

log = logging.getLogger("genmesh.apps.deployments")
LEVELS = {"debug": common_pb2.LOG_LEVEL_DEBUG, "info": common_pb2.LOG_LEVEL_INFO,
          "warning": common_pb2.LOG_LEVEL_WARNING, "error": common_pb2.LOG_LEVEL_ERROR}


def log_entry(message: str, level: str, source: str) -> common_pb2.LogEntry:
    entry = common_pb2.LogEntry(message=message, level=LEVELS.get(level, common_pb2.LOG_LEVEL_INFO),
                                source=source)
    entry.timestamp.GetCurrentTime()
    return entry


class AppsRuntime(WorkerRuntime):
    """The worker runtime, reporting each app's runners in the heartbeat: a resident model per
    app with live runners (so placement prefers warm workers) and runner counts as labels."""

    deployments: "Deployments"

    def state(self) -> worker_pb2.WorkerState:
        state = super().state()
        gpus = [d for d in self.devices if d.kind == worker_pb2.DEVICE_KIND_CUDA]
        state.labels["machine_type"] = worker_machine_type(gpus[0].gpu_class if gpus else "")
        deployments = self.deployments
        state.labels[apps_bus.SANDBOX_LABEL] = "bwrap" if deployments.sandbox is not None else "none"
        if deployments.sandbox is None:
            state.labels[apps_bus.SANDBOX_REASON_LABEL] = deployments.sandbox_reason
        for app_id, pool in self.deployments.pools.items():
            live = len(pool.live)
            if not live:
                continue
            state.labels[apps_bus.runners_label(app_id)] = str(live)
            state.labels[apps_bus.busy_label(app_id)] = str(pool.busy)
            last_used = Timestamp()
            last_used.FromNanoseconds(int(time.time() * 1e9))
            state.resident_models.append(worker_pb2.ResidentModel(
                model_id=app_id, device=self.device, memory_bytes=0, last_used=last_used,
                in_flight=pool.busy, load_seconds=pool.last_cold_start_s))
        return state


class Deployments:
    def __init__(self, runtime: AppsRuntime, *, nc: Any, code: CodeCache, gateway: Gateway,
                 sandbox: Sandbox | None = None, sandbox_reason: str = "",
                 call_timeout_s: float = 0.0) -> None:
        self.runtime = runtime
        self.sandbox = sandbox
        self.sandbox_reason = sandbox_reason
        self.call_timeout_s = call_timeout_s
        self.nc = nc
        self.code = code
        self.gateway = gateway
        self.apps: dict[str, apps_pb2.App] = {}
        self.pools: dict[str, RunnerPool] = {}
        self.versions = asyncio.Condition()
        self.watcher = apps_bus.AppWatcher(nc.jetstream(), self.on_app, self.on_delete)
        self._publish_task: asyncio.Task[None] | None = None
        self._maintainer: asyncio.Task[None] | None = None
        gpus = [d for d in runtime.devices if d.kind == worker_pb2.DEVICE_KIND_CUDA]
        self.gpu_class = gpus[0].gpu_class if gpus else ""
        self.num_gpus = len(gpus)

    async def start(self) -> None:
        await apps_bus.ensure_log_stream(self.nc.jetstream())
        await self.watcher.start()
        self._maintainer = asyncio.create_task(self._maintain_loop())

    async def stop(self) -> None:
        if self._maintainer is not None:
            self._maintainer.cancel()
        await self.watcher.stop()
        await asyncio.gather(*(pool.close() for pool in self.pools.values()), return_exceptions=True)

    # --- the bucket -----------------------------------------------------------------------------

    async def on_app(self, app: apps_pb2.App) -> None:
        if not can_run(app.machine_type, app.num_gpus, self.gpu_class, self.num_gpus):
            await self.on_delete(app.id)
            return
        known = self.apps.get(app.id)
        if known is not None and known.version > app.version:
            return
        self.apps[app.id] = app
        self.runtime.models[app.id] = spec_of(app)
        pool = self.pools.get(app.id)
        if pool is not None:
            if known is not None and known.version != app.version:
                self.publish_log(app.id, f"rolling over to version {app.version}", "info", version=app.version)
            pool.update(app)
        elif app.min_concurrency:
            self.pool(app.id)  # creating it starts the warm runners
        async with self.versions:
            self.versions.notify_all()
        self.changed()

    async def on_delete(self, app_id: str) -> None:
        self.apps.pop(app_id, None)
        self.runtime.models.pop(app_id, None)
        pool = self.pools.get(app_id)
        if pool is not None:
            pool.delete()
        self.changed()

    async def wait_version(self, app_id: str, version: int, timeout: float) -> None:
        """Until this worker knows `version` of the app (the router may have heard first)."""
        deadline = time.monotonic() + timeout
        async with self.versions:
            while (app := self.apps.get(app_id)) is None or app.version < version:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.versions.wait(), remaining)

    # --- pools ----------------------------------------------------------------------------------

    def pool(self, app_id: str) -> RunnerPool:
        pool = self.pools.get(app_id)
        if pool is None:
            pool = self.pools[app_id] = RunnerPool(
                self.apps[app_id], code=self.code.get, make_runner=self._make_runner,
                on_change=self.changed)
            pool.maintain()
        return pool

    def _make_runner(self, app: apps_pb2.App, code: Any) -> RunnerProcess:
        if self.sandbox is None:
            if not app.trusted:
                raise FailedPrecondition(
                    f"app '{app.id}' was deployed by a non-admin key and runs only sandboxed; this "
                    f"worker has no sandbox ({self.sandbox_reason})")
            log.warning("running an admin's app unsandboxed", extra={"model_id": app.id,
                                                                      "reason": self.sandbox_reason})
        pool = self.pools[app.id]
        return RunnerProcess(app, code, self.gateway, worker_id=self.runtime.worker_id,
                             on_log=self._runner_log, on_state=pool.runner_changed,
                             sandbox=self.sandbox, call_timeout_s=self.call_timeout_s)

    async def _maintain_loop(self) -> None:
        while True:
            # Changes maintain their pool at once; this loop times keep-alive expiry, so with no
            # app deployed it need not wake an idle worker ten times a second.
            await asyncio.sleep(0.1 if self.pools else 1.0)
            for app_id, pool in list(self.pools.items()):
                try:
                    pool.maintain()
                except Exception:  # noqa: BLE001 - one app's trouble must not stop the others
                    log.exception("pool maintenance failed", extra={"model_id": app_id})
                if pool.deleted and not pool.runners:
                    del self.pools[app_id]
                    if app_id not in self.apps:
                        self.code.forget(app_id)
                    self.changed()

    def changed(self) -> None:
        """Runner counts changed: tell the routers now rather than at the next heartbeat."""
        if self._publish_task is not None and not self._publish_task.done():
            return

        async def publish() -> None:
            await asyncio.sleep(0.02)  # coalesce a burst of changes into one message
            with contextlib.suppress(Exception):
                await self.runtime.publish_state()

        with contextlib.suppress(RuntimeError):
            self._publish_task = asyncio.get_running_loop().create_task(publish())

    # --- logs -----------------------------------------------------------------------------------

    def _runner_log(self, runner: RunnerProcess, message: str, level: str, call_id: int | None) -> None:
        self.publish_log(runner.app_id, message, level, source="app", runner_id=runner.runner_id,
                         request_id=runner.request_of(call_id), version=runner.version)

    def publish_log(self, app_id: str, message: str, level: str, *, source: str = "worker",
                    runner_id: str = "", request_id: str = "", version: int = 0) -> None:
        line = apps_pb2.StreamAppLogsResponse(
            entry=log_entry(message, level, source), runner_id=runner_id, request_id=request_id,
            version=version, worker_id=self.runtime.worker_id)
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().create_task(
                self.nc.publish(apps_bus.log_subject(app_id), line.SerializeToString()))


def cache_dir(data_dir: Path) -> Path:
    return data_dir / "apps" / "code"
