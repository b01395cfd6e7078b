"""`/v1/rerank` in the Cohere/Jina shape (as vLLM serves it), on an embedding model: the query and
the documents are embedded in one LLM.Embed call (billed per token like any embedding) and ranked
by cosine similarity. This is embedding similarity, not a cross-encoder: the mesh has no reranker
model, and its scores are cosines in [-1, 1], not calibrated relevance probabilities."""
from __future__ import annotations

import math
import secrets
from typing import Optional, Union

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from genmesh.errors import InvalidArgument
from genmesh.services.edge.auth import authorization
from genmesh.services.edge.openai_api import catalog, mesh
from genmesh.services.edge.openai_protocol import _Body
from genmesh.services.edge.responses import JSON
from genmesh.v1 import llm_pb2

router = APIRouter(tags=["rerank"])
MAX_DOCUMENTS = 1000
DESCRIPTION = ("Rank documents by their relevance to a query (Cohere/Jina shape). Scores are the cosine "
               "similarity of the embedding model's vectors (embedding similarity, not a cross-encoder).")


class TextDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str = Field(min_length=1)


class RerankRequest(_Body):
    """POST /v1/rerank."""

    model: str = Field(min_length=1)
    query: str = Field(min_length=1)
    documents: list[Union[str, TextDocument]] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    top_n: Optional[int] = Field(default=None, ge=1)
    return_documents: Optional[bool] = True
    max_chunks_per_doc: Optional[int] = None
    rank_fields: Optional[list[str]] = None


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def ranked(query: list[float], docs: list[list[float]]) -> list[tuple[int, float]]:
    """(document index, score), best first; ties keep the documents' order."""
    scores = [(i, cosine(query, d)) for i, d in enumerate(docs)]
    return sorted(scores, key=lambda s: (-s[1], s[0]))


async def _rerank(body: RerankRequest, request: Request) -> JSON:
    auth = authorization(request)
    found = await catalog(request).for_task(body.model, ("embeddings",), auth, route="/v1/rerank")
    texts = [d if isinstance(d, str) else d.text for d in body.documents]
    for i, text in enumerate(texts):
        if not text:
            raise InvalidArgument("must not be an empty string", field=f"documents[{i}]")
    client = mesh(request)
    resp = await client.unary(client.llm.Embed, llm_pb2.EmbedRequest(model_id=found.model.id,
                                                                      input=[body.query, *texts]), auth)
    vectors = [list(e.embedding) for e in sorted(resp.data, key=lambda e: e.index)]
    results = []
    for index, score in ranked(vectors[0], vectors[1:])[:body.top_n or len(texts)]:
        item: dict = {"index": index, "relevance_score": score}
        if body.return_documents is not False:
            item["document"] = {"text": texts[index]}
        results.append(item)
    tokens = resp.usage.total_tokens or resp.usage.prompt_tokens
    return JSON({"id": f"rerank-{secrets.token_hex(12)}", "model": found.model.id, "results": results,
                 "usage": {"total_tokens": tokens}, "meta": {"billed_units": {"search_units": 1}}})


@router.post("/v1/rerank", summary="Rerank documents (embedding similarity)", description=DESCRIPTION)
async def rerank(body: RerankRequest, request: Request) -> JSON:
    return await _rerank(body, request)


@router.post("/v2/rerank", summary="Rerank documents (Cohere v2 path; embedding similarity)",
             description=DESCRIPTION)
async def rerank_v2(body: RerankRequest, request: Request) -> JSON:
    return await _rerank(body, request)
