"""The bubblewrap command line an app runner starts under (services/apps/sandbox.py), without
running it: the order of its mounts decides what the runner can see."""
from __future__ import annotations

from pathlib import Path

from genmesh.services.apps.sandbox import Sandbox


def test_an_installation_under_tmp_is_bound_over_the_private_tmp_not_hidden_by_it(tmp_path: Path) -> None:
    """A CI clone (its venv and genmesh) may live under /tmp: the sandbox's private /tmp must be
    mounted before those binds, or the runner finds no Python."""
    sandbox = Sandbox("bwrap", uid=65534, hidden=[], cpu_seconds=60, memory_bytes=None)
    sandbox.readable = [Path("/tmp/ci-clone/.venv"), Path("/tmp/ci-clone/genmesh")]
    args = sandbox.command(["python"], code=tmp_path, site_dir=None, socket=tmp_path / "sock")
    private_tmp = args.index("--tmpfs", 0)
    assert args[private_tmp + 1] == "/tmp"
    for bound in sandbox.readable:
        assert args.index(str(bound)) > private_tmp
