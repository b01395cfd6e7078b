"""The apps' NATS names: the KV bucket holding every deployed app's current spec (written by the
router, watched by router replicas and app workers), the stream of app logs, and the heartbeat
labels in which app workers report their runners.

  KV genmesh_apps, key owner/alias          an App message; a delete when the app is deleted
  genmesh.apps.logs.<owner>.<alias>         StreamAppLogsResponse lines (stream APP_LOGS)
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from genmesh.v1 import apps_pb2

log = logging.getLogger("genmesh.apps.bus")

BUCKET = "genmesh_apps"
LOGS_STREAM = "APP_LOGS"
LOGS_PREFIX = "genmesh.apps.logs"
LOG_LINES_KEPT = 2000
LOG_MAX_AGE_S = 7 * 86400.0


def log_subject(app_id: str) -> str:
    return f"{LOGS_PREFIX}.{app_id.replace('/', '.')}"


# App workers report their runners in their heartbeat labels: runners/<app_id> = live runner
# processes of the app, busy/<app_id> = those serving a request.
def runners_label(app_id: str) -> str:
    return f"runners/{app_id}"


def busy_label(app_id: str) -> str:
    return f"busy/{app_id}"


# How a worker runs app code: "bwrap" (sandboxed), or "none" with the reason in SANDBOX_REASON.
SANDBOX_LABEL = "sandbox"
SANDBOX_REASON_LABEL = "sandbox_reason"


async def bucket(js: JetStreamContext) -> KeyValue:
    """The apps bucket, created on first use by whichever service gets there first."""
    try:
        return await js.key_value(BUCKET)
    except Exception:  # noqa: BLE001 - not found (the error type varies across nats-py versions)
        return await js.create_key_value(KeyValueConfig(bucket=BUCKET, history=1,
                                                        storage=StorageType.FILE))


async def ensure_log_stream(js: JetStreamContext) -> None:
    config = StreamConfig(name=LOGS_STREAM, subjects=[f"{LOGS_PREFIX}.>"],
                          retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
                          max_msgs_per_subject=LOG_LINES_KEPT, max_age=LOG_MAX_AGE_S)
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)


OnApp = Callable[[apps_pb2.App], Awaitable[None]]
OnDelete = Callable[[str], Awaitable[None]]


class AppWatcher:
    """Follows the bucket: calls `on_app` for every current app, then for each change, and
    `on_delete` when one goes away. `ready` is set once the current state has been delivered."""

    def __init__(self, js: JetStreamContext, on_app: OnApp, on_delete: OnDelete) -> None:
        self.js = js
        self.on_app = on_app
        self.on_delete = on_delete
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watcher: Any = None

    async def start(self, timeout: float = 10.0) -> None:
        kv = await bucket(self.js)
        self._watcher = await kv.watchall()
        self._task = asyncio.create_task(self._run())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.ready.wait(), timeout)

    async def _run(self) -> None:
        while True:
            try:
                entry = await self._watcher.updates(timeout=3600)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the watch's idle timeout: keep waiting
                continue
            if entry is None:
                self.ready.set()
                continue
            try:
                if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    await self.on_delete(entry.key)
                else:
                    await self.on_app(apps_pb2.App.FromString(entry.value))
            except Exception:  # noqa: BLE001 - one bad entry must not stop the watch
                log.exception("app update failed", extra={"app_id": entry.key})

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
