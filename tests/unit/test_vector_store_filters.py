"""OpenAI vector-store filters translated to SQL over file attributes: every value bound as a
parameter, compound filters nested, bad filters refused naming the field."""
from __future__ import annotations

import pytest

from genmesh.errors import InvalidArgument
from genmesh.services.router.vector_filters import SqlParams, filter_sql


def sql(spec: dict) -> tuple[str, list]:
    params = SqlParams(4)
    return filter_sql(spec, params), params.values


def test_eq_compares_json_values_and_binds_key_and_value() -> None:
    text, values = sql({"type": "eq", "key": "region", "value": "eu"})
    assert text == "((f.attributes -> $4) = $5::jsonb)"
    assert values == ["region", "eu"]


def test_ordering_compares_numbers_numerically_and_strings_as_text() -> None:
    text, values = sql({"type": "gte", "key": "year", "value": 2020})
    assert "jsonb_typeof((f.attributes -> $4)) = 'number'" in text and ">= $5::float8" in text
    assert values == ["year", 2020.0]
    text, values = sql({"type": "lt", "key": "name", "value": "m"})
    assert "= 'string'" in text and "< $5::text" in text and values == ["name", "m"]


def test_in_and_nin_take_lists_and_nin_matches_missing_attributes() -> None:
    text, values = sql({"type": "in", "key": "tag", "value": ["a", "b"]})
    assert "@> jsonb_build_array" in text and values == ["tag", ["a", "b"]]
    text, _ = sql({"type": "nin", "key": "tag", "value": ["a"]})
    assert "IS NULL OR NOT" in text


def test_compound_filters_nest_with_and_or() -> None:
    text, values = sql({"type": "and", "filters": [
        {"type": "eq", "key": "a", "value": True},
        {"type": "or", "filters": [{"type": "ne", "key": "b", "value": 1}, {"type": "lte", "key": "c", "value": 2.5}]}]})
    assert text.startswith("((") and " AND (" in text and " OR " in text
    assert values == ["a", True, "b", 1, "c", 2.5]


def test_injection_attempts_stay_parameters() -> None:
    text, values = sql({"type": "eq", "key": "x'); DROP TABLE vector_stores; --", "value": "'"})
    assert "DROP" not in text and values[0].startswith("x')")


@pytest.mark.parametrize("spec, field", [
    ({"type": "like", "key": "a", "value": 1}, "filters.type"),
    ({"type": "eq", "key": "", "value": 1}, "filters.key"),
    ({"type": "eq", "key": "a", "value": {"x": 1}}, "filters.value"),
    ({"type": "in", "key": "a", "value": []}, "filters.value"),
    ({"type": "gt", "key": "a", "value": True}, "filters.value"),
    ({"type": "and", "filters": []}, "filters.filters"),
    ({"type": "or", "filters": [{"type": "eq", "key": "a"}]}, "filters.filters[0].value"),
    ("eq", "filters"),
])
def test_bad_filters_name_the_field(spec: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        filter_sql(spec, SqlParams())
    assert info.value.field == field


def test_deep_nesting_is_refused() -> None:
    spec: dict = {"type": "eq", "key": "a", "value": 1}
    for _ in range(12):
        spec = {"type": "and", "filters": [spec]}
    with pytest.raises(InvalidArgument):
        filter_sql(spec, SqlParams())
