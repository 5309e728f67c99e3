"""The columnar ingest path for FOCUS CSV files: pyarrow's streaming CSV reader, vectorized checks, keys,
costing and ledger columns, and set-based batch writes (:func:`flopwise.meter.ledger_write.write_columns`).

It gives the same ledger as the row path (:func:`flopwise.meter.focus.parse_focus` + :class:`Coster` +
:func:`flopwise.meter.ledger_write.write_batch`), row by row (``tests/meter/test_ingest_columnar.py``):

* a batch of rows (:data:`BATCH_ROWS`) is read as text columns; **vectorized masks** pick the rows whose every
  value has a form this path computes exactly (timestamps ``YYYY-MM-DD[T ]HH:MM:SS`` with ``Z``/``+00:00`` or,
  read as UTC, none; money with at most 6 decimals below ``MAX_MONEY_ABS``; plain decimal numbers; no value that
  JSON must escape, no surrounding blanks). Every other row goes, alone, through the row path's
  :func:`~flopwise.meter.focus.record_from_focus_row`, which builds its record or rejects it with its reason,
  so no validation rule is lost;
* per distinct value, not per row: timestamps' canonical text, Tags (parsed, canonical, request and job ids),
  instance types (:class:`~flopwise.meter.focus.InstanceTypeIndex`), hours per unit, regions;
* the identity key is the row path's ``canonical_key`` text built column-wise, hashed per row (SHA-256), and
  made unique within the input (``#n``) by :class:`_SeenKeys`, which holds 8 bytes per key (flat memory);
* rejected rows keep their line: pyarrow numbers CSV records, and the physical line of each rejected record is
  found by one rescan of the file with the row path's reader, only when something was rejected.

Files the path does not take (no pyarrow, a URL, a header that is not the first line, flopwise's own ``x_``
columns or ``x_SourceKey``) go to the row path; :func:`columnar_focus_plan` says which and why.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flopwise.errors import IngestError
from flopwise.meter.bounds import MAX_MONEY_ABS
from flopwise.meter.costing import UNKNOWN_UTILIZATION_ACTIVITY_FRAC, Coster
from flopwise.meter.focus import (
    _COMPUTE_COLUMNS,
    _EXPORT_BOOKKEEPING,
    _INSTANCE_TEXT_COLUMNS,
    _NULLS,
    _RECORD_COLUMNS,
    _TEXT_FIELDS,
    _TIME_COLUMNS,
    ParseReport,
    RowContext,
    RowError,
    _is_identifying,
    _json_str,
    _tag_ids,
    _tags_and_canonical,
    check_focus_columns,
    detect_focus_version,
    hours_per_unit,
    open_csv,
    record_from_focus_row,
    resolve_tz,
)
from flopwise.meter.record import RejectedRow, UsageRecord

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from flopwise.catalog import Catalog
    from flopwise.meter.ledger_write import Attributor

__all__ = ["BATCH_ROWS", "arrow_source", "columnar_focus_plan", "focus_column_batches", "pyarrow_available"]

#: rows per columnar batch (one write transaction each; memory is proportional to it, not to the file). 5,000
#: rather than 10,000: half the batch's working set (its text, the columns built, the rows written) for the same
#: speed (100,000 FOCUS rows, alternating, medians of 3 / 2: SQLite 8,925 against 5,664 rows/s, CPU 7.55 against
#: 7.95 s; PostgreSQL 4,369 against 4,279 rows/s, client CPU 4.00 against 4.09 s; load 4-6)
BATCH_ROWS = 5_000
#: bytes pyarrow reads per block. pyarrow's streaming CSV reader reads up to 32 blocks ahead in a background
#: thread (Arrow's ``BackgroundGenerator``, ``kDefaultBackgroundMaxQ``): 1 MiB blocks held 20-35 MiB of the file
#: read ahead at all times, 256 KiB blocks 9 MiB, for 0.4 us more CPU per row (3.17 s against 2.74 s to read and
#: rebatch 1M rows of the FOCUS sample, medians of 3, load 5.6; the whole ingest takes 85-95 us per row)
_BLOCK_BYTES = 1 << 18
_TIME_RE = r"^\d{4}-\d{2}-\d{2}[T ](?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:Z|\+00:00)?$"
_MONEY_DIGITS = len(str(int(MAX_MONEY_ABS))) - 1  # |amount| < MAX_MONEY_ABS: at most this many integer digits
#: decimal places read exactly (then rounded half-even to the ledger's 6, as ``store.types.to_money`` does)
_MONEY_PLACES_READ = 20
_MONEY_RE = rf"^-?\d{{1,{_MONEY_DIGITS}}}(?:\.\d{{1,{_MONEY_PLACES_READ}}})?$"
_NUMBER_RE = r"^-?\d+(?:\.\d+)?$"
#: characters JSON escapes (the key text and x_extra are JSON), and surrounding blanks (values are stripped)
_NEEDS_ROW_PATH_RE = r'["\\\x00-\x1f]|^\s|\s$'
_MICRO = 10**6
_warned = [False]


def pyarrow_available() -> bool:
    try:
        import pyarrow.csv  # noqa: F401
    except ImportError:
        return False
    _remember_missing("dateutil")
    return True


def _remember_missing(name: str) -> None:
    """Make a missing module's import fail at once. pyarrow 26 tries ``import dateutil`` each time it turns a
    Python value into an Arrow scalar (every literal given to a compute function); without dateutil installed
    each try searches the whole ``sys.path`` again (a batch made about 500 of them: a second per batch on a busy
    machine). ``None`` in ``sys.modules`` is Python's own "not importable" mark: the import raises the same
    ModuleNotFoundError, only without the search."""
    import importlib.util
    import sys

    if name not in sys.modules and importlib.util.find_spec(name) is None:
        sys.modules[name] = None  # type: ignore[assignment]


@dataclass(frozen=True)
class _Plan:
    header: list[str]
    delimiter: str


def columnar_focus_plan(target: str, delimiter: str | None) -> tuple[_Plan | None, str]:
    """(the plan, "") when the columnar path takes this FOCUS input, else (None, why not)."""
    if target.startswith(("http://", "https://")):
        return None, "a URL"
    if not pyarrow_available():
        if not _warned[0]:
            _warned[0] = True
            warnings.warn(
                "pyarrow is not installed: FOCUS files are ingested row by row (about 10x slower); "
                "pip install 'flopwise[parquet]' for the columnar path",
                stacklevel=3,
            )
        return None, "pyarrow is not installed"
    path = Path(target)
    if not path.is_file() or path.suffix not in (".csv", ".gz", ".txt"):
        return None, "not a .csv or .csv.gz file"
    from flopwise.meter.ingest_io import _decode_guard, _open_path

    try:
        with _open_path(path, None) as fh:
            first = next(iter(_decode_guard(fh, target)), None)
    except IngestError:
        return None, "the row path reports it"
    if first is None or not first.strip():
        return None, "the header is not the first line"
    header, _rows = open_csv([first], target, ParseReport(), delimiter)  # IngestError for a repeated column
    check_focus_columns(header, target)
    if any(h in _COMPUTE_COLUMNS or h in _EXPORT_BOOKKEEPING for h in header):
        return None, "it carries flopwise's own x_ columns"
    from flopwise.meter.focus import sniff_delimiter

    return _Plan(header, delimiter or sniff_delimiter(first.lstrip("\ufeff"))), ""


#: keys per sorted run of _SeenKeys at most (16 MiB): merging is never more than this copied at once, and a
#: 10M-row input is looked up in 5 such runs plus a few smaller ones
_RUN_MAX = 1 << 21


class _SeenKeys:
    """The keys an input has given so far, to make repeated identities unique (``#n``, as ``KeyDeduper``).

    Holds a 64-bit hash per key in sorted numpy runs (merged as they grow, up to :data:`_RUN_MAX`), and the full key
    only for keys seen twice or more. Two different keys whose 64-bit hashes collide (about n^2 / 2^65 for n
    keys) would number the later one ``#2``: a distinct key still, written once."""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []
        self._counts: dict[str, int] = {}

    def unique(self, keys: list[str]) -> list[str]:
        import numpy as np

        if not keys:
            return keys
        hashes = np.fromiter((hash(k) for k in keys), dtype=np.int64, count=len(keys)).view(np.uint64)
        hit = np.zeros(len(keys), dtype=bool)
        for run in self._runs:
            pos = np.searchsorted(run, hashes)
            pos[pos == len(run)] = 0
            hit |= run[pos] == hashes
        _, first = np.unique(hashes, return_index=True)
        again = np.ones(len(keys), dtype=bool)
        again[first] = False
        hit |= again
        if hit.any():
            keys = list(keys)
            counts = self._counts
            for i in np.flatnonzero(hit).tolist():
                n = counts.get(keys[i], 1) + 1
                counts[keys[i]] = n
                keys[i] = f"{keys[i]}#{n}"
        self._runs.append(np.sort(hashes))
        while (
            len(self._runs) > 1
            and len(self._runs[-1]) * 2 >= len(self._runs[-2])
            and len(self._runs[-1]) + len(self._runs[-2]) <= _RUN_MAX
        ):
            last = self._runs.pop()
            merged = np.concatenate([self._runs.pop(), last])
            del last  # both runs freed before the in-place sort: the peak is one copy of the keys
            merged.sort()
            self._runs.append(merged)
        return keys


@dataclass
class _Lines:
    """pyarrow numbers the CSV records it reads (the header is 1, empty lines are not counted); the row path
    counts physical lines. Records are mapped to lines by one rescan, only for rejected ones."""

    invalid: dict[int, tuple[str, int]] = field(default_factory=dict)  # number -> (text, fields)
    blank: set[int] = field(default_factory=set)
    next_number: int = 2
    last_skipped: int = 0  # the highest number of an invalid or blank record seen so far

    def on_invalid(self, row: Any) -> str:
        """pyarrow's ``invalid_row_handler``: note the record (blank, or with the wrong number of fields), skip it."""
        if not row.text.strip():
            self.blank.add(row.number)
        else:
            self.invalid[row.number] = (row.text, row.actual_columns)
        self.last_skipped = max(self.last_skipped, row.number)
        return "skip"

    def numbers(self, n: int) -> list[int]:
        """The record numbers of the next *n* valid rows (skipping the invalid and blank ones between them)."""
        number = self.next_number
        if self.last_skipped < number:  # nothing skipped ahead: a plain range
            self.next_number = number + n
            return list(range(number, number + n))
        out: list[int] = []
        while len(out) < n:
            if number not in self.invalid and number not in self.blank:
                out.append(number)
            number += 1
        self.next_number = number
        return out


def _physical_lines(target: str, delimiter: str, wanted: set[int], *, partial: bool = False) -> dict[int, int]:
    """record ordinal (0-based among the data records the row path counts) -> the line it reports for it
    (:func:`flopwise.meter.focus._csv_data`'s numbering: csv.reader's line count, blank records skipped).
    *partial*: a file that cannot be read to the last wanted record (a run that failed on it) gives the records
    found before the error instead of raising it."""
    import csv
    import zlib

    from flopwise.meter.ingest_io import _open_path

    out: dict[int, int] = {}
    if not wanted:
        return out
    last = max(wanted)
    with _open_path(Path(target), None) as fh:
        it = iter(fh)
        next(it, None)  # the header
        reader = csv.reader(it, delimiter=delimiter, strict=True)
        ordinal = 0
        while ordinal <= last:
            start_line = reader.line_num + 2
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error:
                fields = ["?", "?"]
            except (OSError, EOFError, zlib.error, UnicodeDecodeError):
                if not partial:
                    raise
                break
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if ordinal in wanted:
                out[ordinal] = start_line
            ordinal += 1
    return out


class _FocusColumns:
    """Builds the ledger columns of one batch of FOCUS text columns (see the module doc)."""

    def __init__(
        self,
        header: list[str],
        *,
        catalog: Catalog,
        coster: Coster,
        assume_tz: tzinfo | None,
        path: str,
    ) -> None:
        import pyarrow as pa

        self.header = header
        self.coster = coster
        self.assume_tz = assume_tz
        self.path = path
        self.ctx = RowContext.build("focus", assume_tz, catalog)
        self.ctx.dedupe = lambda key: key  # type: ignore[assignment,method-assign]  # made unique in file order
        self.index = self.ctx.instance_index
        self.identifying = sorted(h for h in header if _is_identifying(h))
        self.extra = [h for h in header if h not in _RECORD_COLUMNS and h not in _EXPORT_BOOKKEEPING]
        self.times = [h for h in header if h in _TIME_COLUMNS]
        self.key_name = {h: _json_str(h) for h in header}
        self.extra_name = {h: json.dumps(h, ensure_ascii=False) for h in header}
        self.ts_type = pa.timestamp("us", tz="UTC")
        self.money_type = pa.decimal128(20, 6)

    # --- per distinct value ---------------------------------------------------------------------------

    def _map(self, column: pa.Array, fn: Callable[[str], Any], type_: pa.DataType) -> pa.Array:
        """fn(value) for each distinct non-null value of *column*, spread back over its rows."""
        import pyarrow as pa

        encoded = column if isinstance(column, pa.DictionaryArray) else column.dictionary_encode()
        values = [fn(v) for v in encoded.dictionary.to_pylist()]
        return pa.DictionaryArray.from_arrays(encoded.indices, pa.array(values, type=type_)).cast(type_)

    # --- one batch ------------------------------------------------------------------------------------

    def build(self, batch: pa.RecordBatch) -> tuple[pa.Table, np.ndarray, list[int]]:
        """(fast rows as ledger columns plus their ``_key_text``, the identity key hashed, the mask of fast rows,
        the row-path rows)."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        n = batch.num_rows
        raw = {name: batch.column(i) for i, name in enumerate(batch.schema.names)}
        null_words = pa.array(sorted(_NULLS - {""}))
        ok = np.ones(n, dtype=bool)
        cols: dict[str, pa.Array] = {}
        for name, col in raw.items():
            missing = pc.or_(pc.equal(col, ""), pc.is_in(col, value_set=null_words))
            cols[name] = _nulled(col, missing)
            if name != "Tags":
                ok &= ~_needs_row_path(col)
        present = {name: pc.is_valid(col) for name, col in cols.items()}
        for name in ("ChargePeriodStart", "ChargePeriodEnd", "BilledCost"):
            ok &= present[name].to_numpy(zero_copy_only=False)

        # timestamps: a strict form, a real date (strptime rolls 02-30 over: the date must read back the same)
        utc_only = self.assume_tz is not UTC
        parsed_times: dict[str, pa.Array] = {}
        canon_text: dict[str, pa.Array] = {}
        for name in self.times:
            col = cols[name]
            form = pc.fill_null(pc.match_substring_regex(col, _TIME_RE), True)
            if utc_only:
                zoned = pc.or_(pc.ends_with(col, "Z"), pc.ends_with(col, "+00:00"))
                form = pc.and_(form, pc.fill_null(zoned, True))
            text19 = pc.replace_substring(pc.utf8_slice_codeunits(col, 0, 19), " ", "T")
            ts = pc.strptime(text19, format="%Y-%m-%dT%H:%M:%S", unit="us", error_is_null=True)
            # strptime rolls 02-30 over to 03-02: a real date reads back the same
            back = pc.utf8_slice_codeunits(pc.cast(ts, pa.string()), 0, 10)
            same = pc.equal(back, pc.utf8_slice_codeunits(col, 0, 10))
            good = pc.and_(form, pc.fill_null(same, False))
            good = pc.or_(good, pc.is_null(col))
            ok &= good.to_numpy(zero_copy_only=False)
            canon_text[name] = _concat(text19, "Z")
            ts = pc.assume_timezone(ts, "UTC")
            parsed_times[name] = ts
        start, end = parsed_times["ChargePeriodStart"], parsed_times["ChargePeriodEnd"]
        ok &= pc.fill_null(pc.greater_equal(end, start), False).to_numpy(zero_copy_only=False)

        money: dict[str, pa.Array] = {}
        for name in ("BilledCost", "EffectiveCost", "ListCost"):
            if name in cols:
                good = pc.fill_null(pc.match_substring_regex(cols[name], _MONEY_RE), True)
                ok &= good.to_numpy(zero_copy_only=False)
        for name in (
            "ContractedCost",
            "ListUnitPrice",
            "ContractedUnitPrice",
            "PricingQuantity",
            "ConsumedQuantity",
        ):
            if name in cols:
                good = pc.fill_null(pc.match_substring_regex(cols[name], _NUMBER_RE), True)
                ok &= good.to_numpy(zero_copy_only=False)
        quantity = None
        if "ConsumedQuantity" in cols:
            q = pc.if_else(pa.array(ok), cols["ConsumedQuantity"], pa.scalar(None, pa.string()))
            quantity = pc.cast(q, pa.float64())
            billed_text = pc.if_else(pa.array(ok), cols["BilledCost"], pa.scalar("0"))
            positive = pc.greater(pc.cast(billed_text, pa.float64()), 0)
            reversal_bad = pc.and_(pc.less(quantity, 0), positive)
            ok &= ~pc.fill_null(reversal_bad, False).to_numpy(zero_copy_only=False)

        # Tags, per distinct text
        tags_json = tags_canon = request_tag = job_tag = None
        if "Tags" in cols:
            tags_ok = self._map(cols["Tags"], _tags_fast, pa.bool_())
            ok &= pc.fill_null(tags_ok, True).to_numpy(zero_copy_only=False)
        mask = pa.array(ok)
        fast = pc.filter(pa.table(cols), mask) if not ok.all() else pa.table(cols)
        slow = np.flatnonzero(~ok).tolist()
        # one chunk each (combine_chunks copies even a single chunk: a copy of the batch's text)
        fcols = {name: _one_array(fast.column(name)) for name in fast.column_names}
        m = fast.num_rows
        times = {name: pc.filter(ts, mask) for name, ts in parsed_times.items()}
        # the canonical text (format_timestamp: UTC, ISO 8601 with a Z) of a strict-form UTC time is its own
        times_text = {name: pc.filter(t, mask) for name, t in canon_text.items()}
        # with slow rows, the batch's text before the filter is freed here
        del raw, cols, present, fast, parsed_times, canon_text
        for name in ("BilledCost", "EffectiveCost", "ListCost"):
            if name in fcols:
                exact = pc.cast(
                    fcols[name], pa.decimal128(_MONEY_DIGITS + _MONEY_PLACES_READ, _MONEY_PLACES_READ)
                )
                rounded = pc.round(exact, ndigits=6, round_mode="half_to_even")
                money[name] = pc.cast(rounded, self.money_type)
        if "Tags" in fcols:
            tags = fcols["Tags"].dictionary_encode()
            tags_json = pc.fill_null(self._map(tags, lambda t: _tags_text(t)[0], pa.string()), "{}")
            tags_canon = self._map(tags, lambda t: _tags_text(t)[1], pa.string())
            request_tag = self._map(tags, lambda t: _tag_ids(t)[0], pa.string())
            job_tag = self._map(tags, lambda t: _tag_ids(t)[1], pa.string())

        # the identity key text: [["Name","value"],...] over the identifying columns with a value, sorted by name
        key_values, key_prefixes = [], []
        for name in self.identifying:
            if name in self.times:
                value = times_text[name]
            elif name == "Tags":
                value = pc.if_else(pc.equal(tags_canon, ""), pa.scalar(None, pa.string()), tags_canon)
                value = self._map(value, lambda c: _json_str(c)[1:-1], pa.string())
            else:
                value = fcols[name]
            key_values.append(value)
            key_prefixes.append(f'[{self.key_name[name]},"')
        key_text = _wrapped_join(key_values, key_prefixes, '"]', ",", "[", "]", m)
        # hashed here (as the row path's keys): the identity text, as long as x_extra, is not held while that is built
        key_text = pa.array([_key(t) for t in key_text.to_pylist()], pa.string())
        # x_extra: {"Name": "value", ...} over the other columns with a value, in header order
        extra_values = [times_text[name] if name in self.times else fcols[name] for name in self.extra]
        extra_prefixes = [f'{self.extra_name[name]}: "' for name in self.extra]
        x_extra = _wrapped_join(extra_values, extra_prefixes, '"', ", ", "{", "}", m)

        # devices: the first instance-text column that names a catalog instance type
        device = pa.nulls(m, pa.string())
        per_instance = pa.nulls(m, pa.float64())
        if self.index is not None:
            for name in _INSTANCE_TEXT_COLUMNS:
                if name not in fcols:
                    continue
                texts = fcols[name].dictionary_encode()
                found_dev = self._map(texts, lambda t: (f := self.index.find(t)) and f[1], pa.string())
                found_n = self._map(texts, lambda t: (f := self.index.find(t)) and float(f[2]), pa.float64())
                take = pc.and_(pc.is_null(device), pc.is_valid(found_dev))
                device = pc.if_else(take, found_dev, device)
                per_instance = pc.if_else(take, found_n, per_instance)
        unit = fcols.get("ConsumedUnit")
        if "PricingUnit" in fcols:
            unit = fcols["PricingUnit"] if unit is None else pc.coalesce(unit, fcols["PricingUnit"])
        hours = pa.nulls(m, pa.float64())
        costed_hours = hours
        if unit is not None and quantity is not None:
            unit_hours = self._map(unit, hours_per_unit, pa.float64())
            q = pc.filter(quantity, mask)
            hours = pc.multiply(pc.multiply(q, unit_hours), per_instance)
            hours = pc.if_else(pc.is_valid(device), hours, pa.scalar(None, pa.float64()))
        # Coster.cost never prices a negative quantity (a reversal): no energy for it
        costed_hours = pc.if_else(pc.less(hours, 0.0), pa.scalar(None, pa.float64()), hours)
        # costing (Coster.cost for a billed row with no utilization): estimated energy, CO2e, the bill as cost
        coster = self.coster
        power = self._map(device, lambda d: _power_w(coster, d), pa.float64())
        energy = pc.divide(pc.multiply(power, costed_hours), 1000.0)
        provider = fcols.get("ProviderName", pa.nulls(m, pa.string()))
        region_id = fcols.get("RegionId", pa.nulls(m, pa.string()))
        pair = _concat(pc.fill_null(provider, "\x00"), "\x1f", pc.fill_null(region_id, "\x00"))
        pair = pair.dictionary_encode()
        pue = self._map(pair, lambda p: _region(coster, p, 0), pa.float64())
        grid = self._map(pair, lambda p: _region(coster, p, 1), pa.float64())
        co2e = pc.divide(pc.multiply(pc.multiply(energy, pue), grid), 1000.0)
        currency = fcols["BillingCurrency"] if "BillingCurrency" in fcols else pa.nulls(m, pa.string())
        usd = pc.or_kleene(
            pc.is_null(currency), pc.equal(pc.utf8_upper(pc.utf8_trim_whitespace(currency)), "USD")
        )
        usd = pc.fill_null(usd, True)
        billed = money["BilledCost"]
        cost_usd = pc.if_else(usd, billed, pa.scalar(None, self.money_type))
        cost_basis = pc.if_else(usd, pa.scalar("billed"), pa.scalar("none"))
        energy_basis = pc.if_else(pc.is_valid(energy), pa.scalar("estimated"), pa.scalar("none"))

        def text(name: str) -> pa.Array:
            return fcols.get(name, pa.nulls(m, pa.string()))

        out = {
            "source": pa.array(["focus"] * m, pa.string()),
            "charge_period_start": times["ChargePeriodStart"],
            "charge_period_end": times["ChargePeriodEnd"],
            "billed_cost": billed,
            "effective_cost": money.get("EffectiveCost", pa.nulls(m, self.money_type)),
            "list_cost": money.get("ListCost", pa.nulls(m, self.money_type)),
            "cost_usd": cost_usd,
            "cost_basis": cost_basis,
            **{attr: text(col) for col, attr in _TEXT_FIELDS.items()},
            "tags": tags_json if tags_json is not None else pa.array(["{}"] * m, pa.string()),
            "x_device_type": device,
            "x_device_count": per_instance,
            "x_device_hours": hours,
            "x_gpu_utilization": pa.nulls(m, pa.float64()),
            "x_energy_kwh": energy,
            "energy_basis": energy_basis,
            "x_co2e_kg": co2e,
            "idle_device_hours": pa.nulls(m, pa.float64()),
            "idle_cost_usd": pa.nulls(m, self.money_type),
            "x_job_id": job_tag if job_tag is not None else pa.nulls(m, pa.string()),
            "x_request_id": request_tag if request_tag is not None else pa.nulls(m, pa.string()),
            "x_user": pa.nulls(m, pa.string()),
            "x_account": text("SubAccountId"),
            "x_extra": x_extra,
            "_key_text": key_text,
        }
        return pa.table(out), ok, slow

    def slow_rows(
        self, batch: pa.RecordBatch, rows: list[int], numbers: list[int], rejected: list[tuple[int, str, str]]
    ) -> list[tuple[int, UsageRecord]]:
        """The row path for *rows* of *batch*: (record number, costed-ready record), rejects into *rejected*."""
        out: list[tuple[int, UsageRecord]] = []
        if not rows:
            return out
        names = batch.schema.names
        import pyarrow as pa

        taken = batch.take(pa.array(rows)).to_pylist()
        for i, row in zip(rows, taken, strict=True):
            try:
                record = record_from_focus_row(row, self.ctx)
            except RowError as err:
                rejected.append((numbers[i], str(err), ",".join(str(row[n]) for n in names)))
                continue
            out.append((numbers[i], record))
        return out


def _needs_row_path(col: pa.Array) -> np.ndarray:
    """Per value of a string array: does it match :data:`_NEEDS_ROW_PATH_RE` (a ``"``, a ``\\`` or a control
    character anywhere, or a blank first or last character)? Read off the array's bytes with numpy, 2.8x faster
    than the regex (a 10,000-row batch of the bench file: 14 ms for its 44 columns against 38 ms); a test holds
    the two equal. RE2's ``\\s`` is ASCII (tab, newline, form feed, carriage return, space): every one but the
    space is a control character, so a blank end is a control character anywhere or a space at an end. A null
    value (no bytes) is False, as the regex's null filled with False."""
    import numpy as np

    n = len(col)
    out = np.zeros(n, dtype=bool)
    buffers = col.buffers()
    if n == 0 or buffers[2] is None:
        return out
    offsets = np.frombuffer(buffers[1], dtype=np.int32)[col.offset : col.offset + n + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8)
    lo, hi = int(offsets[0]), int(offsets[-1])
    segment = data[lo:hi]
    bad = (segment < 0x20) | (segment == 0x22) | (segment == 0x5C)
    if bad.any():
        seen = np.zeros(len(segment) + 1, dtype=np.int64)
        np.cumsum(bad, out=seen[1:])
        out |= (seen[offsets[1:] - lo] - seen[offsets[:-1] - lo]) > 0
    nonempty = offsets[1:] > offsets[:-1]
    if nonempty.any():
        first = data[offsets[:-1][nonempty]]
        last = data[offsets[1:][nonempty] - 1]
        out[nonempty] |= (first == 0x20) | (last == 0x20)
    return out


#: constant text arrays by text, as long as the longest batch so far (a shorter one takes a zero-copy slice)
_CONSTANTS: dict[str, pa.Array] = {}


def _concat(*parts: pa.Array | str) -> pa.Array:
    """The element-wise concatenation of string arrays and constant texts (pyarrow's
    ``binary_join_element_wise`` is some 40x slower with a scalar argument than with an array: constants become
    arrays, kept per text). A null part gives a null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = next(len(p) for p in parts if not isinstance(p, str))
    arrays = []
    for p in parts:
        if isinstance(p, str):
            const = _CONSTANTS.get(p)
            if const is None or len(const) < n:
                if len(_CONSTANTS) > 1024:
                    _CONSTANTS.clear()
                const = _CONSTANTS[p] = pa.repeat(pa.scalar(p, pa.string()), n)
            p = const.slice(0, n)
        arrays.append(p)
    return pc.binary_join_element_wise(*arrays, "")


def _wrapped_join(
    values: list[pa.Array], prefixes: list[str], suffix: str, sep: str, open_: str, close: str, m: int
) -> pa.Array:
    """Per row: *open_* + the pieces ``prefixes[i] + values[i] + suffix`` of the non-null values, joined by *sep*,
    + *close*, in a handful of Arrow calls.

    Every piece of every row (*open_*, then prefix, value and suffix per value, then *close*) is gathered by one
    ``take`` from one array holding the constants once and the value columns, into one list per row, which one
    ``binary_join`` joins: a constant number of Arrow calls per batch. (Concatenating column by column made about
    four calls per column, and ``binary_join_element_wise`` was then half of the columnar path's Arrow time; its
    ``null_handling="skip"`` drops the rows whose pieces are all null in pyarrow 26.) The first value of a row
    takes its prefix without the separator, so the joined text is the result: no slice and no concatenation
    after the join, each a copy of every row's text (x_extra is most of a batch's bytes); the value pool is
    freed once taken. This is the columnar path's largest working set: with both, an x_extra of 10,000 rows of
    the FOCUS 1.0 sample needed 33 MiB of Arrow memory at its peak, now about half."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    k = len(values)
    if k == 0 or m == 0:
        return pa.array([open_ + close] * m, pa.string())
    # the constants: 0 open_, 1 close, 2 suffix, 3.. the prefixes, 3 + k.. the prefixes after the separator
    consts = pa.array([open_, close, suffix, *prefixes, *(sep + p for p in prefixes)], pa.string())
    valid = np.empty((m, k), dtype=bool)
    for i, v in enumerate(values):
        valid[:, i] = v.is_valid().to_numpy(zero_copy_only=False)
    columns = [v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v for v in values]
    pool = pa.concat_arrays([consts, *(c.cast(pa.string()) for c in columns)])
    del columns
    # each row's pieces in order, the null values' three left out
    index = np.empty((m, 3 * k + 2), dtype=np.int32)
    index[:, 0] = 0
    index[:, 1:-1:3] = 3 + k + np.arange(k, dtype=np.int32)  # the prefix, with the separator before it
    index[:, 2:-1:3] = len(consts) + np.arange(k, dtype=np.int32) * m + np.arange(m, dtype=np.int32)[:, None]
    index[:, 3:-1:3] = 2
    index[:, -1] = 1
    first = valid.argmax(axis=1)  # a row's first value: its prefix without the separator
    index[np.arange(m), 1 + 3 * first] = 3 + first
    keep = np.ones((m, 3 * k + 2), dtype=bool)
    keep[:, 1:-1] = np.repeat(valid, 3, axis=1)
    offsets = np.zeros(m + 1, dtype=np.int32)
    np.cumsum(keep.sum(axis=1), out=offsets[1:])
    taken = index[keep]
    del index, keep, valid
    pieces = pool.take(pa.array(taken))
    del pool, taken
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), pieces), "")


def _tags_fast(text: str) -> bool:
    try:
        _tags_and_canonical(text)
    except RowError:
        return False
    return True


def _tags_text(text: str) -> tuple[str, str]:
    """(the ledger's JSON text of the tags, their canonical text or "")."""
    from flopwise.store.session import _json_dumps

    items, canon = _tags_and_canonical(text)
    return (_json_dumps(dict(items)) if items else "{}"), canon


def _power_w(coster: Coster, device_id: str) -> float | None:
    from flopwise.estimate.energy import device_power_w

    device = coster.device(device_id)
    if device is None:
        return None
    return float(device_power_w(device.tdp_w, device.idle_w, UNKNOWN_UTILIZATION_ACTIVITY_FRAC))


def _region(coster: Coster, pair: str, which: int) -> float | None:
    provider, _, region_id = pair.partition("\x1f")
    region = coster.region(
        None if provider == "\x00" else provider, None if region_id == "\x00" else region_id
    )
    if region is None:
        return None
    return float(region.pue) if which == 0 else float(region.grid_gco2e_per_kwh)


def _records_table(records: list[UsageRecord], coster: Coster, schema: pa.Schema) -> pa.Table:
    """The row path's records (costed) as ledger columns of *schema* (keys in ``_key_text``, already made)."""
    import pyarrow as pa

    from flopwise.meter.ledger_write import _COLUMNS, _row_values
    from flopwise.store.session import _json_dumps
    from flopwise.store.types import to_money

    now = datetime.now(UTC)
    rows = [_row_values(coster.cost(r), None, now, None) for r in records]
    data: dict[str, list[Any]] = {}
    for name in schema.names:
        if name == "_key_text":
            data[name] = [r.source_key for r in records]
            continue
        i = _COLUMNS.index(name)
        values = [row[i] for row in rows]
        kind = schema.field(name).type
        if pa.types.is_decimal(kind):
            values = [None if v is None else to_money(v, name) for v in values]
        elif name in ("tags", "x_extra"):
            values = ["{}" if not v else _json_dumps(v) for v in values]
        data[name] = values
    return pa.table({n: pa.array(data[n], type=schema.field(n).type) for n in schema.names})


def focus_column_batches(
    target: str,
    plan: _Plan,
    *,
    catalog: Catalog,
    coster: Coster,
    assume_tz: str | None,
    report: ParseReport,
    rejected: list[RejectedRow],
    progress: Any = None,
    attribute: Attributor | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[pa.Table]:
    """Ledger-column tables of a FOCUS CSV, *batch_rows* at a time, with ``source_key`` made (see the module
    doc). Fills *report* (rows read, version) and, at the end, *rejected* (line and reason): also when the run
    stops before the end (a corrupt tail, Ctrl-C, a batch's write that failed), with the rejects of the blocks
    read so far, as the row path keeps those of the lines it read."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    tz = resolve_tz(assume_tz)
    report.version = detect_focus_version(plan.header)
    builder = _FocusColumns(plan.header, catalog=catalog, coster=coster, assume_tz=tz, path=target)
    seen = _SeenKeys()
    lines = _Lines()
    pending_rejects: list[tuple[int, str, str]] = []  # (record number, reason, raw)
    header = plan.header
    path = Path(target)
    total = path.stat().st_size
    finished = False
    checked = 0  # the highest record number of the batches built so far
    try:
        with arrow_source(target) as (raw, stream):
            reader = pcsv.open_csv(
                stream,
                read_options=pcsv.ReadOptions(
                    column_names=header, skip_rows=1, block_size=_BLOCK_BYTES, use_threads=False
                ),
                parse_options=pcsv.ParseOptions(
                    delimiter=plan.delimiter,
                    newlines_in_values=True,
                    invalid_row_handler=lines.on_invalid,
                ),
                convert_options=pcsv.ConvertOptions(
                    column_types={h: pa.string() for h in header},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            for batch in _rebatched(reader, batch_rows):
                for offset in range(0, batch.num_rows, batch_rows):
                    part = batch.slice(offset, batch_rows)
                    numbers = lines.numbers(part.num_rows)
                    table, ok, slow = builder.build(part)
                    records = builder.slow_rows(part, slow, numbers, pending_rejects)
                    checked = numbers[-1] if numbers else checked
                    if records:
                        extra = _records_table([r for _, r in records], coster, table.schema)
                        fast_numbers = np.asarray(numbers)[ok]
                        all_numbers = np.concatenate([fast_numbers, np.asarray([n for n, _ in records])])
                        order = np.argsort(all_numbers, kind="stable")
                        table = pa.concat_tables([table, extra]).take(pa.array(order))
                    report.rows_read += part.num_rows
                    # keys: SHA-256 of the identity text for the columnar rows, the row path's own for the others
                    keys = table.column("_key_text").to_pylist()
                    keys = seen.unique(keys)
                    table = table.drop_columns(["_key_text"]).append_column(
                        "source_key", pa.array(keys, pa.string())
                    )
                    if attribute is not None:
                        for name, values in _owners(table, attribute).items():
                            table = table.append_column(name, values)
                    report.records += table.num_rows
                    # the build's temporaries back to the OS before the writer makes the batch's Python rows
                    pa.default_memory_pool().release_unused()
                    yield table
                    del table, part
                    pa.default_memory_pool().release_unused()  # the batch's buffers back to the OS: RSS stays flat
                    if progress is not None:
                        progress(raw.tell(), total)
        finished = True
    finally:
        if not finished:
            _collect_rejects(target, plan, lines, pending_rejects, report, rejected, checked=checked)
    _collect_rejects(target, plan, lines, pending_rejects, report, rejected)


def _collect_rejects(
    target: str,
    plan: _Plan,
    lines: _Lines,
    pending_rejects: list[tuple[int, str, str]],
    report: ParseReport,
    rejected: list[RejectedRow],
    *,
    checked: int | None = None,
) -> None:
    """The invalid records (wrong number of fields) and the row path's rejects, with their physical lines, into
    *rejected*. *checked* None: the whole file was read. Else the run stopped part way (a corrupt tail, Ctrl-C, a
    batch's write that failed), and the rejects are a leading part of the whole file's, as the row path keeps
    those of the lines it read before a failure: those of the records up to record number *checked* (the batches
    built; pyarrow has parsed further), and only as far as the file can be read back to find their lines (the
    run's own error is the one reported)."""
    import bisect

    header = plan.header
    complete = checked is None
    for number, (text, got) in lines.invalid.items():
        if not complete and number > checked:
            continue
        what = "truncated?" if got < len(header) else "a stray delimiter or unquoted value?"
        pending_rejects.append((number, f"has {got} fields, the header has {len(header)} ({what})", text))
        report.rows_read += 1
    lines.invalid.clear()
    if not pending_rejects:
        return
    blanks = sorted(lines.blank)

    def ordinal(number: int) -> int:
        return number - 2 - bisect.bisect_left(blanks, number)

    where = _physical_lines(
        target, plan.delimiter, {ordinal(n) for n, _, _ in pending_rejects}, partial=not complete
    )
    for number, reason, text in sorted(pending_rejects):
        if not complete and ordinal(number) not in where:
            continue  # past where the file can be read back: past the row path's failure too
        line = where.get(ordinal(number), ordinal(number) + 2)
        rejected.append(RejectedRow(target, line, reason, text[:500]))
    pending_rejects.clear()


def _rebatched(reader: Any, rows: int) -> Iterator[pa.RecordBatch]:
    """The reader's record batches (one per block read) gathered into batches of *rows* rows (the last one fewer):
    the fixed cost of a batch (some hundred Arrow calls, a write transaction) is paid per *rows* rows, not per
    block, and not twice for the few rows a block reaches past a batch."""

    pending: list[pa.RecordBatch] = []
    count = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:  # exactly *rows* rows; the rest of the last block starts the next batch
            whole = _one_batch(pending)
            rest = whole.slice(rows)
            # the blocks gathered into *whole* are not held while the batch is built (a second copy of its text)
            pending, count = ([rest] if rest.num_rows else []), rest.num_rows
            yield whole.slice(0, rows)
    if count:
        yield _one_batch(pending)


def _nulled(column: pa.Array, missing: pa.Array) -> pa.Array:
    """*column* (text, no nulls) with its *missing* rows null: a validity bitmap over the column's own offsets and
    text, where ``if_else`` copies every value (a copy of the batch's text while the batch is held)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    valid = pc.invert(missing)
    plain = column.type == pa.string() and not (column.offset or column.null_count or missing.null_count)
    if not plain or valid.offset:
        return pc.if_else(missing, pa.scalar(None, pa.string()), column)
    _, offsets, text = column.buffers()
    return pa.Array.from_buffers(pa.string(), len(column), [valid.buffers()[1], offsets, text])


def _one_array(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array, without a copy when it is one chunk already."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _one_batch(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    import pyarrow as pa

    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def _key(text: str) -> str:
    return "focus:" + hashlib.sha256(text.encode()).hexdigest()[:32]


@contextmanager
def arrow_source(target: str) -> Iterator[tuple[Any, Any]]:
    """(the file, the stream to read: gunzipped for a ``.gz`` name) of *target* for pyarrow's CSV reader, closed
    at the end; what pyarrow cannot read comes out as :class:`IngestError` in the row path's words, and a
    cancelled read as ``KeyboardInterrupt``. The file is a native one, with no Python callback inside pyarrow, so a
    signal's ``KeyboardInterrupt`` (SIGTERM made one by the CLI) is raised in the caller's loop, not swallowed in a
    read; the caller reports progress from the file's position (``tell()``). Both columnar paths read through it."""
    import pyarrow as pa

    path = Path(target)
    gz = path.suffix == ".gz"
    raw = pa.OSFile(str(path), "rb")
    try:
        yield raw, (pa.CompressedInputStream(raw, "gzip") if gz else raw)
    except pa.ArrowCancelled:
        raise KeyboardInterrupt from None
    except (pa.ArrowException, OSError, EOFError) as err:
        raise IngestError(target, None, _arrow_message(err, target, gz)) from None
    finally:
        raw.close()


def _arrow_message(err: Exception, target: str, gz: bool) -> str:
    """The row path's words for what pyarrow could not read (ingest_io._decode_guard)."""
    text = str(err)
    lowered = text.lower()
    if "utf8" in lowered or "utf-8" in lowered:
        return "not UTF-8 text (invalid byte sequence); is it a binary or compressed file?"
    if gz or "gzip" in lowered or isinstance(err, EOFError):
        what = "it ends early (truncated?)" if "truncated" in lowered or isinstance(err, EOFError) else text
        return f"not a readable gzip file: {what}; check it with `gzip -t {target}`"
    return f"not a readable CSV: {text}"


_ATTRIBUTION_COLUMNS = ("x_account", "resource_id", "tags", "x_request_id", "provider_name")


def _owners(table: pa.Table, attribute: Attributor) -> dict[str, pa.Array]:
    """org/team/project of each row: *attribute* called once per distinct (account, resource, tags, request
    id, provider), the fields attribution rules read (``meter.attribution``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    joined = pc.binary_join_element_wise(
        *(pc.fill_null(table.column(c).combine_chunks(), "\x00") for c in _ATTRIBUTION_COLUMNS), "\x1f"
    )
    encoded = joined.dictionary_encode()
    answers = []
    for value in encoded.dictionary.to_pylist():
        account, resource, tags, request, provider = (None if v == "\x00" else v for v in value.split("\x1f"))
        record = UsageRecord(
            source="focus",
            source_key="",
            charge_period_start=datetime.min.replace(tzinfo=UTC),
            charge_period_end=datetime.min.replace(tzinfo=UTC),
            provider_name=provider,
            resource_id=resource,
            tags=json.loads(tags) if tags else {},
            x_account=account,
            x_request_id=request,
        )
        answers.append(attribute(record) or (None, None, None))
    idx = encoded.indices.to_pylist()
    return {
        name: pa.array([answers[i][k] for i in idx], pa.int64())
        for k, name in enumerate(("org_id", "team_id", "project_id"))
    }
