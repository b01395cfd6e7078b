"""OpenAI's vector-store search filters (the typed `Filter` of vector_stores.proto) as SQL over a
file's `attributes` (jsonb).

A comparison filter compares one attribute (`key`) with a value (eq, ne, gt, gte, lt, lte) or a
list of values (in, nin); a compound one is an and/or of filters. Values are bound parameters,
never SQL text (jsonb ones as Python values: the pool's jsonb codec encodes them). Ordering
comparisons hold only between values of the same JSON type (numbers numerically, strings by
text): an attribute of another type, or a missing one, does not match (`ne` and `nin` match a
missing attribute, as "not equal" reads).
"""
from __future__ import annotations

import math
from typing import Any

from genmesh.errors import InvalidArgument
from genmesh.jsonpb import enum_short_name, plain_json
from genmesh.v1 import vector_stores_pb2 as pb

_ORDER = {pb.COMPARISON_FILTER_TYPE_GT: ">", pb.COMPARISON_FILTER_TYPE_GTE: ">=",
          pb.COMPARISON_FILTER_TYPE_LT: "<", pb.COMPARISON_FILTER_TYPE_LTE: "<="}
_LISTS = (pb.COMPARISON_FILTER_TYPE_IN, pb.COMPARISON_FILTER_TYPE_NIN)
_COMPOUND = {pb.COMPOUND_FILTER_TYPE_AND: "AND", pb.COMPOUND_FILTER_TYPE_OR: "OR"}
_TYPES = ", ".join(enum_short_name(enum, n) for enum in (pb.ComparisonFilterType, pb.CompoundFilterType)
                   for n in enum.values() if n)
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


def _scalar(value: pb.FilterValue) -> Any:
    """The value as its JSON one (a whole number as an int, as attributes hold it); None when unset
    or not finite (no JSON number)."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "number_value" and not math.isfinite(value.number_value):
        return None
    return plain_json(getattr(value, kind))


def filter_sql(spec: pb.Filter, params: SqlParams, *, column: str = "f.attributes", field: str = "filters",
               depth: int = 0) -> str:
    """A SQL boolean expression for `spec`; its values are appended to `params`."""
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"nests more than {MAX_DEPTH} levels", field=field)
    case = spec.WhichOneof("filter")
    if case == "compound":
        compound = spec.compound
        if compound.type not in _COMPOUND:
            raise InvalidArgument("type must be 'and' or 'or'", field=f"{field}.type")
        if not compound.filters:
            raise InvalidArgument("must be a non-empty list", field=f"{field}.filters")
        joined = f" {_COMPOUND[compound.type]} ".join(
            filter_sql(p, params, column=column, field=f"{field}.filters[{i}]", depth=depth + 1)
            for i, p in enumerate(compound.filters))
        return f"({joined})"
    if case is None:
        raise InvalidArgument("must be a comparison or a compound filter", field=field)
    comparison = spec.comparison
    kind = comparison.type
    if not enum_short_name(pb.ComparisonFilterType, kind):  # unspecified, or a number it does not have
        raise InvalidArgument(f"type must be one of {_TYPES}", field=f"{field}.type")
    key = comparison.key
    if not key or len(key) > MAX_KEY_CHARS:
        raise InvalidArgument(f"must be a string of 1 to {MAX_KEY_CHARS} characters", field=f"{field}.key")
    attr = f"({column} -> {params.add(key)})"
    if kind in _LISTS:
        values = [_scalar(v) for v in comparison.values]
        if not values or None in values or comparison.HasField("value"):
            raise InvalidArgument("must be a non-empty list of strings, numbers or booleans", field=f"{field}.value")
        found = f"({params.add(values)}::jsonb @> jsonb_build_array({attr}))"
        return found if kind == pb.COMPARISON_FILTER_TYPE_IN else f"({attr} IS NULL OR NOT {found})"
    value = _scalar(comparison.value)
    if value is None or comparison.values:
        raise InvalidArgument("must be a string, number or boolean", field=f"{field}.value")
    if kind == pb.COMPARISON_FILTER_TYPE_EQ:
        return f"({attr} = {params.add(value)}::jsonb)"
    if kind == pb.COMPARISON_FILTER_TYPE_NE:
        return f"({attr} IS DISTINCT FROM {params.add(value)}::jsonb)"
    op = _ORDER[kind]
    if isinstance(value, bool):
        raise InvalidArgument(f"'{enum_short_name(pb.ComparisonFilterType, kind)}' compares numbers or strings, "
                              "not booleans", field=f"{field}.value")
    if isinstance(value, str):
        return f"(jsonb_typeof({attr}) = 'string' AND ({attr} #>> '{{}}') {op} {params.add(value)}::text)"
    return (f"(jsonb_typeof({attr}) = 'number' AND ({attr} #>> '{{}}')::float8 {op} "
            f"{params.add(float(value))}::float8)")
