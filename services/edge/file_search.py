"""The Responses `file_search` tool: searches the caller's vector stores with the conversation's
last user message before the model runs, and hands the model what it found as context (a
`file_search_call` output item records the query and results)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from genmesh.errors import InvalidArgument
from genmesh.services.edge.responses_protocol import FileSearchToolParam, ResponsesRequest


@dataclass
class Searched:
    context_items: list[dict[str, Any]] = field(default_factory=list)  # what the model reads
    output_items: list[dict[str, Any]] = field(default_factory=list)   # what the response shows


async def run(request: Request, auth: str, body: ResponsesRequest, items: list[dict[str, Any]],
              response_id: str) -> Searched:
    tools = [t for t in body.tools or () if isinstance(t, FileSearchToolParam)]
    if not tools:
        return Searched()
    raise InvalidArgument("file_search is not available on this mesh yet", field="tools")
