"""AWS Price List as a second opinion on the AWS rows derived from SkyPilot's catalog: like ``azure-retail`` it
never writes the catalog, it reports where the two disagree (more than 1%).

Two documented shapes of the same product records are read:

- a Price List Query API ``GetProducts`` response (AWS Billing and Cost Management API Reference,
  https://docs.aws.amazon.com/aws-cost-management/latest/APIReference/API_pricing_GetProducts.html):
  ``{"FormatVersion", "NextToken", "PriceList": [...]}`` where each ``PriceList`` entry is one product as a JSON
  string (or object): ``{"product": {"productFamily", "attributes", "sku"}, "serviceCode", "terms": {"OnDemand":
  {<sku>.<offerTermCode>: {"priceDimensions": {<rateCode>: {"unit", "pricePerUnit": {"USD": ...}}}}}}}``. The
  Query API needs signed (credentialed) requests, so ``NextToken`` is not followed: a saved response is read;
- a bulk price list file (AWS Billing User Guide, "Reading the service price list file for an AWS service",
  https://docs.aws.amazon.com/awsaccountbilling/latest/aboutv2/reading-service-price-list-file-for-services.html):
  ``{"offerCode", "products": {<sku>: product}, "terms": {"OnDemand": {<sku>: {<sku>.<code>: term}}}}``, which
  needs no credentials; a real fetch reads the us-east-1 EC2 file (several hundred MB).

A product is compared with the catalog only when it is the hourly USD on-demand price of a shared-tenancy Linux
instance with no pre-installed software (``productFamily`` "Compute Instance" or "Compute Instance (bare
metal)", ``operatingSystem`` "Linux", ``tenancy`` "Shared", ``preInstalledSw`` "NA", ``capacitystatus`` "Used"
where given) in an AWS Region the region registry knows (``regionCode``, or ``location`` as AWS names it). The
Price List has no spot prices (the same guide: "this catalog doesn't include Amazon EC2 Spot Instances"), so
only ``on_demand_usd_per_h`` is compared. Every other product is counted as skipped, by reason; a product without
the fields the comparison reads, or with a price that is not a number >= 0, is an error naming the product.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from flopwise.catalog.fetch.azure_retail import RetailPrice, SecondOpinion
from flopwise.catalog.fetch.table import FetchError

__all__ = ["INSTANCE_FAMILIES", "parse_price_list", "region_names"]

INSTANCE_FAMILIES = ("Compute Instance", "Compute Instance (bare metal)")
_PRODUCT_FIELDS = ("productFamily", "attributes", "sku")


def region_names(registry: Iterable[tuple[str, str]]) -> dict[str, str]:
    """AWS location name -> region code, from (region id, registry name) pairs such as
    ("aws:ap-southeast-1", "AWS Asia Pacific (Singapore)")."""
    out = {}
    for rid, name in registry:
        if rid.startswith("aws:") and name.startswith("AWS "):
            out[name[len("AWS ") :]] = rid.split(":", 1)[1]
    return out


def _records(source: str, location: str, text: str) -> Iterator[tuple[int, Any]]:
    try:
        data = json.loads(text)
    except ValueError as err:
        raise FetchError(source, location, None, None, f"is not JSON ({err}); the download may be truncated") from None
    if isinstance(data, Mapping) and "PriceList" in data:
        entries = data["PriceList"]
        if not isinstance(entries, list):
            raise FetchError(source, location, None, "PriceList", "is not a list of products")
        for n, entry in enumerate(entries, start=1):
            if isinstance(entry, str):
                try:
                    entry = json.loads(entry)
                except ValueError as err:
                    raise FetchError(
                        source, location, n, "PriceList", f"product {n} is not a JSON document ({err})"
                    ) from None
            yield n, entry
        return
    if isinstance(data, Mapping) and "products" in data and "terms" in data:
        products, terms = data["products"], data["terms"]
        if not isinstance(products, Mapping) or not isinstance(terms, Mapping):
            raise FetchError(source, location, None, "products", "products and terms must be objects")
        on_demand = terms.get("OnDemand") or {}
        for n, (sku, product) in enumerate(products.items(), start=1):
            yield n, {"product": product, "terms": {"OnDemand": on_demand.get(sku, {})}}
        return
    raise FetchError(
        source,
        location,
        None,
        None,
        "is neither a GetProducts response (PriceList) nor a price list file (products and terms)",
    )


def _hourly_usd(source: str, location: str, n: int, terms: Any) -> list[Decimal]:
    """Every on-demand hourly USD price of one product; each price is validated, whatever its unit."""
    if not isinstance(terms, Mapping):
        raise FetchError(source, location, n, "terms", f"product {n}: terms is not an object")
    on_demand = terms.get("OnDemand") or {}
    prices = []
    for term in on_demand.values() if isinstance(on_demand, Mapping) else ():
        dims = term.get("priceDimensions") if isinstance(term, Mapping) else None
        if not isinstance(dims, Mapping):
            raise FetchError(source, location, n, "priceDimensions", f"product {n}: an on-demand term has none")
        for dim in dims.values():
            per_unit = dim.get("pricePerUnit") if isinstance(dim, Mapping) else None
            if not isinstance(per_unit, Mapping):
                raise FetchError(source, location, n, "pricePerUnit", f"product {n}: a price dimension has none")
            for currency, raw in per_unit.items():
                try:
                    price = Decimal(str(raw))
                except InvalidOperation:
                    raise FetchError(
                        source, location, n, "pricePerUnit", f"product {n}: {raw!r} is not a price"
                    ) from None
                if not price.is_finite() or price < 0:
                    raise FetchError(source, location, n, "pricePerUnit", f"product {n}: {raw!r} is not a price >= 0")
                if currency == "USD" and dim.get("unit") == "Hrs":
                    prices.append(price)
    return prices


def parse_price_list(
    source: str, location: str, text: str, *, regions: Mapping[str, str], known_regions: Iterable[str]
) -> SecondOpinion:
    """The comparable prices of one GetProducts response or price list file.

    *regions* maps AWS location names to region codes (:func:`region_names`); *known_regions* are the region ids
    of the registry (``aws:us-east-1`` ...). Products are numbered from 1, so an error names the product.
    """
    known = set(known_regions)
    out = SecondOpinion(source)
    for n, record in _records(source, location, text):
        out.items += 1
        if not isinstance(record, Mapping) or not isinstance(record.get("product"), Mapping):
            raise FetchError(source, location, n, "product", f"product {n} has no product object")
        product = record["product"]
        missing = [f for f in _PRODUCT_FIELDS if f not in product]
        if missing or "terms" not in record:
            field_name = missing[0] if missing else "terms"
            raise FetchError(
                source, location, n, field_name,
                f"product {n} lacks {field_name}; the format changed, so nothing is compared",
            )  # fmt: skip
        prices = _hourly_usd(source, location, n, record["terms"])  # validated before any skip
        attrs = product["attributes"]
        if not isinstance(attrs, Mapping):
            raise FetchError(source, location, n, "attributes", f"product {n}: attributes is not an object")
        reason = _skip_reason(product["productFamily"], attrs)
        region = None
        if reason is None:
            region = attrs.get("regionCode") or regions.get(str(attrs.get("location", "")))
            if not region or f"aws:{region}" not in known:
                reason = "region not in the region registry"
        if reason is None and not prices:
            reason = "no hourly USD on-demand price"
        if reason is not None:
            out.skipped[reason] += 1
            continue
        instance_type = attrs.get("instanceType")
        if not instance_type:
            raise FetchError(source, location, n, "instanceType", f"product {n} is an instance without instanceType")
        for price in prices:
            out.prices.append(
                RetailPrice(f"aws:{instance_type}:{region}", "on_demand_usd_per_h", price, n, str(product["sku"]))
            )
    return out


def _skip_reason(family: Any, attrs: Mapping[str, Any]) -> str | None:
    if family not in INSTANCE_FAMILIES:
        return f"{family} (not an instance)"
    if attrs.get("operatingSystem") != "Linux":
        return "not Linux (licence included)"
    if attrs.get("tenancy") != "Shared":
        return "not shared tenancy"
    if attrs.get("preInstalledSw", "NA") != "NA":
        return "pre-installed software"
    if attrs.get("capacitystatus", "Used") != "Used":
        return "capacity reservation line"
    return None
