"""The sandbox app runners run in: bubblewrap (bwrap) started by the worker, giving each runner
its own mount, pid, network, IPC and UTS namespaces, a root file system that holds only the
system directories, the Python installation and genmesh (read-only), the app's code read-only at
/app, a private tmpfs at /tmp, and the runner socket; then resource limits (prlimit) and a drop
to an unprivileged uid with no capabilities (setpriv) before Python starts.

Why bwrap without a user namespace: as root, `bwrap --unshare-user --uid N` maps the sandbox's uid
N to the caller's uid 0 outside, so files owned by root (the data directory, a mode-700 home)
stay readable. Here bwrap sets up the namespaces as root and setpriv switches to a real
unprivileged uid, which the kernel checks against the files' real owners.

A worker that is not root (a pod with runAsNonRoot, a developer's account) runs bwrap
unprivileged in a user namespace instead (`rootless`): the runner is uid 65534 inside, the worker's
own uid outside, so only what is not mounted (the data directory) and the namespaces keep it in.
That needs unprivileged user namespaces; the start-up probe finds out.

Why no network at all: the runner talks to its worker over one unix socket bound into the
sandbox; its own network namespace has only a loopback of its own, so NATS, Postgres, the router
and the workers on the host's 127.0.0.1 are unreachable.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import site
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import genmesh
from genmesh.settings import Settings

log = logging.getLogger("genmesh.apps.sandbox")

CODE_DIR = "/app"
SITE_DIR = "/app-site"
SOCKET_PATH = "/run/genmesh/runner.sock"
# System directories the interpreter and common libraries need (read-only). /etc holds the
# dynamic linker's cache, CA certificates and passwd; what in it is secret is root-only already.
SYSTEM_DIRS = ("/usr", "/etc")
MERGED_USR = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
PROBE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None   # RLIMIT_AS; None where it cannot apply (CUDA maps terabytes)
    cpu_seconds: int           # RLIMIT_CPU over the runner's life; SIGXCPU, then SIGKILL
    # RLIMIT_NPROC counts every process and thread of the sandbox uid on the host (all runners
    # share it), so it is a fork-bomb stop, not a per-app quota.
    processes: int = 4096
    open_files: int = 4096
    tmp_bytes: int = 2 << 30   # the private /tmp (tmpfs: host memory, so it has a size)
    file_bytes: int = 2 << 30  # RLIMIT_FSIZE: the largest file it may write


def python_paths() -> list[Path]:
    """What the runner's interpreter reads: the installation, the virtualenv, site-packages,
    and the genmesh package (an editable install lives outside site-packages)."""
    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(sys.base_exec_prefix),
             Path(sys.executable).resolve().parent.parent, Path(genmesh.__file__).resolve().parent}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        with_path = sysconfig.get_paths().get(name)
        if with_path:
            paths.add(Path(with_path))
    paths.update(Path(p) for p in site.getsitepackages())
    resolved = sorted({p.resolve() for p in paths if p.exists()} | {p for p in paths if p.exists()})
    # Keep the outermost of nested paths; system directories are bound whole anyway.
    out: list[Path] = []
    for p in resolved:
        if any(_under(p, Path(s)) for s in SYSTEM_DIRS) or any(_under(p, o) for o in out):
            continue
        out.append(p)
    return out


def _under(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


class Sandbox:
    """Builds the bwrap command line of one runner."""

    def __init__(self, bwrap: str, *, uid: int, hidden: list[Path], cpu_seconds: int,
                 memory_bytes: int | None, rootless: bool = False) -> None:
        self.bwrap = bwrap
        self.rootless = rootless
        self.uid = uid
        self.hidden = [p.resolve() for p in hidden]
        self.cpu_seconds = cpu_seconds
        self.memory_bytes = memory_bytes
        self.readable = python_paths()
        self.prlimit = shutil.which("prlimit") or "/usr/bin/prlimit"
        self.setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"

    def limits(self, *, gpu: bool) -> Limits:
        return Limits(memory_bytes=None if gpu else self.memory_bytes, cpu_seconds=self.cpu_seconds)

    def command(self, argv: list[str], *, code: Path, site_dir: Path | None, socket: Path,
                gpu: bool = False) -> list[str]:
        """`argv` (the runner, naming CODE_DIR, SITE_DIR and SOCKET_PATH) inside the sandbox."""
        args = [self.bwrap, "--die-with-parent", "--new-session",
                "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--hostname", "app"]
        if self.rootless:
            args += ["--unshare-user", "--uid", str(self.uid), "--gid", str(self.uid), "--cap-drop", "ALL"]
        for d in SYSTEM_DIRS:
            if os.path.isdir(d):
                args += ["--ro-bind", d, d]
        for d in MERGED_USR:
            if os.path.islink(d):
                args += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                args += ["--ro-bind", d, d]
        limits = self.limits(gpu=gpu)
        # The private /tmp before the binds: a checkout or virtualenv that lives under /tmp (a CI
        # clone) is then bound over it, not hidden beneath it.
        args += ["--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp"]
        made: set[str] = {"/tmp"}
        for p in self.readable:
            args += _parents(p, made) + ["--ro-bind", str(p), str(p)]
        for p in self.hidden:  # the data directory, should a bound path hold it
            if any(_under(p, r) for r in self.readable):
                args += ["--tmpfs", str(p)]
        args += ["--proc", "/proc", "--dev", "/dev", "--ro-bind", str(code), CODE_DIR]
        if site_dir is not None:
            args += ["--ro-bind", str(site_dir), SITE_DIR]
        args += ["--perms", "0755", "--dir", "/run/genmesh", "--ro-bind", str(socket), SOCKET_PATH]
        if gpu:
            # The driver's device nodes, and /sys where CUDA reads the PCI topology.
            for dev in sorted(Path("/dev").glob("nvidia*")):
                args += ["--dev-bind", str(dev), str(dev)]
            args += ["--ro-bind", "/sys", "/sys"]
        args += ["--chdir", CODE_DIR, "--"]
        args += [self.prlimit, f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 5}",
                 f"--nproc={limits.processes}", f"--nofile={limits.open_files}",
                 f"--fsize={limits.file_bytes}", "--core=0"]
        if limits.memory_bytes:
            args.append(f"--as={limits.memory_bytes}")
        if self.rootless:
            return args + ["--"] + argv
        args += ["--", self.setpriv, f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        return args + argv

    async def probe(self) -> str | None:
        """None when a sandboxed Python runs and imports genmesh as the sandbox uid; else why not."""
        with _ProbeDirs() as (code, sock):
            cmd = self.command([sys.executable, "-P", "-c", _PROBE], code=code, site_dir=None, socket=sock)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *cmd, env=sandbox_env({}), stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
                out, _ = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT_S)
            except (OSError, asyncio.TimeoutError) as exc:
                return f"bwrap probe failed: {exc!r}"
            text = out.decode(errors="replace").strip()
            if proc.returncode != 0 or text.splitlines()[-1:] != [f"ok {self.uid}"]:
                return f"bwrap probe failed (exit {proc.returncode}): {text[-300:]}"
        return None


def args_via_pipe(command: list[str]) -> tuple[list[str], int]:
    """`bwrap --args FD -- COMMAND...` and the read end of a pipe holding bwrap's options
    (NUL-separated; bwrap takes only options from it, the command stays on its command line,
    naming only sandbox paths). The caller passes the fd to the child and closes it."""
    end = command.index("--")
    data = b"".join(arg.encode() + b"\0" for arg in command[1:end])
    read_fd, write_fd = os.pipe()
    try:
        if len(data) > 60_000:  # a pipe holds 64 KiB; the command is a few KiB
            raise ValueError("sandbox command line too long for the argument pipe")
        os.write(write_fd, data)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return [command[0], "--args", str(read_fd), *command[end:]], read_fd


# Runs inside the probe: the real uid must be the sandbox's, and genmesh must import.
_PROBE = "import os, genmesh.apps.runner; print('ok', os.getuid())"


class _ProbeDirs:
    """An empty code directory and a placeholder socket file for the probe's binds."""

    def __enter__(self) -> tuple[Path, Path]:
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="gm-sandbox-probe-"))
        (self.dir / "code").mkdir()
        (self.dir / "sock").touch()
        return self.dir / "code", self.dir / "sock"

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _parents(path: Path, made: set[str]) -> list[str]:
    """--dir for each ancestor bwrap would otherwise create mode 0700 (unreadable to the uid)."""
    out: list[str] = []
    for parent in reversed(path.parents):
        p = str(parent)
        if p == "/" or p in made or any(_under(parent, Path(s)) for s in SYSTEM_DIRS):
            continue
        made.add(p)
        out += ["--perms", "0755", "--dir", p]
    return out


# The environment a sandboxed runner gets: nothing of the worker's but locale and offline flags.
_PASSED = ("LANG", "LC_ALL", "TZ", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CUDA_VISIBLE_DEVICES",
           "NVIDIA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def sandbox_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: os.environ[k] for k in _PASSED if k in os.environ}
    env.update(PATH="/usr/local/bin:/usr/bin:/bin", HOME="/tmp", TMPDIR="/tmp", PYTHONUNBUFFERED="1",
               PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


async def detect(settings: Settings) -> tuple[Sandbox | None, str]:
    """The sandbox this worker can use, or None and the reason (logged once at start)."""
    if settings.apps_sandbox == "off":
        return None, "the app sandbox is turned off by GENMESH_APPS_SANDBOX=off"
    if settings.apps_sandbox != "auto":
        raise ValueError(f"GENMESH_APPS_SANDBOX must be auto or off, not {settings.apps_sandbox!r}")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None, "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
    rootless = os.geteuid() != 0
    for tool in ("prlimit",) if rootless else ("prlimit", "setpriv"):
        if shutil.which(tool) is None:
            return None, f"{tool} (util-linux) is not installed"
    sandbox = Sandbox(bwrap, uid=settings.apps_sandbox_uid, hidden=[settings.data_dir],
                      cpu_seconds=settings.apps_cpu_limit_s,
                      memory_bytes=settings.apps_memory_limit_mb << 20 if settings.apps_memory_limit_mb else None,
                      rootless=rootless)
    reason = await sandbox.probe()
    if reason is not None:
        if rootless:
            reason += " (as a non-root worker bwrap needs unprivileged user namespaces)"
        return None, reason
    return sandbox, "bwrap (rootless)" if rootless else "bwrap"
