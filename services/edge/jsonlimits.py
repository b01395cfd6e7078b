"""How deep a JSON document the edge accepts. Every body becomes a protobuf Struct on its way to
the mesh, and protobuf refuses messages nested past its recursion limit (100 message levels,
two per JSON level, so ~50 JSON levels); Python's own limit (~1000) breaks parsers first. A
limit well below both turns either failure into a 400 naming `body`."""
from __future__ import annotations

import json
from typing import Any

import orjson

MAX_JSON_DEPTH = 32


def depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a parsed document nests containers deeper than `limit` (iterative: a deep
    document must not exhaust the stack that checks it)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list, tuple)))
    return False


def too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a request body is JSON nested deeper than `limit`. Bodies that are not JSON are
    not this check's business (their handler says what is wrong with them)."""
    if not raw.strip():
        return False
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc):
            return True
        # orjson refuses what Python's json accepts (NaN, Infinity) and FastAPI parses with the
        # latter: check what that parser would hand on.
        try:
            doc = json.loads(raw)
        except RecursionError:
            return True
        except ValueError:
            return False
    return depth_exceeds(doc, limit)
