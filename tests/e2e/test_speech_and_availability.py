"""Through the edge, as a new user: sentences spoken by `tts-1` (Piper) come back from `whisper-1`
(Whisper base) nearly word for word, via the official openai SDK; and every image and video model
the mesh lists either runs or fails at once with a reason naming the weights or the hardware."""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import AsyncIterator

import httpx
import jiwer
import openai
import pytest
import pytest_asyncio
from PIL import Image

from genmesh.models import build
from tests.conftest import Infra, Mesh, start_mesh


SENTENCES = ["The weather is nice today, so we will walk to the park.",
             "Please send the report to my office before noon tomorrow."]
MAX_WER = 0.10
VISUAL_TASKS = ("text-to-image", "image-to-image", "text-to-video")


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER over lower-cased words without punctuation (what "word for word" means to a reader)."""
    normalize = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(),
                               jiwer.RemoveMultipleSpaces(), jiwer.Strip(),
                               jiwer.ReduceToListOfListOfWords()])
    return jiwer.wer(reference, hypothesis, reference_transform=normalize,
                     hypothesis_transform=normalize)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mesh(infra: Infra, tmp_path_factory: pytest.TempPathFactory,
               models_dir: Path) -> AsyncIterator[Mesh]:
    # The seeded tiny image/video models are built (they run); the hub ones are absent here.
    build.build_missing(models_dir, ["genmesh/tiny-sd", "genmesh/tiny-t2v"])
    m = await start_mesh(infra, tmp_path_factory.mktemp("speech"),
                         ["router", "audio", "imagegen", "videogen", "edge"], models_dir=models_dir)
    try:
        yield m
    finally:
        await m.supervisor.stop()


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{mesh.edge_url}/v1", api_key=mesh.api_key, max_retries=0,
                         _strict_response_validation=True, timeout=300)


@pytest.mark.parametrize("sentence", SENTENCES, ids=["weather", "report"])
def test_tts_1_speech_comes_back_from_whisper_1_word_for_word(client: openai.OpenAI,
                                                              sentence: str) -> None:
    speech = client.audio.speech.create(model="tts-1", voice="alloy", input=sentence,
                                        response_format="wav")
    wav = speech.read()
    assert wav.startswith(b"RIFF")
    heard = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", io.BytesIO(wav)),
                                               language="en")
    wer = word_error_rate(sentence, heard.text)
    print(f"\nWER {wer:.3f}: {sentence!r} -> {heard.text!r}")
    assert wer <= MAX_WER, heard.text


def test_models_say_whether_they_can_run_and_why_not(client: openai.OpenAI, mesh: Mesh) -> None:
    listed = {m.id: m.model_extra or {} for m in client.models.list()}
    assert listed["whisper-1"]["available"] is True and listed["tts-1"]["available"] is True
    assert "third party" in listed["openai/whisper-base"]["weights_source"]
    cog = listed["THUDM/CogVideoX-2b"]
    assert cog["available"] is False
    assert cog["unavailable_reason"].startswith("needs a GPU with at least 24 GB of memory")
    assert "noise" in listed["genmesh/tiny-sd"]["description"]
    # The same facts in FAL's model-search shape.
    fal = httpx.get(f"{mesh.edge_url}/v1/models", params={"category": "text-to-video"},
                    headers={"Authorization": f"Key {mesh.api_key}"}, timeout=30).json()
    status = {m["endpoint_id"]: m["metadata"] for m in fal["models"]}
    assert status["genmesh/tiny-t2v"]["status"] == "active"
    assert status["THUDM/CogVideoX-2b"]["status"] == "unavailable"
    assert status["THUDM/CogVideoX-2b"]["unavailable_reason"] == cog["unavailable_reason"]


def _png_data_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_every_image_and_video_model_runs_or_fails_at_once_saying_why(client: openai.OpenAI,
                                                                      mesh: Mesh) -> None:
    models = [m for m in client.models.list() if (m.model_extra or {}).get("task") in VISUAL_TASKS
              and m.id == m.root]  # catalog entries, not their OpenAI aliases
    assert len(models) >= 8
    headers = {"Authorization": f"Key {mesh.api_key}"}
    inputs = {"text-to-image": {"prompt": "a red square"},
              "image-to-image": {"prompt": "a red square", "image_url": _png_data_uri()},
              "text-to-video": {"prompt": "a red square"}}
    outcomes = {}
    with httpx.Client(base_url=mesh.edge_url, headers=headers, timeout=300) as http:
        for m in models:
            extra = m.model_extra or {}
            response = http.post(f"/{m.id}", json=inputs[extra["task"]])
            outcomes[m.id] = response.status_code
            if extra["available"]:
                assert response.status_code == 200, (m.id, response.text)
                continue
            reason = extra["unavailable_reason"]
            assert "weights missing" in reason or "needs a GPU" in reason, (m.id, reason)
            # 400 model_unavailable with the listed reason: not 429/503 "busy", not a timeout.
            assert response.status_code == 400, (m.id, response.status_code, response.text)
            assert reason in response.text and "busy" not in response.text, response.text
    assert outcomes["genmesh/tiny-sd"] == outcomes["genmesh/tiny-t2v"] == 200
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(model="black-forest-labs/flux.1-schnell", prompt="a red square")
    assert "needs a GPU (A100 or H100 or L40S) with at least 40 GB of memory" in str(err.value)
