"""`genmesh models`: pulling real weights fails clearly offline, only for hub and package models;
the listing says of every model whether it can run here and, if not, why and how to fix it."""
from __future__ import annotations

from pathlib import Path

import pytest

from genmesh import cli
from genmesh.worker import devices


def test_pull_refuses_a_model_without_hub_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "pull", "genmesh/echo", "--data-dir", str(tmp_path)]) == 2
    assert "not a catalog model with hub or package weights" in capsys.readouterr().err


def test_pull_offline_says_where_to_copy_the_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["models", "pull", "stabilityai/sd-turbo", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "could not download" in err and str(tmp_path / "models" / "stabilityai" / "sd-turbo") in err


def test_list_says_what_can_run_here_and_why_not(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "list", "--data-dir", str(tmp_path)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    # Packaged real weights run anywhere; built ones say how to build them.
    assert lines["openai/whisper-base"].endswith(" ready")
    assert lines["rhasspy/piper-en_US-joe-medium"].endswith(" ready")
    assert "unavailable: weights missing" in lines["genmesh/tiny-sd"]
    assert "`genmesh models build genmesh/tiny-sd`" in lines["genmesh/tiny-sd"]
    # Hub weights name the pull line; GPU models name the hardware first (this machine has none).
    assert "`genmesh models pull stabilityai/sd-turbo`" in lines["stabilityai/sd-turbo"]
    if not any(d.gpu_class for d in devices.detect()):
        assert "needs a GPU with at least 24 GB of memory" in lines["THUDM/CogVideoX-2b"]
    assert "`genmesh models pull THUDM/CogVideoX-2b`" in lines["THUDM/CogVideoX-2b"]


def test_pull_of_packaged_weights_checks_them_in_place(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # Installed already (a pinned dependency): nothing to install, every file's sha256 checked.
    assert cli.main(["models", "pull", "openai/whisper-tiny.en", "--data-dir", str(tmp_path)]) == 0
    assert "openai/whisper-tiny.en: weights checked (sha256)" in capsys.readouterr().err
