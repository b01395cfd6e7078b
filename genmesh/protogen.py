"""Generates the Python stubs in genmesh/v1/ from protos/ (`python -m genmesh.protogen`)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def generate(out_root: Path = ROOT) -> list[Path]:
    """Runs grpc_tools.protoc over every proto; returns the files written under out_root."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "genmesh" / "v1").glob("*.proto"))
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out_root}",
            f"--pyi_out={out_root}", f"--grpc_python_out={out_root}", *protos]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    written = sorted((out_root / "genmesh" / "v1").glob("*_pb2*.py*"))
    for path in written:
        # protoc writes a "Protobuf Python Version" banner with the generator's version; the
        # stubs otherwise depend only on the protos, so drift tests compare them byte for byte.
        text = path.read_text()
        text = re.sub(r"# Protobuf Python Version: .*\n", "", text)
        path.write_text(text)
    return written


if __name__ == "__main__":
    for p in generate():
        print(p.relative_to(ROOT), file=sys.stderr)
