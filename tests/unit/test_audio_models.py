"""The speech models genmesh prepares: tiny ones built offline, byte-for-byte reproducible and
loadable the standard way; Whisper base joined from its packages (tests/unit/test_audio_packaged.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from genmesh.models.audio import BUILDERS, WHISPER_BASE

TINY = {model_id: build for model_id, build in BUILDERS.items() if model_id != WHISPER_BASE}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audio-models")
    dirs = {}
    for model_id, build in TINY.items():
        dirs[model_id] = root / model_id
        build(dirs[model_id])
    return dirs


def test_catalog_ids_are_the_tiny_speech_models_and_whisper_base() -> None:
    assert set(BUILDERS) == {"genmesh/tiny-whisper", "genmesh/tiny-vits", WHISPER_BASE}


def test_building_twice_gives_identical_files(built: dict[str, Path], tmp_path: Path) -> None:
    for model_id, build in TINY.items():
        again = tmp_path / model_id
        build(again)
        first = {p.name: p.read_bytes() for p in built[model_id].iterdir()}
        second = {p.name: p.read_bytes() for p in again.iterdir()}
        assert first == second, model_id
        assert "model.safetensors" in first


def test_tiny_whisper_loads_with_whisper_token_layout(built: dict[str, Path]) -> None:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    directory = built["genmesh/tiny-whisper"]
    processor = WhisperProcessor.from_pretrained(directory)
    model = WhisperForConditionalGeneration.from_pretrained(directory)
    tokenizer = processor.tokenizer
    ids = tokenizer.convert_tokens_to_ids
    # Languages follow <|startoftranscript|>; timestamps follow <|notimestamps|> and end the vocab.
    assert ids("<|en|>") == ids("<|startoftranscript|>") + 1
    assert ids("<|0.00|>") == model.generation_config.no_timestamps_token_id + 1
    assert ids("<|30.00|>") == model.config.vocab_size - 1
    tokenizer.set_prefix_tokens(language="french", task="translate", predict_timestamps=True)
    assert tokenizer.prefix_tokens == [ids("<|startoftranscript|>"), ids("<|fr|>"),
                                       ids("<|translate|>")]
    text_ids = tokenizer(" the cat sat", add_special_tokens=False).input_ids
    assert tokenizer.decode(text_ids) == " the cat sat"
    assert model.generation_config.lang_to_id["<|de|>"] == ids("<|de|>")


def test_tiny_vits_loads_as_a_multi_speaker_model(built: dict[str, Path]) -> None:
    from transformers import VitsModel, VitsTokenizer

    directory = built["genmesh/tiny-vits"]
    model = VitsModel.from_pretrained(directory)
    tokenizer = VitsTokenizer.from_pretrained(directory)
    assert model.config.sampling_rate == 16000
    assert model.config.num_speakers > 1
    assert len(tokenizer("hello world").input_ids) > 0
