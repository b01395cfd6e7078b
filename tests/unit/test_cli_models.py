"""`genmesh models`: pulling real weights fails clearly offline, and only for hub models."""
from __future__ import annotations

from pathlib import Path

import pytest

from genmesh import cli


def test_pull_refuses_a_model_without_hub_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "pull", "genmesh/echo", "--data-dir", str(tmp_path)]) == 2
    assert "not a catalog model with hub weights" in capsys.readouterr().err


def test_pull_offline_says_where_to_copy_the_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["models", "pull", "stabilityai/sd-turbo", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "could not download" in err and str(tmp_path / "models" / "stabilityai" / "sd-turbo") in err


def test_list_shows_which_weights_are_here(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "genmesh/tiny-sd" in out and "not built" in out and "weights absent" in out
