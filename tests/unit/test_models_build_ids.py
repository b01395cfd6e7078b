"""`genmesh up` checks which local models are built on every start: that check reads the builder
registry without importing the model libraries, and lists exactly the builders' ids."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from genmesh.models import build


def test_the_ids_read_from_source_are_the_builders_ids() -> None:
    assert sorted(build.model_ids()) == sorted(build.builders())


def test_checking_what_is_missing_imports_no_model_library(tmp_path: Path) -> None:
    code = ("import json, sys; from pathlib import Path; from genmesh.models import build; "
            f"missing = build.missing(Path({str(tmp_path)!r})); "
            "print(json.dumps([missing, [m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules]]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    missing, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert heavy == []
    assert "genmesh/tiny-sd" in missing  # an empty models dir misses the tiny models
