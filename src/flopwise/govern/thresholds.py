"""Regulatory compute thresholds as data (``data/thresholds.csv``) and the flags a request raises.

Metrics (``metric`` column):

``training_flops``
    the request's ``flops``, for ``train`` and ``fine-tune`` workloads (EU AI Act 1e23 indicator and
    1e25 systemic-risk presumption; US EO 14110 1e26, rescinded).
``modification_frac``
    a fine-tune's ``flops / base_model_flops`` (EU GPAI guidelines: above one third makes the modifier a
    provider); not evaluated when ``base_model_flops`` is unknown.
``cluster_flop_per_s``
    ``device_count x peak_flop_per_s_per_device`` (US EO 14110 sec. 4.2(b)(ii), 1e20 op/s, rescinded).
``device_tpp``
    the device's Total Processing Performance (US ECCN 3A090), see :func:`device_tpp`.
``device_performance_density``
    TPP / die area in mm^2 (3A090), evaluated only when the caller passes ``die_area_mm2``; the row's
    ``and_tpp_gte`` / ``and_tpp_lt`` / ``and_density_lt`` narrow it to the rule's band.

A flag is raised whatever the row's ``status`` (``in_force``, ``guidance``, ``rescinded``): the flag says
which, and the policy decides what approval it needs (``threshold_flags`` in a rule's condition).

Reading the packaged CSV (:func:`load_thresholds`) is the one file read in ``govern``: package data,
read-only, like the hardware catalog. :func:`parse_thresholds` takes the text and is pure.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources

from flopwise.catalog.types import DTYPES, Device
from flopwise.errors import InputError
from flopwise.govern.facts import RequestFacts
from flopwise.units import TERA
from flopwise.vocab import TRAINING_WORKLOADS

__all__ = [
    "DTYPE_BITS",
    "METRICS",
    "STATUSES",
    "THRESHOLD_COLUMNS",
    "Threshold",
    "ThresholdFlag",
    "device_peak_flop_per_s",
    "device_tpp",
    "flag_thresholds",
    "load_thresholds",
    "parse_thresholds",
]

METRICS = (
    "training_flops",
    "modification_frac",
    "cluster_flop_per_s",
    "device_tpp",
    "device_performance_density",
)
STATUSES = ("in_force", "guidance", "rescinded")
BASES = ("datasheet", "measured", "derived")
THRESHOLD_COLUMNS = (
    "id",
    "jurisdiction",
    "name",
    "metric",
    "comparison",
    "value",
    "and_tpp_gte",
    "and_tpp_lt",
    "and_density_lt",
    "data_classification",
    "status",
    "as_of",
    "source_url",
    "retrieved",
    "basis",
    "note",
)

#: bit length of one operand per catalog data type, for 3A090's TPP. tf32 is counted at its 32-bit
#: storage width (it never sets the maximum on catalog devices: tf32 runs at half the bf16 rate).
DTYPE_BITS = {"fp32": 32, "tf32": 32, "bf16": 16, "fp16": 16, "fp8": 8, "int8": 8, "fp4": 4, "int4": 4}

#: data types from the lowest bit length up, so a tie names the narrow type the figure is usually quoted for
_TPP_ORDER = ("fp4", "int4", "fp8", "int8", "bf16", "fp16", "tf32", "fp32")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TRAINING_WORKLOADS = TRAINING_WORKLOADS


@dataclass(frozen=True)
class Threshold:
    """One row of thresholds.csv. ``value`` is exact (a Fraction: ``1/3`` stays one third)."""

    id: str
    jurisdiction: str
    name: str
    metric: str
    comparison: str  # gt | gte
    value: Fraction
    and_tpp_gte: Fraction | None
    and_tpp_lt: Fraction | None
    and_density_lt: Fraction | None
    data_classification: str
    status: str
    as_of: str
    source_url: str
    retrieved: str
    basis: str
    note: str


@dataclass(frozen=True)
class ThresholdFlag:
    """A threshold the request crosses: what was measured, the line, and the rule's status and source."""

    threshold_id: str
    name: str
    jurisdiction: str
    metric: str
    measured: float
    limit: float
    status: str
    as_of: str
    source_url: str
    message: str


def _fraction(text: str, field: str, line: int) -> Fraction:
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise InputError(
            f"thresholds.csv line {line} {field}", text, "give a number such as 1e25 or 1/3"
        ) from None
    if value <= 0:
        raise InputError(f"thresholds.csv line {line} {field}", text, "must be greater than zero")
    return value


def parse_thresholds(text: str) -> tuple[Threshold, ...]:
    """Parse thresholds CSV text; InputError naming the line and column of any bad cell."""
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != THRESHOLD_COLUMNS:
        raise InputError(
            "thresholds.csv header", reader.fieldnames, f"use the columns {', '.join(THRESHOLD_COLUMNS)}"
        )
    out: list[Threshold] = []
    seen: set[str] = set()
    for line, row in enumerate(reader, start=2):
        where = f"thresholds.csv line {line}"
        if None in row or any(v is None for v in row.values()):
            raise InputError(where, row, f"give exactly {len(THRESHOLD_COLUMNS)} cells")
        if not row["id"] or row["id"] in seen:
            raise InputError(f"{where} id", row["id"], "give a unique, non-empty id")
        seen.add(row["id"])
        for column, accepted in (
            ("metric", METRICS),
            ("status", STATUSES),
            ("basis", BASES),
            ("comparison", ("gt", "gte")),
        ):
            if row[column] not in accepted:
                raise InputError(f"{where} {column}", row[column], f"use one of {', '.join(accepted)}")
        for column in ("as_of", "retrieved"):
            if not _DATE.match(row[column]):
                raise InputError(f"{where} {column}", row[column], "give an ISO date YYYY-MM-DD")
        urls = row["source_url"].split("|")
        if not all(u.startswith(("https://", "http://")) for u in urls):
            raise InputError(f"{where} source_url", row["source_url"], "give http(s) URLs separated by |")
        if not row["note"].strip():
            raise InputError(f"{where} note", row["note"], "say what the row means and where its number is")
        extras = {
            k: (_fraction(row[k], k, line) if row[k].strip() else None)
            for k in ("and_tpp_gte", "and_tpp_lt", "and_density_lt")
        }
        if row["metric"] != "device_performance_density" and any(v is not None for v in extras.values()):
            raise InputError(
                f"{where} and_tpp_gte", row["and_tpp_gte"], "only device_performance_density rows take bands"
            )
        out.append(
            Threshold(
                row["id"],
                row["jurisdiction"],
                row["name"],
                row["metric"],
                row["comparison"],
                _fraction(row["value"], "value", line),
                extras["and_tpp_gte"],
                extras["and_tpp_lt"],
                extras["and_density_lt"],
                row["data_classification"],
                row["status"],
                row["as_of"],
                row["source_url"],
                row["retrieved"],
                row["basis"],
                row["note"],
            )
        )
    return tuple(out)


def load_thresholds() -> tuple[Threshold, ...]:
    """The thresholds shipped with flopwise (``flopwise/govern/data/thresholds.csv``)."""
    text = resources.files("flopwise.govern").joinpath("data/thresholds.csv").read_text(encoding="utf-8")
    return parse_thresholds(text)


def device_tpp(device: Device) -> tuple[float, str]:
    """US ECCN 3A090 Total Processing Performance of *device* and the data type that sets it.

    TPP = 2 x MacTOPS x bit length, maximised over precisions. One MAC is two operations, so with the
    catalog's dense peaks in TFLOP/s (or TOP/s) this is ``max over dtypes of peak x bits``. Dense peaks
    (no 2:4 sparsity). H100 SXM: fp8 and int8 1978.9 x 8 = 15831 (fp16 989.4 x 16 = 15830);
    A100: 312 x 16 = 624 x 8 = 4992. Several types often tie (the Tensor Core rate doubles as the width
    halves); the type returned is the narrowest of the tied ones.
    Source: EAR Supplement No. 1 to Part 774, ECCN 3A090, technical note (BIS rule of 2023-10-25).
    """
    best, best_dtype = 0.0, ""
    for dtype in _TPP_ORDER:
        if dtype not in DTYPES:
            continue
        peak = device.peak_tflop_per_s(dtype)
        if peak is None:
            continue
        tpp = peak * DTYPE_BITS[dtype]
        if tpp > best + 1e-9:
            best, best_dtype = tpp, dtype
    return best, best_dtype


def device_peak_flop_per_s(device: Device) -> float:
    """The device's highest dense peak over data types, in operations per second (for cluster capacity)."""
    peaks = [p for p in (device.peak_tflop_per_s(d) for d in DTYPES) if p is not None]
    return max(peaks) * TERA


def _exact(value: float) -> Fraction:
    """*value* as the decimal its shortest repr shows, so the float 1e25 is exactly 10^25."""
    return Fraction(repr(float(value)))


def _crosses(measured: Fraction, threshold: Threshold) -> bool:
    return measured > threshold.value if threshold.comparison == "gt" else measured >= threshold.value


def flag_thresholds(
    facts: RequestFacts,
    thresholds: Sequence[Threshold],
    *,
    device: Device | None = None,
    die_area_mm2: float | None = None,
) -> list[ThresholdFlag]:
    """The thresholds *facts* crosses, in the order of *thresholds*.

    ``device`` (the catalog Device of ``facts.device_type``) enables the device rows and fills in the
    cluster peak when ``facts.peak_flop_per_s_per_device`` is unset; ``die_area_mm2`` enables the
    performance-density rows. Rows that cannot be evaluated are skipped, never guessed.
    """
    if device is not None and device.id != facts.device_type:
        raise InputError(
            "device", device.id, f"pass the catalog device of the request ({facts.device_type!r})"
        )
    if die_area_mm2 is not None and not die_area_mm2 > 0:
        raise InputError("die_area_mm2", die_area_mm2, "give the die area in mm^2, greater than zero")
    tpp = device_tpp(device)[0] if device is not None else None
    peak = facts.peak_flop_per_s_per_device or (
        device_peak_flop_per_s(device) if device is not None else None
    )
    flags: list[ThresholdFlag] = []
    for t in thresholds:
        measured: float | Fraction | None = None
        where = ""
        if t.data_classification and facts.data_classification != t.data_classification:
            continue
        if t.metric == "training_flops" and facts.workload in _TRAINING_WORKLOADS:
            measured, where = facts.flops, f"{facts.workload} of {facts.flops:.3g} FLOP"
        elif t.metric == "modification_frac" and facts.workload == "fine-tune" and facts.base_model_flops:
            measured = _exact(facts.flops) / _exact(facts.base_model_flops)
            where = f"fine-tune of {facts.flops:.3g} FLOP on a base of {facts.base_model_flops:.3g} FLOP"
        elif t.metric == "cluster_flop_per_s" and peak:
            measured = facts.device_count * peak
            where = f"{facts.device_count} x {facts.device_type} at {peak:.3g} op/s peak each"
        elif t.metric == "device_tpp" and tpp is not None:
            measured, where = tpp, f"{facts.device_type} TPP {tpp:.0f}"
        elif t.metric == "device_performance_density" and tpp is not None and die_area_mm2 is not None:
            density = tpp / die_area_mm2
            in_band = (
                (t.and_tpp_gte is None or _exact(tpp) >= t.and_tpp_gte)
                and (t.and_tpp_lt is None or _exact(tpp) < t.and_tpp_lt)
                and (t.and_density_lt is None or _exact(density) < t.and_density_lt)
            )
            if in_band:
                measured = density
                where = f"{facts.device_type} TPP {tpp:.0f} over {die_area_mm2:g} mm^2 = {density:.2f}"
        if measured is None or not _crosses(
            measured if isinstance(measured, Fraction) else _exact(measured), t
        ):
            continue
        region = f" in region {facts.region!r}" if facts.region and t.metric.startswith("device") else ""
        op = ">" if t.comparison == "gt" else ">="
        flags.append(
            ThresholdFlag(
                t.id,
                t.name,
                t.jurisdiction,
                t.metric,
                float(measured),
                float(t.value),
                t.status,
                t.as_of,
                t.source_url.split("|")[0],
                f"{where}{region} {op} {float(t.value):g}: {t.name} [{t.status}, as of {t.as_of}]",
            )
        )
    return flags
