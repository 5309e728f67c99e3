"""Parse ``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]`` logs into usage records.

::

    nvidia-smi --query-gpu=timestamp,name,index,uuid,utilization.gpu,memory.used,memory.total,power.draw \
        --format=csv -l 5 > gpu.log

The header names the fields and their units (``power.draw [W]``, ``memory.used [MiB]``,
``utilization.gpu [%]``); values carry the unit unless ``nounits`` was given (``120.50 W``). ``[N/A]`` and
``[Not Supported]`` are unknown values (None). Without a header (``noheader``) pass ``fields``. Timestamps
(``2024/05/01 12:00:00.123``) are local time without a zone: pass ``assume_tz``, else each row is rejected.
Rows become :class:`~flopwise.meter.nvml.GpuSample`s and are aggregated per GPU per interval by
:func:`~flopwise.meter.nvml.iter_aggregate_samples` (energy by trapezoid of ``power.draw`` over time).
Streams: one line at a time.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flopwise.errors import CatalogError, IngestError, InputError
from flopwise.meter.bounds import check_power_w, check_utilization_frac
from flopwise.meter.nvml import GpuSample, iter_aggregate_samples
from flopwise.meter.record import RejectedRow, UsageRecord

if TYPE_CHECKING:
    from flopwise.catalog import Catalog

__all__ = ["parse_nvidia_smi", "parse_nvidia_smi_samples"]

_UNKNOWN = {"[n/a]", "n/a", "[not supported]", "[unknown error]", "[insufficient permissions]", ""}
_BYTES = {"B": 1.0, "KiB": 2.0**10, "MiB": 2.0**20, "GiB": 2.0**30}
_POWER_FIELDS = ("power.draw", "power.draw.average", "power.draw.instant")


def _field_and_unit(header: str) -> tuple[str, str | None]:
    """``"power.draw [W]"`` -> ``("power.draw", "W")``."""
    header = header.strip()
    if header.endswith("]") and " [" in header:
        name, _, unit = header[:-1].partition(" [")
        return name.strip(), unit.strip()
    return header, None


def _number(text: str, unit: str | None) -> float | None:
    text = text.strip()
    if text.lower() in _UNKNOWN:
        return None
    if unit and text.endswith(unit):
        text = text[: -len(unit)].strip()
    return float(text)


def _time(text: str, tz: ZoneInfo | None) -> datetime:
    text = text.strip()
    for fmt in ("%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d %H:%M:%S"):
        try:
            dt = datetime.strptime(text, fmt)
            break
        except ValueError:
            continue
    else:
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"timestamp {text!r} is not YYYY/MM/DD HH:MM:SS.mmm") from None
    if dt.tzinfo is None:
        if tz is None:
            raise ValueError(f"timestamp {text!r} has no time zone; pass assume_tz (--assume-tz), e.g. 'UTC'")
        dt = dt.replace(tzinfo=tz)
    return dt


def parse_nvidia_smi_samples(
    lines: Iterable[str],
    *,
    rejected: list[RejectedRow],
    path: str = "<nvidia-smi>",
    fields: Sequence[str] | str | None = None,
    assume_tz: str | None = None,
    catalog: Catalog | None = None,
) -> Iterator[GpuSample]:
    """Stream the rows of an nvidia-smi CSV log as GpuSamples; bad rows go to *rejected*.

    Utilization outside 0-100 % and power beyond 2x the device's TDP (from *catalog*, by the ``name`` field)
    are rejected rows (``flopwise.meter.bounds``).

    Needs ``timestamp`` and ``index`` or ``uuid`` among the fields. Raises IngestError when the log has no
    header and no *fields*, or lacks those fields.
    """
    tz = None
    if assume_tz is not None:
        try:
            tz = ZoneInfo(assume_tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InputError("assume_tz", assume_tz, "give an IANA time zone such as 'UTC'") from exc
    if isinstance(fields, str):
        fields = [f.strip() for f in fields.split(",") if f.strip()]
    columns: list[tuple[str, str | None]] | None = [_field_and_unit(f) for f in fields] if fields else None
    devices: dict[str, Any] = {}
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        tokens = [_field_and_unit(t)[0] for t in line.split(",")]
        if "timestamp" in tokens:  # a header line (possibly repeated by nvidia-smi -l)
            columns = [_field_and_unit(h) for h in line.split(",")]
            if not {"index", "uuid"} & set(tokens):
                raise IngestError(path, lineno, "the nvidia-smi query needs timestamp and index or uuid "
                                  "(--query-gpu=timestamp,index,uuid,power.draw,...)")  # fmt: skip
            continue
        if columns is None:
            raise IngestError(path, lineno, "no header line and no field list: run nvidia-smi without "
                              "'noheader', or pass fields= the --query-gpu list")  # fmt: skip
        values = next(csv.reader([line], skipinitialspace=True))
        if len(values) != len(columns):
            rejected.append(
                RejectedRow(path, lineno, f"expected {len(columns)} values, got {len(values)}", line)
            )
            continue
        row = {name: (value, unit) for (name, unit), value in zip(columns, values, strict=True)}
        try:
            ts = _time(row["timestamp"][0], tz)

            def num(name: str, row: dict[str, tuple[str, str | None]] = row) -> float | None:
                if name not in row:
                    return None
                value, unit = row[name]
                if unit is None:  # a header without units: values carry them ("120.50 W")
                    parts = value.strip().split()
                    unit = parts[-1] if len(parts) == 2 else None
                number = _number(value, unit)
                if number is not None and unit in _BYTES:
                    number *= _BYTES[unit]
                if number is not None and unit == "%":
                    number /= 100.0
                if number is not None and number < 0:
                    raise ValueError(f"{name} {value!r} is negative")
                return number

            power = next((p for p in (num(f) for f in _POWER_FIELDS) if p is not None), None)
            name = row.get("name", ("", None))[0].strip() or None
            device = _device(catalog, name, devices)
            check_power_w(
                power, "power.draw", device.tdp_w if device else None, device.id if device else None
            )
            index_text = row.get("index", ("", None))[0].strip()
            yield GpuSample(
                timestamp=ts,
                gpu_index=int(index_text) if index_text.isdigit() else -1,
                uuid=row.get("uuid", ("", None))[0].strip(),
                name=name,
                power_w=power,
                gpu_util_frac=check_utilization_frac(num("utilization.gpu"), "utilization.gpu"),
                mem_used_bytes=num("memory.used"),
                mem_total_bytes=num("memory.total"),
                line=lineno,
            )
        except ValueError as exc:
            rejected.append(RejectedRow(path, lineno, str(exc), line))


def _device(catalog: Catalog | None, name: str | None, cache: dict[str, Any]) -> Any:
    """The catalog device an nvidia-smi ``name`` refers to (for its TDP), or None when unknown."""
    if catalog is None or not name:
        return None
    if name not in cache:
        try:
            cache[name] = catalog.device(name.split(" MIG ")[0])
        except CatalogError:
            cache[name] = None
    return cache[name]


def parse_nvidia_smi(
    lines: Iterable[str],
    *,
    rejected: list[RejectedRow],
    path: str = "<nvidia-smi>",
    fields: Sequence[str] | str | None = None,
    assume_tz: str | None = None,
    interval_s: float | None = 3600.0,
    max_gap_s: float | None = 300.0,
    catalog: Catalog | None = None,
) -> Iterator[UsageRecord]:
    """Stream an nvidia-smi CSV log into one UsageRecord per GPU per interval (``source="nvidia-smi"``).

    See :func:`parse_nvidia_smi_samples` for the rows and :func:`flopwise.meter.nvml.aggregate_samples` for
    the aggregation (energy by trapezoid of power over time, gaps over *max_gap_s* not integrated).
    """
    samples = parse_nvidia_smi_samples(
        lines, rejected=rejected, path=path, fields=fields, assume_tz=assume_tz, catalog=catalog
    )
    yield from iter_aggregate_samples(samples, interval_s, max_gap_s=max_gap_s, source="nvidia-smi",
                                      rejected=rejected, path=path, catalog=catalog)  # fmt: skip
