"""OpenAI's vector-store search filters as SQL over a file's `attributes` (jsonb).

A comparison filter is {"type": eq|ne|gt|gte|lt|lte|in|nin, "key", "value"}; a compound one is
{"type": and|or, "filters": [...]}. Values are bound parameters, never SQL text (jsonb ones as
Python values: the pool's jsonb codec encodes them). Ordering
comparisons hold only between values of the same JSON type (numbers numerically, strings by
text): an attribute of another type, or a missing one, does not match (`ne` and `nin` match a
missing attribute, as "not equal" reads).
"""
from __future__ import annotations

from typing import Any

from genmesh.errors import InvalidArgument

COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")
COMPOUNDS = ("and", "or")
_ORDER = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
MAX_DEPTH = 8
MAX_KEY_CHARS = 64


class SqlParams:
    """Bound parameters numbered from `start` ($start, $start+1, ...)."""

    def __init__(self, start: int = 1) -> None:
        self.values: list[Any] = []
        self.start = start

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${self.start + len(self.values) - 1}"


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, bool, int, float)) and value is not None


def filter_sql(spec: Any, params: SqlParams, *, column: str = "f.attributes", field: str = "filters",
               depth: int = 0) -> str:
    """A SQL boolean expression for `spec`; its values are appended to `params`."""
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"nests more than {MAX_DEPTH} levels", field=field)
    if not isinstance(spec, dict):
        raise InvalidArgument("must be an object", field=field)
    kind = spec.get("type")
    if kind in COMPOUNDS:
        parts = spec.get("filters")
        if not isinstance(parts, list) or not parts:
            raise InvalidArgument("must be a non-empty list", field=f"{field}.filters")
        joined = f" {kind.upper()} ".join(
            filter_sql(p, params, column=column, field=f"{field}.filters[{i}]", depth=depth + 1)
            for i, p in enumerate(parts))
        return f"({joined})"
    if kind not in COMPARISONS:
        raise InvalidArgument(f"type must be one of {', '.join(COMPARISONS + COMPOUNDS)}", field=f"{field}.type")
    key, value = spec.get("key"), spec.get("value")
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
        raise InvalidArgument(f"must be a string of 1 to {MAX_KEY_CHARS} characters", field=f"{field}.key")
    attr = f"({column} -> {params.add(key)})"
    if kind in ("in", "nin"):
        if not isinstance(value, list) or not value or not all(_scalar(v) for v in value):
            raise InvalidArgument("must be a non-empty list of strings, numbers or booleans", field=f"{field}.value")
        found = f"({params.add(list(value))}::jsonb @> jsonb_build_array({attr}))"
        return found if kind == "in" else f"({attr} IS NULL OR NOT {found})"
    if not _scalar(value):
        raise InvalidArgument("must be a string, number or boolean", field=f"{field}.value")
    if kind == "eq":
        return f"({attr} = {params.add(value)}::jsonb)"
    if kind == "ne":
        return f"({attr} IS DISTINCT FROM {params.add(value)}::jsonb)"
    op = _ORDER[kind]
    if isinstance(value, bool):
        raise InvalidArgument(f"'{kind}' compares numbers or strings, not booleans", field=f"{field}.value")
    if isinstance(value, str):
        return f"(jsonb_typeof({attr}) = 'string' AND ({attr} #>> '{{}}') {op} {params.add(value)}::text)"
    return (f"(jsonb_typeof({attr}) = 'number' AND ({attr} #>> '{{}}')::float8 {op} "
            f"{params.add(float(value))}::float8)")
