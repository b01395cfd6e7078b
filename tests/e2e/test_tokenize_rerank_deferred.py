"""vLLM's /tokenize and /detokenize, xAI's /v1/tokenize-text, token-id embeddings (single and
batched), xAI's deferred chat completions on the durable queue, and /v1/rerank on the embedding
model, against a running mesh (router, billing, llm with SmolLM2 and MiniLM, edge)."""
from __future__ import annotations

import time

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from genmesh.services.llm.embeddings import default_minilm_path
from tests.conftest import Mesh
from tests.e2e.smollm2 import SMOLLM2, strict_sdk

EMBED = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def mesh(smollm2: Mesh) -> Mesh:
    """The session's SmolLM2 mesh, with this module's own key (tests/e2e/conftest.py)."""
    return smollm2


@pytest.fixture(scope="module")
def http(mesh: Mesh) -> httpx.Client:
    return httpx.Client(base_url=mesh.edge_url, headers={"authorization": f"Bearer {mesh.api_key}"}, timeout=120)


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> openai.OpenAI:
    return strict_sdk(mesh)


def other_key(mesh: Mesh, http: httpx.Client) -> httpx.Client:
    secret = http.post("/v1/keys", json={"name": "other"}).json()["secret"]
    return httpx.Client(base_url=mesh.edge_url, headers={"authorization": f"Bearer {secret}"}, timeout=60)


def test_tokenize_and_detokenize_round_trip_in_vllms_shape(http: httpx.Client, client: openai.OpenAI) -> None:
    out = http.post("/tokenize", json={"model": SMOLLM2, "prompt": "Hello world", "return_token_strs": True}).json()
    assert out["count"] == len(out["tokens"]) == len(out["token_strs"]) > 0 and out["max_model_len"] == 8192
    assert http.post("/detokenize", json={"model": SMOLLM2, "tokens": out["tokens"]}).json() == {"prompt": "Hello world"}
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    chat = http.post("/tokenize", json={"model": SMOLLM2, "messages": messages}).json()
    answer = client.chat.completions.create(model=SMOLLM2, messages=messages, max_tokens=1)
    assert chat["count"] == answer.usage.prompt_tokens and chat["token_strs"] is None
    bad = http.post("/detokenize", json={"model": SMOLLM2, "tokens": [10 ** 8]})
    assert bad.status_code == 400 and "tokens[0]" in bad.text


def test_tokenize_text_in_xais_shape(http: httpx.Client) -> None:
    out = http.post("/v1/tokenize-text", json={"model": SMOLLM2, "text": "Hello wonderful world"}).json()
    tokens = out["token_ids"]
    assert tokens and all(isinstance(t["token_id"], int) for t in tokens)
    assert "".join(t["string_token"] for t in tokens) == "Hello wonderful world"
    assert bytes(b for t in tokens for b in t["token_bytes"]) == b"Hello wonderful world"


def test_embeddings_accept_token_ids_single_and_batched(client: openai.OpenAI) -> None:
    tokenizer = AutoTokenizer.from_pretrained(default_minilm_path())
    cat, dog = (tokenizer.encode(t, add_special_tokens=False) for t in ("a cat", "a dog"))
    by_text = client.embeddings.create(model=EMBED, input=["a cat", "a dog"], encoding_format="float")
    single = client.embeddings.create(model=EMBED, input=cat, encoding_format="float")
    batched = client.embeddings.create(model=EMBED, input=[cat, dog], encoding_format="float")
    assert single.data[0].embedding == pytest.approx(by_text.data[0].embedding, abs=1e-5)
    assert [d.index for d in batched.data] == [0, 1]
    assert batched.data[1].embedding == pytest.approx(by_text.data[1].embedding, abs=1e-5)
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(model=EMBED, input=[[10 ** 6]], encoding_format="float")
    assert bad.value.param == "input[0]"


def test_a_deferred_completion_answers_202_until_ready_then_the_completion(mesh: Mesh, http: httpx.Client) -> None:
    made = http.post("/v1/chat/completions", json={"model": SMOLLM2, "deferred": True, "max_tokens": 4,
                                                   "temperature": 0, "messages": [{"role": "user", "content": "hi"}]})
    assert made.status_code == 200 and set(made.json()) == {"request_id"}
    request_id = made.json()["request_id"]
    deadline = time.monotonic() + 120
    statuses = []
    while True:
        got = http.get(f"/v1/chat/deferred-completion/{request_id}")
        statuses.append(got.status_code)
        if got.status_code != 202 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got.status_code == 200 and set(statuses[:-1]) <= {202}
    body = got.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
    assert 0 < body["usage"]["completion_tokens"] <= 4
    assert other_key(mesh, http).get(f"/v1/chat/deferred-completion/{request_id}").status_code == 404


def test_rerank_orders_documents_by_embedding_similarity(http: httpx.Client) -> None:
    docs = ["Bananas are yellow fruit.", "Paris is the capital of France.", {"text": "Dogs bark at night."}]
    out = http.post("/v1/rerank", json={"model": "text-embedding-3-small", "query": "What is the capital of France?",
                                        "documents": docs, "top_n": 2}).json()
    assert [r["index"] for r in out["results"]][:1] == [1] and len(out["results"]) == 2
    assert out["results"][0]["document"] == {"text": "Paris is the capital of France."}
    assert out["results"][0]["relevance_score"] >= out["results"][1]["relevance_score"]
    assert out["usage"]["total_tokens"] > 0
    bare = http.post("/v1/rerank", json={"model": EMBED, "query": "q", "documents": ["a"],
                                         "return_documents": False}).json()
    assert "document" not in bare["results"][0]
    assert http.post("/v1/rerank", json={"model": SMOLLM2, "query": "q", "documents": ["a"]}).status_code == 400
