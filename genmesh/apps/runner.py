"""One runner process (`python -m genmesh.apps.runner`): imports the app class from an unpacked
bundle, runs `setup()` once, then serves calls from its app worker one at a time over the runner
protocol (genmesh.apps.wire), and runs `teardown()` when told to stop, on SIGTERM, or when the
worker goes away. What the app prints or logs becomes log frames, tagged with the current call.
"""
from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from genmesh.apps import wire
from genmesh.apps.app import App, describe_endpoints
from genmesh.apps.invoke import AppFailure, Cancelled, InvalidInput, call
from genmesh.apps.loader import check_entrypoint, load_class

MAX_LOG_LINE = 16 * 1024


class Connection:
    """The socket to the worker; frames are sent whole under a lock (prints come from threads)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self.current_id: int | None = None

    def send(self, frame: dict[str, Any]) -> None:
        data = wire.pack(frame)
        with self._lock:
            self.sock.sendall(data)

    def log(self, message: str, level: str = "info") -> None:
        frame: dict[str, Any] = {"t": wire.LOG, "message": message[:MAX_LOG_LINE], "level": level}
        if self.current_id is not None:
            frame["id"] = self.current_id
        try:
            self.send(frame)
        except OSError:
            pass  # the worker is gone; nobody is listening


class LogStream:
    """sys.stdout / sys.stderr replacement: each complete line becomes one log frame."""

    def __init__(self, conn: Connection, level: str) -> None:
        self.conn = conn
        self.level = level
        self._buf = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._buf += text
            *lines, self._buf = self._buf.split("\n")
        for line in lines:
            self.conn.log(line, self.level)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            line, self._buf = self._buf, ""
        if line:
            self.conn.log(line, self.level)

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"


class LogHandler(logging.Handler):
    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        level = {"WARNING": "warning", "ERROR": "error", "CRITICAL": "error",
                 "DEBUG": "debug"}.get(record.levelname, "info")
        self.conn.log(self.format(record), level)


def _error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


class Runner:
    def __init__(self, conn: Connection, app: App, loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self.app = app
        self.loop = loop
        self.endpoints = describe_endpoints(type(app))
        self.inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.cancel = threading.Event()

    def read_loop(self) -> None:
        """Reader thread: queues calls; a cancel for the running call takes effect at once."""
        try:
            while True:
                frame = wire.recv_frame(self.conn.sock)
                if frame is None:
                    break
                if frame["t"] == wire.CANCEL:
                    if frame.get("id") == self.conn.current_id:
                        self.cancel.set()
                    continue
                self.inbox.put(frame)
        except (OSError, wire.ProtocolError):
            pass
        self.inbox.put(None)  # the worker is gone: stop

    def serve(self) -> None:
        while True:
            frame = self.inbox.get()
            if frame is None or frame["t"] == wire.STOP:
                return
            if frame["t"] == wire.INVOKE:
                self.handle(frame)

    def handle(self, frame: dict[str, Any]) -> None:
        call_id = frame["id"]
        self.cancel.clear()
        self.conn.current_id = call_id
        started = time.perf_counter()
        terminal: dict[str, Any]
        try:
            ep = self.endpoints.get(frame.get("path") or "/")
            if ep is None:
                raise InvalidInput(f"no endpoint {frame.get('path')!r}; the app has "
                                   f"{', '.join(sorted(self.endpoints))}", "path")
            for kind, data in call(self.app, ep, frame.get("input"), cancel=self.cancel, loop=self.loop):
                if kind == "result":
                    terminal = {"t": wire.RESULT, "id": call_id, "output": data}
                else:
                    self.conn.send({"t": wire.PARTIAL, "id": call_id, "data": data})
        except InvalidInput as exc:
            terminal = {"t": wire.ERROR, "id": call_id, "kind": wire.INVALID_INPUT,
                        "message": exc.message, "field": exc.field}
        except Cancelled:
            terminal = {"t": wire.CANCELLED, "id": call_id}
        except AppFailure as exc:
            cause = exc.__cause__
            if cause is not None:
                logging.getLogger("app").error("request failed\n%s", "".join(
                    traceback.format_exception(type(cause), cause, cause.__traceback__)).rstrip())
            terminal = {"t": wire.ERROR, "id": call_id, "kind": wire.APP_ERROR, "message": str(exc)}
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            self.conn.current_id = None
        terminal["seconds"] = time.perf_counter() - started
        self.conn.send(terminal)


def _run_maybe_async(loop: asyncio.AbstractEventLoop, fn: Any) -> None:
    value = fn()
    if inspect.isawaitable(value):
        loop.run_until_complete(value)


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise SystemExit(0)  # unwinds through serve() so teardown still runs


def _die_with_parent(parent_pid: int) -> None:
    """SIGTERM when the worker dies, even by SIGKILL (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if parent_pid and os.getppid() != parent_pid:
        raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="genmesh.apps.runner")
    p.add_argument("--socket", required=True)
    p.add_argument("--runner-id", required=True)
    p.add_argument("--root", required=True, help="the unpacked code bundle")
    p.add_argument("--entrypoint", required=True, help="file.py::ClassName inside the bundle")
    p.add_argument("--parent-pid", type=int, default=0, help="the worker; the runner dies with it")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    _die_with_parent(args.parent_pid)

    # The worker hands each runner a one-time token on stdin; the hello must carry it.
    token = sys.stdin.readline().strip() if sys.stdin is not None else ""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(args.socket)
    conn = Connection(sock)
    conn.send({"t": wire.HELLO, "runner": args.runner_id, "token": token, "pid": os.getpid()})
    sys.stdout = LogStream(conn, "info")  # type: ignore[assignment]
    sys.stderr = LogStream(conn, "error")  # type: ignore[assignment]
    logging.basicConfig(level=logging.INFO, handlers=[LogHandler(conn)], force=True)

    loop = asyncio.new_event_loop()
    root = Path(args.root)
    started = time.perf_counter()
    try:
        os.chdir(root)
        cls = load_class(check_entrypoint(args.entrypoint), root)
        app = cls()
        _run_maybe_async(loop, app.setup)
    except BaseException as exc:  # noqa: BLE001 - any failure of user code at start is reported
        logging.getLogger("app").error("setup failed\n%s", traceback.format_exc().rstrip())
        conn.send({"t": wire.FAILED, "error": _error_text(exc)})
        return 1
    conn.send({"t": wire.READY, "setup_s": time.perf_counter() - started})

    runner = Runner(conn, app, loop)
    threading.Thread(target=runner.read_loop, name="runner-reader", daemon=True).start()
    try:
        runner.serve()
    finally:
        try:
            _run_maybe_async(loop, app.teardown)
        except BaseException:  # noqa: BLE001
            logging.getLogger("app").error("teardown failed\n%s", traceback.format_exc().rstrip())
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            sock.close()
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
