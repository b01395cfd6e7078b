"""Pricing: usage items times the price in force at the record's finish, per unit and per machine."""
from __future__ import annotations

import datetime as dt

import pytest

from genmesh.pricing import (BEGINNING, DEFAULT_MACHINE_PRICES, Price, PriceBook, billable_items,
                             charged, estimate, megapixels, merge_items, price_record, price_usage)

UTC = dt.timezone.utc
T0 = dt.datetime(2025, 1, 1, tzinfo=UTC)
LATER = T0 + dt.timedelta(days=10)


def book(*prices: Price, aliases: dict[str, str] | None = None) -> PriceBook:
    return PriceBook(prices, aliases)


def test_image_is_priced_by_megapixels() -> None:
    price = Price("megapixels", 0.003, model_id="bfl/flux")
    assert megapixels(1024, 1024) == pytest.approx(1.048576)
    assert megapixels(512, 512, count=4) == pytest.approx(1.048576)
    priced = price_usage({"megapixels": megapixels(1024, 1024)}, {"megapixels": price})
    assert priced.cost == pytest.approx(1.048576 * 0.003)
    assert priced.currency == "USD"


@pytest.mark.parametrize(("unit", "unit_price", "per", "quantity", "cost"), [
    ("video_seconds", 0.1, 1, 6.125, 0.6125),
    ("audio_seconds", 0.0001, 1, 90.0, 0.009),
    ("characters", 0.000015, 1, 1000, 0.015),
    ("input_tokens", 0.05, 1_000_000, 2_000_000, 0.1),
    ("output_tokens", 0.1, 1_000_000, 500, 0.00005),
    ("runner_seconds", 0.00111, 1, 60, 0.0666),
    ("requests", 0.002, 1, 3, 0.006),
])
def test_each_unit_costs_quantity_times_unit_price_per_its_quantum(
        unit: str, unit_price: float, per: float, quantity: float, cost: float) -> None:
    price = Price(unit, unit_price, per=per, model_id="a/b")
    assert price_usage({unit: quantity}, {unit: price}).cost == pytest.approx(cost)


def test_tokens_are_priced_per_million_input_and_output_separately() -> None:
    prices = {"input_tokens": Price("input_tokens", 0.05, per=1e6),
              "output_tokens": Price("output_tokens", 0.1, per=1e6)}
    priced = price_usage({"input_tokens": 1200, "output_tokens": 300}, prices)
    assert [line.cost for line in priced.lines] == pytest.approx([1200 * 0.05 / 1e6, 300 * 0.1 / 1e6])
    assert priced.cost == pytest.approx(1200 * 0.05 / 1e6 + 300 * 0.1 / 1e6)


def test_a_unit_reported_twice_is_summed() -> None:
    assert merge_items([("output_tokens", 5), ("input_tokens", 3), ("output_tokens", 7)]) == {
        "output_tokens": 12, "input_tokens": 3}


def test_unpriced_unit_costs_nothing_and_is_flagged() -> None:
    priced = price_usage({"megapixels": 1.0, "frames": 8},
                         {"megapixels": Price("megapixels", 0.01)})
    assert priced.cost == pytest.approx(0.01)
    assert priced.unpriced_units == ["frames"]


def test_failed_requests_are_not_charged_but_cancelled_ones_pay_for_what_they_used() -> None:
    prices = book(Price("output_tokens", 1.0, per=1e6, model_id="m/llm"))
    def cost(status: str) -> float:
        return price_record(prices, model_id="m/llm", items=[("output_tokens", 1e6)], at=LATER,
                            status=status).cost
    assert not charged("FAILED")
    assert cost("FAILED") == 0.0
    assert cost("CANCELLED") == pytest.approx(1.0)
    assert cost("COMPLETED") == pytest.approx(1.0)


def test_the_price_in_force_at_finish_applies_not_the_latest() -> None:
    old = Price("megapixels", 0.001, model_id="m/img", effective_from=BEGINNING)
    new = Price("megapixels", 0.002, model_id="m/img", effective_from=T0)
    prices = book(new, old)  # any order
    before = T0 - dt.timedelta(microseconds=1)
    assert prices.in_force("m/img", before)["megapixels"].unit_price == 0.001
    assert prices.in_force("m/img", T0)["megapixels"].unit_price == 0.002
    assert prices.in_force("m/img", LATER)["megapixels"].unit_price == 0.002


def test_a_record_finished_before_any_price_existed_is_unpriced() -> None:
    prices = book(Price("megapixels", 0.002, model_id="m/img", effective_from=T0))
    assert prices.in_force("m/img", T0 - dt.timedelta(seconds=1)) == {}


def test_aliases_and_app_sub_paths_are_priced_as_the_model_serving_them() -> None:
    prices = book(Price("output_tokens", 0.1, per=1e6, model_id="hf/smol"),
                  Price("requests", 0.01, model_id="alice/app"),
                  aliases={"gpt-4o-mini": "hf/smol"})
    assert prices.in_force("gpt-4o-mini", LATER)["output_tokens"].model_id == "hf/smol"
    assert prices.in_force("alice/app/generate", LATER)["requests"].unit_price == 0.01
    assert prices.in_force("bob/other", LATER) == {}


def test_an_exact_model_price_beats_its_parent_path() -> None:
    prices = book(Price("megapixels", 0.001, model_id="g/tiny-sd"),
                  Price("megapixels", 0.005, model_id="g/tiny-sd/image-to-image"))
    assert prices.in_force("g/tiny-sd/image-to-image", LATER)["megapixels"].unit_price == 0.005


def test_apps_pay_runner_seconds_by_machine_type_unless_the_app_has_its_own_price() -> None:
    machine = [Price("runner_seconds", rate, machine_type=m) for m, rate in DEFAULT_MACHINE_PRICES.items()]
    prices = book(*machine, Price("runner_seconds", 0.002, model_id="alice/app", machine_type="GPU-A100"))
    a100 = DEFAULT_MACHINE_PRICES["GPU-A100"]
    assert prices.in_force("bob/app", LATER, "GPU-A100")["runner_seconds"].unit_price == a100
    assert prices.in_force("alice/app", LATER, "GPU-A100")["runner_seconds"].unit_price == 0.002
    cpu = prices.in_force("alice/app", LATER, "CPU")["runner_seconds"]
    assert cpu.unit_price == DEFAULT_MACHINE_PRICES["CPU"]


def test_an_app_reporting_no_usage_is_billed_its_run_time_on_its_machine() -> None:
    assert billable_items({}, machine_type="GPU-H100", run_time_s=12.5) == {"runner_seconds": 12.5}
    assert billable_items({"requests": 1}, machine_type="GPU-H100", run_time_s=12.5) == {"requests": 1}
    assert billable_items({}, machine_type="", run_time_s=12.5) == {}
    prices = book(Price("runner_seconds", 0.00125, machine_type="GPU-H100"))
    priced = price_record(prices, model_id="bob/app/sub", items=[], at=LATER, status="COMPLETED",
                          machine_type="GPU-H100", run_time_s=10.0)
    assert priced.cost == pytest.approx(0.0125)


def test_estimate_multiplies_planned_quantities_by_calls() -> None:
    prices = {"input_tokens": Price("input_tokens", 0.05, per=1e6),
              "output_tokens": Price("output_tokens", 0.1, per=1e6)}
    priced = estimate({"input_tokens": 1000, "output_tokens": 500}, prices, calls=10)
    assert priced.cost == pytest.approx(10 * (1000 * 0.05 + 500 * 0.1) / 1e6)
    assert estimate({"input_tokens": 1000}, prices, calls=0).cost == pytest.approx(1000 * 0.05 / 1e6)


def test_priced_lines_carry_the_price_they_were_charged_at() -> None:
    price = Price("characters", 0.000015, model_id="e/tts", effective_from=T0)
    line = price_usage({"characters": 200}, {"characters": price}).lines[0]
    assert line.to_json() == {"unit": "characters", "quantity": 200, "unit_price": 0.000015,
                              "per": 1.0, "currency": "USD", "cost": pytest.approx(0.003),
                              "priced": True, "effective_from": T0.isoformat()}


def test_current_and_history_list_every_version() -> None:
    prices = book(Price("megapixels", 0.001, model_id="m/img", effective_from=BEGINNING),
                  Price("megapixels", 0.002, model_id="m/img", effective_from=T0))
    assert [p.unit_price for p in prices.current()] == [0.002]
    assert [p.unit_price for p in prices.history()] == [0.001, 0.002]
