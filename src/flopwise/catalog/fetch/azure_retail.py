"""Azure Retail Prices API (https://prices.azure.com/api/retail/prices, no credentials) as a second opinion on the
Azure rows derived from SkyPilot's catalog: it never writes the catalog, it reports where the two disagree.

Response format: Microsoft Learn, "Azure Retail Prices overview"
(https://learn.microsoft.com/rest/api/cost-management/retail-prices/azure-retail-prices): a page is
``{"BillingCurrency", "CustomerEntityId", "CustomerEntityType", "Items": [...], "NextPageLink", "Count"}`` with at
most 100 items and the link to the next page; the page's own examples show bare items. Each item prices one meter
(``retailPrice`` per ``unitOfMeasure``) of one ``armSkuName`` in one ``armRegionName``.

An item is compared with the catalog only when it is a USD, per-hour, Linux, pay-as-you-go price of a virtual
machine: ``serviceName`` "Virtual Machines", ``currencyCode`` "USD", ``unitOfMeasure`` "1 Hour", ``type``
"Consumption" (not "DevTestConsumption" nor "Reservation"), a ``productName`` without "Windows" (Windows meters
include the licence), and a ``meterName`` that is not "Low Priority". A meter name ending in " Spot" is the spot
price, any other the on-demand price. Every other item is counted as skipped, by reason; an item without one of
the fields the comparison reads, or with a price that is not a number >= 0, is an error naming the item.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from flopwise.catalog.fetch.table import FetchError

__all__ = ["AGREE_FRAC", "Disagreement", "RetailPrice", "SecondOpinion", "compare", "parse_retail_prices"]

#: prices closer than this fraction of the catalog's are taken to agree
AGREE_FRAC = Decimal(1) / 100  # 1%, a fraction of the catalog price (not a money step)
_FIELDS = (
    "currencyCode",
    "retailPrice",
    "armRegionName",
    "armSkuName",
    "type",
    "unitOfMeasure",
    "meterName",
    "productName",
    "serviceName",
)


@dataclass(frozen=True)
class RetailPrice:
    """One comparable item: the hourly USD price of *column* for the catalog offering *offering_id*."""

    offering_id: str
    column: str  # "on_demand_usd_per_h" | "spot_usd_per_h"
    usd_per_h: Decimal
    item: int
    meter: str


@dataclass(frozen=True)
class Disagreement:
    offering_id: str
    column: str
    catalog_usd_per_h: Decimal
    retail_usd_per_h: Decimal
    frac: Decimal
    item: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "offering_id": self.offering_id,
            "column": self.column,
            "catalog_usd_per_h": str(self.catalog_usd_per_h),
            "retail_usd_per_h": str(self.retail_usd_per_h),
            "frac": str(self.frac),
            "item": self.item,
        }


@dataclass
class SecondOpinion:
    """What the second source said about the catalog: items read, skipped by reason, compared, disagreements."""

    source: str
    items: int = 0
    skipped: Counter = field(default_factory=Counter)
    prices: list[RetailPrice] = field(default_factory=list)
    compared: int = 0
    agree: int = 0
    not_in_catalog: int = 0
    disagreements: list[Disagreement] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "items": self.items,
            "skipped": dict(self.skipped),
            "comparable": len(self.prices),
            "not_in_catalog": self.not_in_catalog,
            "compared": self.compared,
            "agree": self.agree,
            "disagreements": [d.to_dict() for d in self.disagreements],
        }


def _items(source: str, location: str, text: str) -> tuple[list[Any], str | None]:
    try:
        data = json.loads(text)
    except ValueError as err:
        raise FetchError(source, location, None, None, f"is not JSON ({err}); the download may be truncated") from None
    if isinstance(data, Mapping) and "Items" in data:
        items, nxt = data["Items"], data.get("NextPageLink")
        if not isinstance(items, list):
            raise FetchError(source, location, None, "Items", "is not a list of price items")
        return items, nxt if isinstance(nxt, str) and nxt else None
    if isinstance(data, list):
        return data, None
    if isinstance(data, Mapping):
        return [data], None  # one bare item, as in the documentation's examples
    raise FetchError(source, location, None, None, "is neither a price page, a list of items nor one item")


def parse_retail_prices(
    source: str, location: str, text: str, *, into: SecondOpinion | None = None, first_item: int = 1
) -> tuple[SecondOpinion, str | None]:
    """Read one response (page) of the Azure Retail Prices API; returns the result and the next page's link.

    Items are numbered from *first_item* across pages, so an error names the item (``FetchError.line``).
    """
    out = into if into is not None else SecondOpinion(source)
    items, next_link = _items(source, location, text)
    for n, item in enumerate(items, start=first_item):
        out.items += 1
        if not isinstance(item, Mapping):
            raise FetchError(source, location, n, None, f"item {n} is not an object")
        missing = [f for f in _FIELDS if f not in item]
        if missing:
            raise FetchError(
                source, location, n, missing[0],
                f"item {n} lacks {', '.join(missing)}; the API changed its format, so nothing is compared",
            )  # fmt: skip
        raw = item["retailPrice"]  # checked on every item, so a broken one never hides behind a skip
        try:
            price = Decimal(str(raw))
        except InvalidOperation:
            raise FetchError(source, location, n, "retailPrice", f"item {n}: {raw!r} is not a price") from None
        if not price.is_finite() or price < 0:
            raise FetchError(source, location, n, "retailPrice", f"item {n}: {raw!r} is not a price >= 0")
        reason = _skip_reason(item)
        if reason:
            out.skipped[reason] += 1
            continue
        meter = str(item["meterName"])
        column = "spot_usd_per_h" if meter.endswith(" Spot") else "on_demand_usd_per_h"
        offering_id = f"azure:{item['armSkuName']}:{item['armRegionName']}"
        out.prices.append(RetailPrice(offering_id, column, price, n, meter))
    return out, next_link


def _skip_reason(item: Mapping[str, Any]) -> str | None:
    if item["serviceName"] != "Virtual Machines":
        return "not a virtual machine"
    if item["currencyCode"] != "USD":
        return "not in USD"
    if item["unitOfMeasure"] != "1 Hour":
        return "not priced per hour"
    if item["type"] != "Consumption":
        return f"{item['type']} price (not pay-as-you-go)"
    if "Windows" in str(item["productName"]):
        return "Windows (licence included)"
    if str(item["meterName"]).endswith("Low Priority"):
        return "Low Priority meter"
    return None


def compare(
    opinion: SecondOpinion, catalog_rows: Mapping[str, Mapping[str, str]], agree_frac: Decimal = AGREE_FRAC
) -> SecondOpinion:
    """Compare every comparable price with the catalog row of the same offering id and column (rows as read from
    the offerings CSV); a relative difference above *agree_frac* of the catalog's price is a disagreement."""
    for p in opinion.prices:
        row = catalog_rows.get(p.offering_id)
        cell = (row or {}).get(p.column, "")
        if row is None or not cell:
            opinion.not_in_catalog += 1
            continue
        ours = Decimal(cell)
        opinion.compared += 1
        frac = abs(p.usd_per_h - ours) / ours if ours else (Decimal(0) if p.usd_per_h == 0 else Decimal(1))
        if frac > agree_frac:
            opinion.disagreements.append(
                Disagreement(p.offering_id, p.column, ours, p.usd_per_h, round(frac, 4), p.item)
            )
        else:
            opinion.agree += 1
    return opinion


def read_pages(
    source: str, first: str, fetch: Any, *, max_pages: int = 5000
) -> SecondOpinion:
    """Every page from *first* on, following ``NextPageLink`` (only for http(s) pages); *fetch(location)* -> text."""
    opinion = SecondOpinion(source)
    location: str | None = first
    pages = 0
    while location is not None:
        pages += 1
        if pages > max_pages:
            raise FetchError(source, location, None, None, f"more than {max_pages} pages; narrow the $filter")
        opinion, nxt = parse_retail_prices(
            source, location, fetch(location), into=opinion, first_item=opinion.items + 1
        )
        location = nxt if nxt and location.startswith(("http://", "https://")) else None
    return opinion


def rows_by_id(rows: Iterable[Mapping[str, str]]) -> dict[str, Mapping[str, str]]:
    return {r["id"]: r for r in rows}
