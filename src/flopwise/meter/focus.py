"""FOCUS 1.0-1.2 billing files (CSV or Parquet) -> UsageRecords.

FOCUS, the FinOps Open Cost and Usage Specification (https://focus.finops.org/), names the columns of a
cloud bill. This module reads any FOCUS 1.0, 1.1 or 1.2 file, detects the version from its columns,
keeps every column that has no UsageRecord field in ``x_extra`` (under its own name, so nothing is lost
and the row can be written back), and recognises accelerator rows by instance type through the
catalog's offerings (``p5.48xlarge`` -> 8 x ``h100-sxm``), filling ``x_device_type``,
``x_device_count`` and ``x_device_hours``.

Parsers stream: a CSV is read row by row from an iterable of lines, a Parquet file batch by batch.
Malformed rows become ``RejectedRow``s in the ``ParseReport`` (line number and reason); a file that
cannot be understood at all raises one ``IngestError``. See docs/ingest/focus.md.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flopwise.errors import CatalogError, IngestError, InputError
from flopwise.meter.bounds import check_device_count, check_money, check_utilization_frac
from flopwise.meter.record import FOCUS_NAMES, RejectedRow, UsageRecord

if TYPE_CHECKING:
    from flopwise.catalog import Catalog

__all__ = [
    "FOCUS_1_0_COLUMNS",
    "FOCUS_1_1_ADDED",
    "FOCUS_1_2_ADDED",
    "FOCUS_REQUIRED",
    "InstanceTypeIndex",
    "ParseReport",
    "detect_focus_version",
    "focus_csv_lines",
    "parse_focus",
    "parse_focus_file",
    "parse_focus_parquet",
]

#: FOCUS 1.0 columns, https://focus.finops.org/focus-specification/v1-0/
FOCUS_1_0_COLUMNS = frozenset(
    {
        "AvailabilityZone", "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
        "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription",
        "ChargeFrequency", "ChargePeriodEnd", "ChargePeriodStart", "CommitmentDiscountCategory",
        "CommitmentDiscountId", "CommitmentDiscountName", "CommitmentDiscountStatus",
        "CommitmentDiscountType", "ConsumedQuantity", "ConsumedUnit", "ContractedCost",
        "ContractedUnitPrice", "EffectiveCost", "InvoiceIssuerName", "ListCost", "ListUnitPrice",
        "PricingCategory", "PricingQuantity", "PricingUnit", "ProviderName", "PublisherName", "RegionId",
        "RegionName", "ResourceId", "ResourceName", "ResourceType", "ServiceCategory", "ServiceName",
        "SkuId", "SkuPriceId", "SubAccountId", "SubAccountName", "Tags",
    }
)  # fmt: skip
#: columns FOCUS 1.1 added, https://focus.finops.org/focus-specification/v1-1/
FOCUS_1_1_ADDED = frozenset(
    {
        "CapacityReservationId", "CapacityReservationStatus", "CommitmentDiscountQuantity",
        "CommitmentDiscountUnit", "ServiceSubcategory", "SkuMeter", "SkuPriceDetails",
    }
)  # fmt: skip
#: columns FOCUS 1.2 added, https://focus.finops.org/focus-specification/v1-2/
FOCUS_1_2_ADDED = frozenset(
    {
        "BillingAccountType", "InvoiceId", "PricingCurrency", "PricingCurrencyContractedUnitPrice",
        "PricingCurrencyEffectiveCost", "PricingCurrencyListUnitPrice", "SubAccountType",
    }
)  # fmt: skip
_KNOWN_COLUMNS = FOCUS_1_0_COLUMNS | FOCUS_1_1_ADDED | FOCUS_1_2_ADDED

#: columns without which a row cannot enter the ledger (all mandatory in FOCUS 1.0-1.2)
FOCUS_REQUIRED = ("BilledCost", "BillingCurrency", "ChargePeriodEnd", "ChargePeriodStart", "ProviderName")

#: columns that measure a row rather than identify it: excluded from the idempotency key, so a
#: restated cost for the same charge keeps its key and replaces the old one in the store
_MEASURE_COLUMNS = frozenset(
    {
        "BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ListUnitPrice", "ContractedUnitPrice",
        "ConsumedQuantity", "PricingQuantity", "CommitmentDiscountQuantity", "PricingCurrencyEffectiveCost",
        "PricingCurrencyContractedUnitPrice", "PricingCurrencyListUnitPrice",
    }
)  # fmt: skip
#: names of measure columns outside FOCUS (raw exports, provider x_ columns): also kept out of the key
_MEASURE_NAME = re.compile(r"(?i)cost|price|quantity|amount|rate$")
_TIME_COLUMNS = frozenset({"ChargePeriodStart", "ChargePeriodEnd", "BillingPeriodStart", "BillingPeriodEnd"})
_MONEY_COLUMNS = {"BilledCost": "billed_cost", "EffectiveCost": "effective_cost", "ListCost": "list_cost"}
_TEXT_FIELDS = {
    "BillingCurrency": "billing_currency",
    "ProviderName": "provider_name",
    "RegionId": "region_id",
    "ResourceId": "resource_id",
    "ServiceCategory": "service_category",
    "SkuId": "sku_id",
}
#: flopwise's own x_ columns (see record.FOCUS_NAMES); read back when a file carries them
_COMPUTE_COLUMNS = {v: k for k, v in FOCUS_NAMES.items() if v.startswith("x_")}
#: columns that become UsageRecord fields; every other column is kept in x_extra
_RECORD_COLUMNS = frozenset(
    {*_MONEY_COLUMNS, *_TEXT_FIELDS, *_COMPUTE_COLUMNS, "ChargePeriodStart", "ChargePeriodEnd", "Tags"}
)
_NULLS = frozenset({"", "NULL", "null", "None"})
#: the ledger's own columns a flopwise FOCUS export adds (``meter.export.EXPORT_EXTRA_COLUMNS``): derived from
#: the ledger, not bill data, so not kept in ``x_extra`` when the export is read back (``x_SourceKey`` is the key)
_EXPORT_BOOKKEEPING = frozenset(
    {"x_CostUsd", "x_CostBasis", "x_EnergyBasis", "x_IdleDeviceHours", "x_IdleCostUsd", "x_OrgId", "x_TeamId",
     "x_ProjectId", "x_SourceKey"}
)  # fmt: skip
#: columns searched for an instance type (FOCUS 1.0-1.2 plus the x_ columns providers and our raw mappers add)
_INSTANCE_TEXT_COLUMNS = (
    "x_InstanceType", "x_UsageType", "ResourceType", "SkuMeter", "SkuPriceDetails", "ChargeDescription",
    "ResourceName",
)  # fmt: skip
_HOUR_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)?\s*(?:instance[- ]?)?(?:hours?|hrs?)\s*$", re.IGNORECASE)
_DELIMITERS = (",", ";", "\t", "|")
#: entries InstanceTypeIndex.find keeps before it starts over (bounds memory on free-text columns)
_FIND_CACHE_MAX = 65536
#: tag keys that carry a flopwise request id or a job id (first match wins)
REQUEST_ID_TAGS = ("flopwise-request-id", "flopwise_request_id", "flopwise:request-id", "flopwise/request-id")
JOB_ID_TAGS = ("flopwise-job-id", "flopwise_job_id", "job-id", "job_id")


@dataclass
class ParseReport:
    """What a parse read, kept and rejected. Filled in while the generator runs; complete when it ends.

    ``rows_read == records + len(rejected)`` holds for every parser in this package (the reconciliation
    invariant); ``version`` is the detected format version (FOCUS "1.0" | "1.1" | "1.2", or the raw export's
    name); ``unknown_columns`` lists input columns outside the format, kept in ``x_extra``.
    """

    path: str = "<input>"
    source: str = ""
    version: str = ""
    rows_read: int = 0
    records: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    unknown_columns: tuple[str, ...] = ()

    def reject(self, line: int, reason: str, raw: str = "") -> None:
        self.rejected.append(RejectedRow(self.path, line, reason, raw[:500]))

    @property
    def reconciles(self) -> bool:
        return self.rows_read == self.records + len(self.rejected)

    @classmethod
    def begin(
        cls, report: ParseReport | None, rejected: list[RejectedRow] | None, path: str, source: str
    ) -> ParseReport:
        """The report a parser fills: *report* or a new one, appending to *rejected* when the caller gives a
        list (the ``rejected=`` convention that ``parse_sacct`` and ``parse_dcgm_scrape`` share)."""
        report = report if report is not None else cls()
        report.path, report.source = path, source
        if rejected is not None:
            report.rejected = rejected
        return report


# --- value parsing (shared with cloud_exports and opencost) ----------------------------------------------


class RowError(ValueError):
    """One row's value is bad; the message becomes the RejectedRow reason."""


def resolve_tz(assume_tz: str | tzinfo | None) -> tzinfo | None:
    """The zone for timestamps that carry none: None (reject them), a tzinfo, or an IANA name ("UTC")."""
    if assume_tz is None or isinstance(assume_tz, tzinfo):
        return assume_tz
    if assume_tz.upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(assume_tz)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise InputError(
            "assume_tz", assume_tz, "give an IANA time zone such as 'UTC' or 'Europe/Paris'"
        ) from err


def parse_timestamp(column: str, text: str, assume_tz: tzinfo | None) -> datetime:
    """An ISO 8601 timestamp as an aware UTC datetime. Without a zone it is read in *assume_tz*, or rejected."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RowError(f"{column} {text!r} is not an ISO 8601 timestamp") from None
    if value.tzinfo is None:
        if assume_tz is None:
            raise RowError(
                f"{column} {text!r} has no time zone; FOCUS timestamps are UTC - pass assume_tz='UTC' "
                "(flopwise ingest --assume-tz UTC) to read it so"
            )
        value = value.replace(tzinfo=assume_tz)
    return value.astimezone(UTC)


@functools.lru_cache(maxsize=65536)
def _timestamp_and_text(column: str, text: str, assume_tz: tzinfo | None) -> tuple[datetime, str]:
    """``parse_timestamp`` and its ``format_timestamp`` text, cached: a bill repeats each hour over many rows
    (datetimes and strings are immutable, so sharing them between records changes nothing)."""
    value = parse_timestamp(column, text, assume_tz)
    return value, format_timestamp(value)


def format_timestamp(value: datetime) -> str:
    """UTC ISO 8601 with a Z, the form FOCUS uses."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_decimal(column: str, text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise RowError(f"{column} {text!r} is not a number") from None
    if not value.is_finite():
        raise RowError(f"{column} {text!r} is not a finite number")
    return value


def _bounded_money(column: str, value: Decimal) -> Decimal:
    """*value* within what the store holds (``flopwise.meter.bounds.check_money``), else a RowError."""
    try:
        check_money(value, column)
    except ValueError as err:
        raise RowError(str(err)) from None
    return value


def parse_float(column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RowError(f"{column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise RowError(f"{column} {text!r} is not a finite number")
    return value


def parse_tags(text: str) -> dict[str, str]:
    """A FOCUS Tags JSON object, or Azure's brace-less ``"k": "v","k2": "v2"``; values become strings."""
    return dict(_tags_and_canonical(text)[0])


@functools.lru_cache(maxsize=4096)
def _tags_and_canonical(text: str) -> tuple[tuple[tuple[str, str], ...], str]:
    """The tags of a Tags text (as ``parse_tags`` reads them) and their canonical JSON (sorted keys), or
    ``""`` when there are none. Cached: a bill repeats a few tag sets over many rows, and the cache holds
    only immutable values (each caller builds its own dict)."""
    tags = _parse_tags_uncached(text)
    return tuple(tags.items()), (_TAGS_ENCODER.encode(tags) if tags else "")


@functools.lru_cache(maxsize=4096)
def _tag_ids(text: str) -> tuple[str | None, str | None]:
    """The request id and job id tags (``REQUEST_ID_TAGS``, ``JOB_ID_TAGS``) of a Tags text, cached with it."""
    tags = dict(_tags_and_canonical(text)[0])
    return _first_tag(tags, REQUEST_ID_TAGS), _first_tag(tags, JOB_ID_TAGS)


#: the encoders of json.dumps(..., sort_keys=True, ensure_ascii=False) and of canonical_key, built once
_TAGS_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False)
_KEY_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
#: the string encoder json uses with ensure_ascii=False (C-accelerated)
_json_str = json.encoder.encode_basestring


def _parse_tags_uncached(text: str) -> dict[str, str]:
    text = text.strip()
    if not text.startswith("{"):
        text = "{" + text + "}"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        raise RowError(f"Tags {text[:80]!r} is not a JSON object") from None
    if not isinstance(obj, dict):
        raise RowError(f"Tags {text[:80]!r} is not a JSON object")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in obj.items()}


def canonical_key(prefix: str, identity: Mapping[str, str]) -> str:
    """``prefix:`` + sha256 of the identifying columns, sorted by name, as one JSON text (first 32 hex)."""
    items = sorted(identity.items())
    # the text _KEY_ENCODER.encode(items) writes, built from json's own string encoder (twice as fast)
    try:
        pairs = [_json_str(k) + "," + _json_str(v) for k, v in items]
    except TypeError:  # a value that is not a string: let json write it
        text = _KEY_ENCODER.encode(items)
    else:
        text = "[[" + "],[".join(pairs) + "]]" if pairs else "[]"
    return f"{prefix}:{hashlib.sha256(text.encode()).hexdigest()[:32]}"


class KeyDeduper:
    """Makes keys unique within one input: the n-th row with an identity already seen gets ``#n``.

    Two byte-identical rows in one bill are two charges, not one; the suffix keeps both, and re-reading
    the same file gives the same suffixes, so ingestion stays idempotent. Holds one counter per key.
    """

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def __call__(self, key: str) -> str:
        n = self._seen.get(key, 0) + 1
        self._seen[key] = n
        return key if n == 1 else f"{key}#{n}"


@functools.lru_cache(maxsize=1024)
def hours_per_unit(unit: str | None) -> float | None:
    """Hours in one unit of an hour-like unit ("Hours", "Hrs", "1 Hour", "10 Hours"), else None."""
    if not unit:
        return None
    match = _HOUR_UNIT.match(unit)
    if match is None:
        return None
    return float(match.group(1)) if match.group(1) else 1.0


class InstanceTypeIndex:
    """Finds a catalog offering's instance type in free text and gives its accelerator and count.

    Built from the catalog's offerings (CPU-only instances are left out). Names are compared lower-case
    with spaces and underscores made equal and Azure's ``Standard_`` prefix dropped, so
    ``Standard_ND96isr_H100_v5`` also matches the meter text ``ND96isr H100 v5``.
    """

    def __init__(self, catalog: Catalog) -> None:
        self._by_name: dict[str, tuple[str, int]] = {}
        for offering in catalog.offerings:
            device = catalog.devices.get(offering.device_id)
            if device is None or device.kind == "cpu":
                continue
            self._by_name[self.normalize(offering.instance_type)] = (
                offering.device_id,
                offering.device_count,
            )
        #: find()'s answers by text: bills repeat the same instance types and meter names over many rows
        self._found: dict[str, tuple[str, str, int] | None] = {}
        names = sorted(self._by_name, key=len, reverse=True)
        self._pattern = (
            re.compile(r"(?<![a-z0-9])(" + "|".join(re.escape(n) for n in names) + r")(?![a-z0-9])")
            if names
            else None
        )

    @staticmethod
    def normalize(text: str) -> str:
        text = text.lower().replace(" ", "_")
        return text.removeprefix("standard_")

    def find(self, text: str) -> tuple[str, str, int] | None:
        """(instance type as matched, device id, devices per instance) for the first instance type in *text*."""
        if self._pattern is None or not text:
            return None
        try:
            return self._found[text]
        except KeyError:
            pass
        match = self._pattern.search(self.normalize(text))
        found = None
        if match is not None:
            device_id, count = self._by_name[match.group(1)]
            found = match.group(1), device_id, count
        if len(self._found) >= _FIND_CACHE_MAX:
            self._found.clear()
        self._found[text] = found
        return found


# --- one FOCUS-named row -> UsageRecord -------------------------------------------------------------------


@dataclass
class RowContext:
    """What building records from FOCUS-named rows needs: the source name, zone, catalog lookups and deduper."""

    source: str
    assume_tz: tzinfo | None
    catalog: Catalog | None = None
    instance_index: InstanceTypeIndex | None = None
    dedupe: KeyDeduper = field(default_factory=KeyDeduper)
    #: columns whose values identify the row; None: every non-measure column
    identity_columns: tuple[str, ...] | None = None

    @classmethod
    def build(
        cls, source: str, assume_tz: str | tzinfo | None, catalog: Catalog | None, **kw: Any
    ) -> RowContext:
        index = InstanceTypeIndex(catalog) if catalog is not None else None
        return cls(source, resolve_tz(assume_tz), catalog, index, **kw)

    def device_id(self, name: str) -> str:
        """The catalog id of device *name* when it resolves, else *name* unchanged."""
        if self.catalog is None:
            return name
        try:
            return self.catalog.device(name).id
        except CatalogError:
            return name


def record_from_focus_row(row: Mapping[str, str | None], ctx: RowContext) -> UsageRecord:
    """A UsageRecord from one row keyed by FOCUS column names (raw exports are mapped to this first).

    Raises RowError with the reason when a value is bad.
    """
    # a value that is None, blank or a null word (_NULLS) is absent
    values = {name: v for name, raw in row.items() if raw is not None and (v := raw.strip()) not in _NULLS}
    for column in ("ChargePeriodStart", "ChargePeriodEnd", "BilledCost"):
        if column not in values:
            raise RowError(f"{column} is empty; it is mandatory in FOCUS")
    assume_tz = ctx.assume_tz
    start = _timestamp_and_text("ChargePeriodStart", values["ChargePeriodStart"], assume_tz)[0]
    end = _timestamp_and_text("ChargePeriodEnd", values["ChargePeriodEnd"], assume_tz)[0]
    if end < start:
        raise RowError(f"ChargePeriodEnd {values['ChargePeriodEnd']!r} is before ChargePeriodStart")
    money = {
        attr: _bounded_money(col, parse_decimal(col, values[col]))
        for col, attr in _MONEY_COLUMNS.items()
        if col in values
    }
    for column in ("ContractedCost", "ListUnitPrice", "ContractedUnitPrice", "PricingQuantity"):
        if column in values:
            parse_decimal(column, values[column])
    quantity = (
        parse_decimal("ConsumedQuantity", values["ConsumedQuantity"])
        if "ConsumedQuantity" in values
        else None
    )
    if quantity is not None and quantity < 0 and money["billed_cost"] > 0:
        # a negative quantity is only a reversal (Azure emits these with a negative cost); else it is wrong
        raise RowError(
            f"ConsumedQuantity {values['ConsumedQuantity']!r} is negative while BilledCost "
            f"{values['BilledCost']!r} is positive"
        )
    tags_text = values.get("Tags")
    tags: dict[str, str] = {}
    tags_canon = ""
    if tags_text is not None:
        items, tags_canon = _tags_and_canonical(tags_text)
        tags = dict(items)

    # the canonical text of each column (timestamps as UTC Z, tags as sorted JSON), in one pass
    canon: dict[str, str] = {}
    extra: dict[str, Any] = {}
    for name, value in values.items():
        if name in _TIME_COLUMNS:
            value = _timestamp_and_text(name, value, assume_tz)[1]
        elif name == "Tags":
            if not tags_canon:
                continue
            value = tags_canon
        canon[name] = value
        if name not in _RECORD_COLUMNS and name not in _EXPORT_BOOKKEEPING:
            extra[name] = value

    compute = _compute_fields(values, quantity, ctx)
    if ctx.identity_columns is None:
        identity = {k: v for k, v in canon.items() if _is_identifying(k)}
    else:
        identity = {k: canon[k] for k in ctx.identity_columns if k in canon}
    request_tag = job_tag = None
    if tags:
        request_tag, job_tag = _tag_ids(tags_text)
    # a flopwise FOCUS export carries each record's ledger key: re-ingesting it gives the same ledger
    given_key = (values.get("x_SourceKey") or "").strip()
    return UsageRecord(
        source=ctx.source,
        source_key=given_key[:512] if given_key else ctx.dedupe(canonical_key(ctx.source, identity)),
        charge_period_start=start,
        charge_period_end=end,
        tags=tags,
        x_account=values.get("SubAccountId"),
        x_request_id=values.get("x_RequestId") or request_tag,
        x_job_id=values.get("x_JobId") or job_tag,
        x_extra=extra,
        **money,
        **{attr: values.get(col) for col, attr in _TEXT_FIELDS.items()},
        **compute,
    )


@functools.lru_cache(maxsize=4096)
def _is_identifying(column: str) -> bool:
    """Whether *column* identifies a row (it is not a cost, price, quantity or flopwise compute column)."""
    return (
        column not in _MEASURE_COLUMNS and column not in _COMPUTE_COLUMNS and not _MEASURE_NAME.search(column)
    )


def _first_tag(tags: Mapping[str, str], keys: Iterable[str]) -> str | None:
    lowered = {k.lower(): v for k, v in tags.items()}
    return next((lowered[k] for k in keys if k in lowered), None)


def _compute_fields(values: Mapping[str, str], quantity: Decimal | None, ctx: RowContext) -> dict[str, Any]:
    """x_ device, utilization, energy and CO2e fields: read from x_ columns when the file has them (a
    flopwise export), else derived for accelerator instance rows from the instance type and the hours."""
    out: dict[str, Any] = {}
    # energy a flopwise export marks as estimated is estimated again from the same inputs, keeping its basis
    estimated = values.get("x_EnergyBasis") == "estimated"
    for column in ("x_DeviceCount", "x_DeviceHours", "x_GpuUtilization", "x_EnergyKwh", "x_Co2eKg"):
        if estimated and column in ("x_EnergyKwh", "x_Co2eKg"):
            continue
        if column in values:
            number = parse_float(column, values[column])
            if column != "x_DeviceHours" and number < 0:
                raise RowError(f"{column} {values[column]!r} is negative")
            try:
                if column == "x_DeviceCount":
                    check_device_count(number, column)
                elif column == "x_GpuUtilization":
                    check_utilization_frac(number, column)
            except ValueError as err:
                raise RowError(str(err)) from None
            out[_COMPUTE_COLUMNS[column]] = number
    if "x_DeviceType" in values:
        out["x_device_type"] = ctx.device_id(values["x_DeviceType"])
    if "x_device_type" in out or ctx.instance_index is None:
        return out
    for column in _INSTANCE_TEXT_COLUMNS:
        found = ctx.instance_index.find(values.get(column, ""))
        if found is None:
            continue
        _, device_id, per_instance = found
        out["x_device_type"] = device_id
        out["x_device_count"] = float(per_instance)
        unit_hours = hours_per_unit(values.get("ConsumedUnit") or values.get("PricingUnit"))
        if unit_hours is not None and quantity is not None:
            out["x_device_hours"] = float(quantity) * unit_hours * per_instance
        break
    return out


# --- FOCUS CSV --------------------------------------------------------------------------------------------


def detect_focus_version(columns: Iterable[str]) -> str:
    """ "1.2", "1.1" or "1.0": the newest FOCUS version whose added columns appear in *columns*."""
    present = set(columns)
    if present & FOCUS_1_2_ADDED:
        return "1.2"
    if present & FOCUS_1_1_ADDED:
        return "1.1"
    return "1.0"


def check_focus_columns(columns: list[str], path: str) -> None:
    """Raise one IngestError naming the missing mandatory columns (and the right command for raw exports)."""
    missing = [c for c in FOCUS_REQUIRED if c not in columns]
    if not missing:
        return
    hint = "Export the bill as FOCUS 1.0-1.2, or use the ingester for its raw format."
    if any(c.startswith("lineItem/UsageStartDate") for c in columns):
        hint = "This looks like a raw AWS Cost and Usage Report: use `flopwise ingest aws-cur`."
    elif "CostInBillingCurrency" in columns:
        hint = "This looks like a raw Azure cost export: use `flopwise ingest azure`."
    elif "lineItem/intervalUsageStart" in columns:
        hint = "This looks like a raw OCI cost report: use `flopwise ingest oci`."
    shown = ", ".join(columns[:8]) + (", ..." if len(columns) > 8 else "")
    raise IngestError(
        path,
        1,
        f"not a FOCUS file: missing mandatory column(s) {', '.join(missing)} (header has {shown}). {hint}",
    )


def sniff_delimiter(header_line: str) -> str:
    """The delimiter of a CSV from its header line: the one of , ; TAB | that splits it most."""
    counts = {d: header_line.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def open_csv(
    lines: Iterable[str], path: str, report: ParseReport, delimiter: str | None = None
) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """The header of a CSV and an iterator of (line number, row dict) over its data rows.

    Streams: one row in memory at a time. The header is the first non-blank line; a leading BOM is
    dropped and the delimiter is sniffed from it when not given. Rows that the csv module cannot read
    or that have the wrong number of fields (a truncated line, a stray delimiter) are counted and
    rejected into *report*. Raises IngestError when there is no header or it repeats a column.
    """
    it = iter(lines)
    first = next(it, None)
    while first is not None and not first.strip():
        first = next(it, None)
    if first is None:
        raise IngestError(path, None, "the file is empty; expected a CSV header line")
    first = first.lstrip("\ufeff")
    delimiter = delimiter or sniff_delimiter(first)
    header = [h.strip() for h in next(csv.reader([first], delimiter=delimiter))]
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise IngestError(
            path, 1, f"the header repeats column(s) {', '.join(dupes)}; each column must be unique"
        )
    return header, _csv_data(it, header, delimiter, report)


def _csv_data(
    it: Iterator[str], header: list[str], delimiter: str, report: ParseReport
) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.reader(it, delimiter=delimiter, strict=True)
    while True:
        start_line = reader.line_num + 2  # the header is line 1 and not counted by this reader
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            report.rows_read += 1
            report.reject(start_line, f"malformed CSV: {err}")
            continue
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        report.rows_read += 1
        if len(fields) != len(header):
            what = "truncated?" if len(fields) < len(header) else "a stray delimiter or unquoted value?"
            report.reject(
                start_line,
                f"has {len(fields)} fields, the header has {len(header)} ({what})",
                delimiter.join(fields),
            )
            continue
        yield start_line, dict(zip(header, fields, strict=True))


def parse_focus(
    lines: Iterable[str],
    *,
    path: str = "<input>",
    catalog: Catalog | None = None,
    assume_tz: str | tzinfo | None = None,
    report: ParseReport | None = None,
    rejected: list[RejectedRow] | None = None,
    delimiter: str | None = None,
) -> Iterator[UsageRecord]:
    """UsageRecords from the lines of a FOCUS 1.0-1.2 CSV (``source="focus"``).

    *lines*: any iterable of text lines (an open file, ``io.StringIO``); read lazily, one row at a time.
    *catalog*: when given, instance types resolve to devices and ``x_DeviceType`` names to catalog ids.
    *assume_tz*: the zone of timestamps written without one (FOCUS says UTC, but exports such as the FOCUS
    sample data omit the ``Z``); None rejects such rows with the reason. *delimiter*: sniffed from the
    header when None. *report*: filled with the counts, the version and the rejected rows.

    Raises IngestError when the header lacks a mandatory FOCUS column or the file is empty.
    """
    report = ParseReport.begin(report, rejected, path, "focus")
    ctx = RowContext.build("focus", assume_tz, catalog)
    header, rows = open_csv(lines, path, report, delimiter)
    check_focus_columns(header, path)
    report.version = detect_focus_version(header)
    report.unknown_columns = tuple(h for h in header if h not in _KNOWN_COLUMNS)
    for line, row in rows:
        try:
            record = record_from_focus_row(row, ctx)
        except RowError as err:
            report.reject(line, str(err), ",".join(row.values()))
            continue
        report.records += 1
        yield record


def open_text(path: str | os.PathLike[str]) -> IO[str]:
    p = Path(path)
    if not p.exists():
        raise IngestError(str(p), None, "no such file")
    if p.suffix == ".gz":
        return gzip.open(p, "rt", encoding="utf-8-sig", newline="")
    return open(p, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed by the caller's with


def parse_focus_file(
    path: str | os.PathLike[str],
    *,
    catalog: Catalog | None = None,
    assume_tz: str | tzinfo | None = None,
    report: ParseReport | None = None,
    rejected: list[RejectedRow] | None = None,
) -> Iterator[UsageRecord]:
    """UsageRecords from a FOCUS file on disk: ``.parquet`` (needs pyarrow) or CSV (``.csv``, ``.csv.gz``)."""
    if str(path).endswith(".parquet"):
        yield from parse_focus_parquet(
            path, catalog=catalog, assume_tz=assume_tz, report=report, rejected=rejected
        )
        return
    with open_text(path) as fh:
        try:
            yield from parse_focus(
                fh, path=str(path), catalog=catalog, assume_tz=assume_tz, report=report, rejected=rejected
            )
        except UnicodeDecodeError as err:
            raise IngestError(
                str(path), None, f"not UTF-8 text ({err.reason}); is it a compressed file?"
            ) from None


def _parquet_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict | list):
        if isinstance(value, list) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
            value = dict(value)  # an Arrow map<string,string> comes back as a list of pairs
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def parse_focus_parquet(
    path: str | os.PathLike[str],
    *,
    catalog: Catalog | None = None,
    assume_tz: str | tzinfo | None = None,
    report: ParseReport | None = None,
    rejected: list[RejectedRow] | None = None,
    batch_rows: int = 65536,
) -> Iterator[UsageRecord]:
    """UsageRecords from a FOCUS Parquet file, read *batch_rows* at a time. RejectedRow.line is the 1-based row.

    Needs the optional dependency pyarrow (``pip install 'flopwise[parquet]'``); without it raises IngestError
    with that hint.
    """
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise IngestError(
            str(path), None, "reading Parquet needs pyarrow: pip install 'flopwise[parquet]' (or export CSV)"
        ) from None
    report = ParseReport.begin(report, rejected, str(path), "focus")
    if not Path(path).exists():
        raise IngestError(str(path), None, "no such file")
    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid/OSError subclasses for a bad file
        raise IngestError(str(path), None, f"not a readable Parquet file: {err}") from None
    header = list(parquet.schema_arrow.names)
    check_focus_columns(header, str(path))
    report.version = detect_focus_version(header)
    report.unknown_columns = tuple(h for h in header if h not in _KNOWN_COLUMNS)
    ctx = RowContext.build("focus", assume_tz, catalog)
    line = 0
    for batch in parquet.iter_batches(batch_size=batch_rows):
        for raw in batch.to_pylist():
            line += 1
            report.rows_read += 1
            row = {k: _parquet_text(v) for k, v in raw.items()}
            try:
                record = record_from_focus_row(row, ctx)
            except RowError as err:
                report.reject(line, str(err), json.dumps(row, default=str)[:500])
                continue
            report.records += 1
            yield record


# --- writing FOCUS back -----------------------------------------------------------------------------------

_WRITE_ORDER = (
    "ChargePeriodStart", "ChargePeriodEnd", "BilledCost", "EffectiveCost", "ListCost", "BillingCurrency",
    "ProviderName", "RegionId", "ResourceId", "ServiceCategory", "SkuId", "Tags",
)  # fmt: skip
_WRITE_COMPUTE = (
    "x_DeviceType", "x_DeviceCount", "x_DeviceHours", "x_GpuUtilization", "x_EnergyKwh", "x_Co2eKg", "x_JobId",
    "x_RequestId", "x_Source",
)  # fmt: skip


_LINE_END = re.compile(r"(?<=\n)")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False) if value else ""
    return str(value)


def focus_csv_lines(records: Iterable[UsageRecord], extra_columns: Iterable[str] = ()) -> Iterator[str]:
    """CSV lines (header first) of *records* in FOCUS column names plus flopwise's x_ columns.

    *extra_columns*: the ``x_extra`` keys to write as columns (e.g. "SubAccountId", "ChargeCategory");
    a record without one leaves the cell empty. Streams: one record at a time.
    """
    extra = [c for c in extra_columns if c not in _WRITE_ORDER and c not in _WRITE_COMPUTE]
    header = [*_WRITE_ORDER, *extra, *_WRITE_COMPUTE]
    attr = {v: k for k, v in FOCUS_NAMES.items()}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    yield buf.getvalue()
    buf.seek(0)
    buf.truncate()
    for record in records:
        row = [_cell(getattr(record, attr[c])) for c in _WRITE_ORDER]
        row += [_cell(record.x_extra.get(c)) for c in extra]
        row += [_cell(getattr(record, attr[c])) for c in _WRITE_COMPUTE]
        writer.writerow(row)
        # one string per physical line: a quoted value may hold newlines, and csv.reader wants lines
        yield from _LINE_END.split(buf.getvalue())[:-1]
        buf.seek(0)
        buf.truncate()
