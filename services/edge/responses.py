"""JSON responses rendered with orjson (fast, and no deprecation noise from FastAPI)."""
from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from genmesh.errors import InvalidArgument


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


async def json_body(request: Request) -> Any:
    """The body parsed as JSON whatever the content type says (curl -d sends form type)."""
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"the request body is not valid JSON: {exc}", field="body") from None
