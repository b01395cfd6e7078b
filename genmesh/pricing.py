"""Pricing: usage items times the price in force, as pure functions over plain data.

A price is `unit_price` currency per `per` units of `unit` (tokens are priced per million). Prices
change over time; a `PriceBook` holds the whole history and answers "which prices were in force
for this model, on this machine type, at this instant", so a record is always priced as of its
`finished_at` and a later price change never rewrites history.
"""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

UNITS = ("megapixels", "video_seconds", "audio_seconds", "characters", "input_tokens",
         "output_tokens", "runner_seconds", "requests")
RUNNER_SECONDS = "runner_seconds"
DEFAULT_CURRENCY = "USD"
# "In force since always": catalog prices seeded for the first time take effect at this instant,
# so records that waited in the stream before billing ever started are still priced.
BEGINNING = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

# Apps are priced per runner-second by machine type unless a price names the app itself.
DEFAULT_MACHINE_PRICES: dict[str, float] = {
    "CPU": 0.00003,
    "GPU-A100": 0.00111,
    "GPU-H100": 0.00125,
}

# Failed requests are not charged (their usage is still recorded); cancelled ones pay for what
# they consumed before the cancel, like a streamed completion stopped half-way.
UNCHARGED_STATUSES = frozenset({"FAILED"})


@dataclass(frozen=True)
class Price:
    unit: str
    unit_price: float
    per: float = 1.0
    currency: str = DEFAULT_CURRENCY
    model_id: str = ""       # "" with machine_type set: the default for every app on that machine
    machine_type: str = ""
    effective_from: dt.datetime = BEGINNING

    def cost(self, quantity: float) -> float:
        return quantity * self.unit_price / (self.per or 1.0)

    def same_terms(self, other: "Price") -> bool:
        return (self.unit_price, self.per or 1.0, self.currency) == (
            other.unit_price, other.per or 1.0, other.currency)


@dataclass(frozen=True)
class Line:
    """One billed unit of one request: its quantity and the price it was charged at."""

    unit: str
    quantity: float
    unit_price: float
    per: float
    currency: str
    cost: float
    priced: bool
    effective_from: dt.datetime | None = None

    def to_json(self) -> dict[str, object]:
        return {"unit": self.unit, "quantity": self.quantity, "unit_price": self.unit_price,
                "per": self.per, "currency": self.currency, "cost": self.cost,
                "priced": self.priced,
                "effective_from": self.effective_from.isoformat() if self.effective_from else None}


@dataclass(frozen=True)
class Priced:
    lines: tuple[Line, ...]
    cost: float
    currency: str

    @property
    def unpriced_units(self) -> list[str]:
        return [line.unit for line in self.lines if not line.priced]


def megapixels(width: int, height: int, count: int = 1) -> float:
    """What an image request is billed in: width x height / 1e6, per image."""
    return width * height * count / 1_000_000


def merge_items(items: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Usage items summed by unit, in first-seen order (a worker may report a unit twice)."""
    merged: dict[str, float] = {}
    for unit, quantity in items:
        merged[unit] = merged.get(unit, 0.0) + quantity
    return merged


def billable_items(items: Mapping[str, float], *, machine_type: str = "",
                   run_time_s: float = 0.0) -> dict[str, float]:
    """The quantities to price. An app that reports no usage of its own but names its machine
    type is billed its run time in runner-seconds."""
    if not items and machine_type and run_time_s > 0:
        return {RUNNER_SECONDS: run_time_s}
    return dict(items)


def charged(status: str) -> bool:
    return status not in UNCHARGED_STATUSES


class PriceBook:
    """Every price ever set, answering which were in force for a model at an instant.

    A model's prices are looked up under, in order: its own id, the catalog id its alias names
    (`gpt-4o-mini` -> the model serving it), and the id's leading parts (an app endpoint
    `owner/app/sub` is priced as `owner/app`). Per unit, a price for (model, machine type) beats
    one for the model on any machine, which beats the machine type's default.
    """

    def __init__(self, prices: Iterable[Price], aliases: Mapping[str, str] | None = None) -> None:
        # (model_id, machine_type) -> unit -> versions, oldest first
        self._scopes: dict[tuple[str, str], dict[str, list[Price]]] = {}
        for price in prices:
            units = self._scopes.setdefault((price.model_id, price.machine_type), {})
            units.setdefault(price.unit, []).append(price)
        for units in self._scopes.values():
            for versions in units.values():
                versions.sort(key=lambda p: p.effective_from)
        self._models = {model_id for model_id, _ in self._scopes if model_id}
        self._aliases = dict(aliases or {})

    def price_key(self, model_id: str) -> str | None:
        """The id a model's prices are stored under, or None when it has none."""
        candidates = [model_id]
        if model_id in self._aliases:
            candidates.append(self._aliases[model_id])
        parts = model_id.split("/")
        candidates += ["/".join(parts[:n]) for n in range(len(parts) - 1, 1, -1)]
        return next((c for c in candidates if c in self._models), None)

    def in_force(self, model_id: str, at: dt.datetime, machine_type: str = "") -> dict[str, Price]:
        """unit -> the price in force at `at` for this model on this machine type."""
        model_key = self.price_key(model_id)
        scopes: list[tuple[str, str]] = []
        if machine_type:
            scopes.append(("", machine_type))
        if model_key is not None:
            scopes.append((model_key, ""))
            if machine_type:
                scopes.append((model_key, machine_type))
        prices: dict[str, Price] = {}
        for scope in scopes:  # most general first: the more specific overwrite
            for unit, versions in self._scopes.get(scope, {}).items():
                price = _latest(versions, at)
                if price is not None:
                    prices[unit] = price
        return prices

    def current(self) -> list[Price]:
        """The latest price of every (model, machine type, unit)."""
        return [versions[-1] for units in self._scopes.values() for versions in units.values()]

    def history(self) -> list[Price]:
        return [p for units in self._scopes.values() for versions in units.values() for p in versions]


def _latest(versions: list[Price], at: dt.datetime) -> Price | None:
    found = None
    for price in versions:
        if price.effective_from > at:
            break
        found = price
    return found


def price_usage(items: Mapping[str, float], prices: Mapping[str, Price], *,
                is_charged: bool = True) -> Priced:
    """Lines and total cost of one request's usage. A unit without a price costs nothing and is
    flagged unpriced; an uncharged request (failed) keeps its prices but costs nothing."""
    in_use = [prices[unit] for unit in items if unit in prices]
    currency = (in_use[0] if in_use else next(iter(prices.values()), None))
    currency_code = currency.currency if currency else DEFAULT_CURRENCY
    lines: list[Line] = []
    for unit, quantity in items.items():
        price = prices.get(unit)
        if price is None:
            lines.append(Line(unit, quantity, 0.0, 1.0, currency_code, 0.0, priced=False))
            continue
        cost = price.cost(quantity) if is_charged else 0.0
        lines.append(Line(unit, quantity, price.unit_price, price.per or 1.0, price.currency, cost,
                          priced=True, effective_from=price.effective_from))
    return Priced(tuple(lines), math.fsum(line.cost for line in lines), currency_code)


def price_record(book: PriceBook, *, model_id: str, items: Iterable[tuple[str, float]],
                 at: dt.datetime, status: str, machine_type: str = "",
                 run_time_s: float = 0.0) -> Priced:
    """A finished request priced as of `at` (its finished_at)."""
    billable = billable_items(merge_items(items), machine_type=machine_type, run_time_s=run_time_s)
    return price_usage(billable, book.in_force(model_id, at, machine_type),
                       is_charged=charged(status))


def estimate(items: Mapping[str, float], prices: Mapping[str, Price], calls: int = 1) -> Priced:
    """Planned quantities, times `calls` (0 counts as one call), at the given prices."""
    calls = calls or 1
    return price_usage({unit: q * calls for unit, q in items.items()}, prices)
