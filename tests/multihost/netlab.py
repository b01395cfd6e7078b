"""Hosts on one machine: Linux network namespaces joined by veth links to a bridge.

The bridge lives in a namespace of its own, so the root namespace (the machine's real network)
is never touched: every address of the test subnet exists only inside namespaces made here, and
deleting them removes every veth and the bridge with them. Cutting a host detaches its port from
the bridge: its link stays up and carrier stays on, packets simply vanish, as when a switch
port or a network path dies (no RST, no ICMP, nothing a process could see as a clean close).
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
# Namespaces are named <prefix><pid of the test process>-<role>, so a later run can tell the
# leftovers of a test process that died (SIGKILL, power loss) from those of a live one.
PREFIX = "gmt"
_NAME = re.compile(rf"^{PREFIX}(\d+)-")
BRIDGE = "br0"


class NetlabUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no iproute2, or a restricted kernel)."""


def ip(*args: str) -> str:
    """Runs `ip args...`; raises with its stderr on failure."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def check_available() -> None:
    """Raises NetlabUnavailable saying why namespaces cannot be used on this machine."""
    if os.geteuid() != 0:
        raise NetlabUnavailable("network namespaces need root (CI runs the suite as root)")
    if shutil.which("ip") is None:
        raise NetlabUnavailable("iproute2 `ip` is not installed")
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)
    except RuntimeError as exc:
        raise NetlabUnavailable(f"`ip netns add` fails here: {exc}") from None
    ip("netns", "del", probe)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Deletes namespaces left by test processes that no longer exist; returns their names."""
    removed = []
    for name in sorted(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else []:
        match = _NAME.match(name)
        if match and not pid_alive(int(match.group(1))):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)
            removed.append(name)
    return removed


_libc = ctypes.CDLL(None, use_errno=True)


def _enter(ns: str) -> None:
    """Moves the calling thread (only it) into namespace `ns`."""
    fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({ns}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def run_in(ns: str, fn: Callable[[], Awaitable[T]], timeout: float = 120.0) -> T:
    """Runs coroutine function `fn` on a fresh event loop in a thread inside namespace `ns`.

    Sockets belong to the namespace of the thread that creates them, so pure-asyncio clients
    (asyncpg, nats-py, httpx) made inside `fn` talk from `ns`. Not gRPC: its sockets are made by
    its own threads, which stay in the namespace they started in.
    """
    box: dict[str, object] = {}

    def body() -> None:
        try:
            _enter(ns)
            box["value"] = asyncio.run(asyncio.wait_for(fn(), timeout))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if thread.is_alive():
        raise TimeoutError(f"work in namespace {ns} did not finish in {timeout:.0f}s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


@dataclass
class Host:
    """One namespace with one interface, `eth0`, on the lab's bridge."""

    role: str
    ns: str
    addr: str
    port: str  # the bridge-side end of its veth, in the switch namespace
    cut_off: bool = False

    def argv(self, *argv: str) -> list[str]:
        """`argv` run inside this host (`ip netns exec` setns()es, then execs: same pid)."""
        return ["ip", "netns", "exec", self.ns, *argv]


@dataclass
class Lab:
    """A bridge in its own namespace and hosts on `subnet`.0/24 attached to it."""

    subnet: str = "10.213.0"
    prefix: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}")
    hosts: dict[str, Host] = field(default_factory=dict)
    switch: str = ""
    _namespaces: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.switch = f"{self.prefix}-switch"

    def _add_namespace(self, ns: str) -> None:
        ip("netns", "add", ns)
        self._namespaces.append(ns)
        ip("-n", ns, "link", "set", "lo", "up")

    def create(self) -> None:
        self._add_namespace(self.switch)
        ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", self.switch, "link", "set", BRIDGE, "up")

    def add_host(self, role: str, octet: int) -> Host:
        ns = f"{self.prefix}-{role}"
        host = Host(role, ns, f"{self.subnet}.{octet}", f"p-{role}"[:15])
        self._add_namespace(ns)
        # Both ends are made where they live: nothing ever appears in the root namespace.
        ip("-n", self.switch, "link", "add", host.port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("-n", self.switch, "link", "set", host.port, "master", BRIDGE, "up")
        ip("-n", ns, "addr", "add", f"{host.addr}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        self.hosts[role] = host
        return host

    def cut(self, host: Host) -> None:
        """Partitions `host` from every other host, silently."""
        ip("-n", self.switch, "link", "set", host.port, "nomaster")
        host.cut_off = True

    def heal(self, host: Host) -> None:
        ip("-n", self.switch, "link", "set", host.port, "master", BRIDGE)
        host.cut_off = False

    def destroy(self) -> list[str]:
        """Deletes every namespace made (their veths and the bridge go with them); returns errors."""
        errors = []
        for ns in reversed(self._namespaces):
            try:
                ip("netns", "del", ns)
            except RuntimeError as exc:
                errors.append(str(exc))
        self._namespaces.clear()
        self.hosts.clear()
        return errors

    def leftovers(self) -> list[str]:
        """Namespaces of this lab still present (empty after destroy)."""
        if not os.path.isdir(NETNS_DIR):
            return []
        return [n for n in os.listdir(NETNS_DIR) if n.startswith(self.prefix + "-")]
