"""OpenAI vector-store filters as the edge maps them onto the typed Filter and the router
translates that to SQL over file attributes: every value bound as a parameter, compound filters
nested, bad filters refused naming the field (by the edge when the message cannot hold them, by
the router for its limits)."""
from __future__ import annotations

import pytest

from genmesh.errors import InvalidArgument
from genmesh.services.edge.vector_stores import filter_proto
from genmesh.services.router.vector_filters import SqlParams, filter_sql
from genmesh.v1 import vector_stores_pb2 as pb


def sql(spec: object) -> tuple[str, list]:
    params = SqlParams(4)
    return filter_sql(filter_proto(spec), params), params.values


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
    ({"type": ["eq"], "key": "a", "value": 1}, "filters.type"),
    ({"type": "eq", "key": 7, "value": 1}, "filters.key"),
    ({"type": "in", "key": "a", "value": [1, {"x": 1}]}, "filters.value"),
    ({"type": "eq", "key": "a", "value": 10 ** 400}, "filters.value"),
])
def test_bad_filters_name_the_field(spec: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        sql(spec)
    assert info.value.field == field


def test_whole_numbers_compare_as_the_integers_attributes_hold() -> None:
    assert sql({"type": "eq", "key": "year", "value": 2019})[1] == ["year", 2019]
    assert sql({"type": "in", "key": "year", "value": [2019, 1.5, "x", True]})[1] == ["year", [2019, 1.5, "x", True]]


def test_a_typed_filter_a_grpc_client_leaves_incomplete_is_refused_naming_the_field() -> None:
    cases = [(pb.Filter(), "filters"),
             (pb.Filter(comparison=pb.ComparisonFilter(key="a", value=pb.FilterValue(number_value=1))), "filters.type"),
             (pb.Filter(compound=pb.CompoundFilter(filters=[pb.Filter()])), "filters.type"),
             (pb.Filter(comparison=pb.ComparisonFilter(type=pb.COMPARISON_FILTER_TYPE_EQ, key="a",
                                                       values=[pb.FilterValue(number_value=1)])), "filters.value"),
             (pb.Filter(comparison=pb.ComparisonFilter(type=pb.COMPARISON_FILTER_TYPE_EQ, key="a",
                                                       value=pb.FilterValue(number_value=float("nan")))),
              "filters.value")]
    for spec, field in cases:
        with pytest.raises(InvalidArgument) as info:
            filter_sql(spec, SqlParams())
        assert info.value.field == field


def test_deep_nesting_is_refused() -> None:
    spec: dict = {"type": "eq", "key": "a", "value": 1}
    for _ in range(12):
        spec = {"type": "and", "filters": [spec]}
    with pytest.raises(InvalidArgument) as info:
        sql(spec)
    assert "nests more than 8" in info.value.message
