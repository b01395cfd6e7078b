"""The Responses `file_search` tool: searches the caller's vector stores with the conversation's
last user message before the model runs, and hands the model what it found as context (a
`file_search_call` output item records the query and, with include=["file_search_call.results"],
the results).

The search is the router's VectorStores.SearchVectorStore under the caller's key, so a store of
another key is not found (404), as on /v1/vector_stores/{id}/search.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from genmesh import jsonpb
from genmesh.errors import InvalidArgument
from genmesh.services.edge import vector_stores
from genmesh.services.edge.responses_protocol import FileSearchToolParam, ResponsesRequest

INCLUDE_RESULTS = "file_search_call.results"
DEFAULT_RESULTS = 10
MAX_CONTEXT_CHARS = 6000  # of retrieved text per search: a small model's window is a few thousand tokens


@dataclass
class Searched:
    context_items: list[dict[str, Any]] = field(default_factory=list)  # what the model reads
    output_items: list[dict[str, Any]] = field(default_factory=list)   # what the response shows


def last_user_text(items: list[dict[str, Any]]) -> str:
    for item in reversed(items):
        if item.get("type") == "message" and item.get("role") == "user":
            text = " ".join(p.get("text") or "" for p in item.get("content") or () if p.get("type") == "input_text")
            if text.strip():
                return text.strip()
    return ""


def context_text(query: str, results: list[dict[str, Any]]) -> str:
    """The retrieved passages as the model reads them, numbered, with their file names."""
    if not results:
        return f"File search for {query!r} found no documents."
    lines = [f"File search found these passages for {query!r}; answer from them:"]
    used = 0
    for n, r in enumerate(results, 1):
        text = r["text"][:max(0, MAX_CONTEXT_CHARS - used)]
        if not text:
            break
        used += len(text)
        lines.append(f"[{n}] {r['filename'] or r['file_id']}: {text}")
    return "\n".join(lines)


async def run(request: Request, auth: str, body: ResponsesRequest, items: list[dict[str, Any]],
              response_id: str) -> Searched:
    tools = [t for t in body.tools or () if isinstance(t, FileSearchToolParam)]
    if not tools:
        return Searched()
    query = last_user_text(items)
    if not query:
        raise InvalidArgument("file_search searches with the last user message; the input has none", field="input")
    with_results = INCLUDE_RESULTS in (body.include or ())
    out = Searched()
    suffix = response_id.removeprefix("resp_")[:24]
    for k, tool in enumerate(tools):
        req = vector_stores.search_request(tool.vector_store_ids, query,
                                           max_num_results=tool.max_num_results or DEFAULT_RESULTS,
                                           filters=tool.filters)
        resp = await vector_stores.call(request, "SearchVectorStore", req)
        results = [{"file_id": r.file_id, "filename": r.filename, "score": r.score,
                    "text": "\n".join(r.content), "attributes": jsonpb.struct_to_json(r.attributes)}
                   for r in resp.data]
        out.output_items.append({"id": f"fs_{suffix}_{k}", "type": "file_search_call", "status": "completed",
                                 "queries": [query], "results": results if with_results else None})
        out.context_items.append({"type": "message", "role": "system",
                                  "content": [{"type": "input_text", "text": context_text(query, results)}]})
    return out
