"""The prices table: seeded from the catalog at start, extended by SetPrice, read as a PriceBook.

Rows are only ever added. Writers and the ledger coordinate through table locks so that a price
set "now" can never miss a record finishing after it: the ledger prices a batch under a SHARE
lock, and a new price takes its effective_from only once it holds a lock that excludes it.
"""
from __future__ import annotations

import datetime as dt
import logging
import math

import asyncpg

from genmesh.catalog import Catalog
from genmesh.errors import InvalidArgument
from genmesh.pricing import BEGINNING, DEFAULT_CURRENCY, DEFAULT_MACHINE_PRICES, RUNNER_SECONDS, \
    UNITS, Price, PriceBook

log = logging.getLogger("genmesh.billing.prices")

CATALOG = "catalog"
ADMIN = "admin"
_COLUMNS = "model_id, machine_type, unit, unit_price, per, currency, effective_from"
_LATEST = (f"SELECT DISTINCT ON (model_id, machine_type, unit) {_COLUMNS}, source FROM prices "
           "ORDER BY model_id, machine_type, unit, effective_from DESC, id DESC")


def _price(row: asyncpg.Record) -> Price:
    return Price(unit=row["unit"], unit_price=row["unit_price"], per=row["per"],
                 currency=row["currency"], model_id=row["model_id"],
                 machine_type=row["machine_type"], effective_from=row["effective_from"])


def catalog_prices(catalog: Catalog) -> list[Price]:
    """What the catalog (and the default machine rates for apps) says prices should be."""
    wanted = [Price(unit=p.unit, unit_price=p.unit_price, per=p.per or 1.0, currency=p.currency,
                    model_id=m.id) for m in catalog for p in m.prices]
    wanted += [Price(unit=RUNNER_SECONDS, unit_price=rate, machine_type=machine)
               for machine, rate in DEFAULT_MACHINE_PRICES.items()]
    return wanted


def validate_price(model_id: str, machine_type: str, unit: str, unit_price: float, per: float,
                   currency: str) -> Price:
    """A SetPrice request as a Price, or InvalidArgument naming the field."""
    if not model_id and not machine_type:
        raise InvalidArgument("is required (or machine_type, for the default price of apps on "
                              "a machine type)", field="model_id")
    if model_id and (len(model_id) > 256 or model_id != model_id.strip() or "/" not in model_id):
        raise InvalidArgument("must be a model id such as 'owner/name'", field="model_id")
    if len(machine_type) > 64:
        raise InvalidArgument("must be at most 64 characters", field="machine_type")
    if unit not in UNITS:
        raise InvalidArgument(f"must be one of {', '.join(UNITS)}", field="price.unit")
    if not math.isfinite(unit_price) or unit_price < 0:
        raise InvalidArgument("must be a finite number >= 0", field="price.unit_price")
    if not math.isfinite(per) or per < 0:
        raise InvalidArgument("must be a finite number > 0 (0 means 1)", field="price.per")
    currency = currency or DEFAULT_CURRENCY
    if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
        raise InvalidArgument("must be a 3-letter ISO 4217 code such as USD", field="price.currency")
    return Price(unit=unit, unit_price=unit_price, per=per or 1.0, currency=currency,
                 model_id=model_id, machine_type=machine_type)


class PriceStore:
    def __init__(self, pool: asyncpg.Pool, catalog: Catalog) -> None:
        self.pool = pool
        # Records name models as callers did ("gpt-4o-mini"); price them as the model serving it.
        self.aliases = {alias: m.id for m in catalog for alias in m.default_for}
        self.catalog = catalog

    async def seed(self) -> int:
        """Brings the table in line with the catalog; returns the rows added.

        A (model, unit) never priced gets the catalog price in force since always. One whose
        latest price came from the catalog follows a changed catalog from now on. One an admin
        priced keeps the admin's price: a restart never undoes SetPrice.
        """
        added = 0
        async with self.pool.acquire() as conn, conn.transaction():
            # Self-exclusive: billing replicas starting together seed once.
            await conn.execute("LOCK TABLE prices IN SHARE ROW EXCLUSIVE MODE")
            latest = {(r["model_id"], r["machine_type"], r["unit"]): r
                      for r in await conn.fetch(_LATEST)}
            for want in catalog_prices(self.catalog):
                row = latest.get((want.model_id, want.machine_type, want.unit))
                if row is None:
                    effective: dt.datetime | None = BEGINNING
                elif row["source"] == CATALOG and not _price(row).same_terms(want):
                    effective = None  # now
                else:
                    continue
                await conn.execute(
                    "INSERT INTO prices (model_id, machine_type, unit, unit_price, per, currency, "
                    "effective_from, source) VALUES ($1,$2,$3,$4,$5,$6,COALESCE($7, clock_timestamp()),$8)",
                    want.model_id, want.machine_type, want.unit, want.unit_price, want.per,
                    want.currency, effective, CATALOG)
                added += 1
        if added:
            log.info("prices seeded from the catalog", extra={"rows": added})
        return added

    async def book(self, conn: asyncpg.Connection | None = None, *, lock: bool = False) -> PriceBook:
        """Every price ever set. With `lock` (inside the caller's transaction) no price can be
        added until that transaction ends."""
        if conn is None:
            async with self.pool.acquire() as own:
                return await self.book(own)
        if lock:
            await conn.execute("LOCK TABLE prices IN SHARE MODE")
        rows = await conn.fetch(f"SELECT {_COLUMNS} FROM prices ORDER BY effective_from, id")
        return PriceBook((_price(r) for r in rows), self.aliases)

    async def set(self, price: Price, *, set_by: str) -> Price:
        """Adds `price`, in force from now on."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE prices IN SHARE ROW EXCLUSIVE MODE")
            # One currency per model: a request's cost is a single amount.
            others = await conn.fetch(
                f"SELECT currency, unit FROM ({_LATEST}) latest "
                "WHERE model_id=$1 AND machine_type=$2 AND unit<>$3 AND currency<>$4",
                price.model_id, price.machine_type, price.unit, price.currency)
            if others:
                raise InvalidArgument(
                    f"must match the currency of this model's other prices ({others[0]['currency']} "
                    f"for {others[0]['unit']})", field="price.currency")
            row = await conn.fetchrow(
                "INSERT INTO prices (model_id, machine_type, unit, unit_price, per, currency, "
                "effective_from, source, set_by) "
                f"VALUES ($1,$2,$3,$4,$5,$6,clock_timestamp(),$7,$8) RETURNING {_COLUMNS}",
                price.model_id, price.machine_type, price.unit, price.unit_price, price.per,
                price.currency, ADMIN, set_by)
        log.info("price set", extra={"model_id": price.model_id, "machine_type": price.machine_type,
                                     "unit": price.unit, "unit_price": price.unit_price,
                                     "per": price.per, "api_key_id": set_by})
        return _price(row)
