"""Parse dcgm-exporter's Prometheus text into per-GPU readings, and pairs of scrapes into usage records.

::

    rejected: list[RejectedRow] = []
    before = parse_dcgm_scrape(lines_t0, scraped_at=t0, path="t0.prom", rejected=rejected, catalog=cat)
    after = parse_dcgm_scrape(lines_t1, scraped_at=t1, path="t1.prom", rejected=rejected, catalog=cat)
    records = list(dcgm_usage([before, after]))

The exposition format (https://prometheus.io/docs/instrumenting/exposition_formats/) is parsed in full:
``# HELP``/``# TYPE`` and other comments, label values with ``\\\\``, ``\\"`` and ``\\n`` escapes, ``NaN`` and
``±Inf``, and an optional millisecond timestamp. Fields used (units from dcgm-exporter's
``etc/default-counters.csv``):

=======================================  ========  =================================
metric                                   unit      reading field
=======================================  ========  =================================
DCGM_FI_DEV_POWER_USAGE                  W         ``power_w``
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION     mJ        ``energy_mj`` (counter since boot)
DCGM_FI_DEV_GPU_UTIL                     %         ``gpu_util_frac``
DCGM_FI_PROF_GR_ENGINE_ACTIVE            ratio     ``gr_engine_active_frac``
DCGM_FI_DEV_FB_USED / FB_FREE            MiB       ``fb_used_mib`` / ``fb_free_mib``
=======================================  ========  =================================

DCGM marks a missing value with a "blank" sentinel (``dcgm_structs.h``): int32 ``0x7ffffff0`` and the three
codes after it (not found, not supported, no permission), int64 ``0x7ffffffffffffff0`` and the codes after
it, and fp64 ``2**47`` and up. A sample holding a sentinel is skipped (counted in ``blank_samples``), so the
reading keeps None for that field. MIG instances (labels ``GPU_I_ID``, ``GPU_I_PROFILE``) are separate
readings whose ``device_fraction`` is the profile's share of the GPU's compute slices.

Standard library only; the parser takes text lines (a scrape over HTTP is fetched by the caller).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from flopwise.errors import CatalogError, IngestError
from flopwise.meter.bounds import check_power_w, check_utilization_frac
from flopwise.meter.record import RejectedRow, UsageRecord
from flopwise.units import J_PER_KWH, MILLIJOULES_PER_J, S_PER_H

if TYPE_CHECKING:
    from flopwise.catalog import Catalog

__all__ = [
    "DcgmScrape",
    "GpuReading",
    "PromSample",
    "dcgm_usage",
    "is_dcgm_blank",
    "mig_fraction",
    "parse_dcgm_scrape",
    "parse_prometheus_text",
]

DCGM_INT32_BLANK = 0x7FFFFFF0
DCGM_INT64_BLANK = 0x7FFFFFFFFFFFFFF0
DCGM_FP64_BLANK = 140737488355328.0  # 2**47
_BLANK_CODES = 4  # BLANK, NOT_FOUND, NOT_SUPPORTED, NOT_PERMISSIONED
_INT64_FIELDS = {"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"}
_FP64_FIELDS = {"DCGM_FI_DEV_POWER_USAGE"}
_PCT = 100.0
_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_MIG_PROFILE_RE = re.compile(r"^(\d+)g\.")
#: compute slices of a whole GPU by model (NVIDIA MIG user guide, "Supported MIG profiles")
_MIG_SLICES = {"A30": 4}
_MIG_SLICES_DEFAULT = 7  # A100, H100, H200, B200, GH200


@dataclass(frozen=True)
class PromSample:
    """One sample line of the exposition format."""

    name: str
    labels: dict[str, str]
    value: float
    timestamp_ms: int | None
    line: int


def _parse_labels(text: str, pos: int) -> tuple[dict[str, str], int]:
    """Labels from ``{`` at *pos*; returns them and the index after ``}``. Raises ValueError."""
    labels: dict[str, str] = {}
    i = pos + 1
    n = len(text)
    while True:
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == "}":
            return labels, i + 1
        m = _NAME_RE.match(text, i)
        if not m:
            raise ValueError(f"bad label name at column {i + 1}")
        name = m.group(0)
        i = m.end()
        while i < n and text[i] in " \t":
            i += 1
        if i + 1 >= n or text[i] != "=" or text[i + 1] != '"':
            raise ValueError(f'label {name!r} has no ="value"')
        i += 2
        out = []
        while True:
            if i >= n:
                raise ValueError(f"label {name!r}: unterminated value (truncated line?)")
            c = text[i]
            if c == "\\" and i + 1 < n:
                nxt = text[i + 1]
                out.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                out.append(c)
                i += 1
        labels[name] = "".join(out)
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == ",":
            i += 1
        elif i < n and text[i] == "}":
            return labels, i + 1
        else:
            raise ValueError(f"expected ',' or '}}' after label {name!r}")


def _parse_value(text: str) -> float:
    low = text.lower()
    if low in {"nan"}:
        return math.nan
    if low in {"+inf", "inf"}:
        return math.inf
    if low == "-inf":
        return -math.inf
    return float(text)


def parse_prometheus_text(
    lines: Iterable[str], *, path: str, rejected: list[RejectedRow]
) -> Iterator[PromSample]:
    """Stream the samples of Prometheus text exposition lines; malformed lines go to *rejected*.

    Comments (``#``, including ``# HELP`` and ``# TYPE``) and blank lines are skipped.
    """
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            m = _NAME_RE.match(stripped)
            if not m:
                raise ValueError("no metric name")
            name = m.group(0)
            i = m.end()
            labels: dict[str, str] = {}
            if i < len(stripped) and stripped[i] == "{":
                labels, i = _parse_labels(stripped, i)
            rest = stripped[i:].split()
            if not rest or len(rest) > 2:
                raise ValueError("expected a value and an optional timestamp after the labels")
            value = _parse_value(rest[0])
            ts = int(rest[1]) if len(rest) == 2 else None
        except ValueError as exc:
            rejected.append(RejectedRow(path, lineno, f"not a Prometheus sample: {exc}", line))
            continue
        yield PromSample(name, labels, value, ts, lineno)


def is_dcgm_blank(metric: str, value: float) -> bool:
    """True when *value* is one of DCGM's blank/not-found/not-supported/no-permission sentinels."""
    if math.isnan(value):
        return True
    if metric in _INT64_FIELDS:
        return value >= DCGM_INT64_BLANK - 1024  # float rounding of the int64 codes
    if value >= DCGM_FP64_BLANK:
        return True
    if metric in _FP64_FIELDS:
        return False
    return DCGM_INT32_BLANK <= value < DCGM_INT32_BLANK + _BLANK_CODES


def mig_fraction(profile: str, model_name: str | None = None) -> float | None:
    """The share of a GPU's compute that a MIG profile holds: ``"3g.40gb"`` on an H100 is 3/7.

    A100, H100, H200 and B200 have 7 compute slices, A30 has 4 (NVIDIA MIG user guide,
    https://docs.nvidia.com/datacenter/tesla/mig-user-guide/). None when the profile does not parse.
    """
    m = _MIG_PROFILE_RE.match(profile.strip())
    if not m:
        return None
    slices = next(
        (s for key, s in _MIG_SLICES.items() if model_name and key in model_name), _MIG_SLICES_DEFAULT
    )
    return min(1.0, int(m.group(1)) / slices)


@dataclass(frozen=True)
class GpuReading:
    """What one scrape says about one GPU or one MIG instance. Fields the scrape lacks are None."""

    key: str  # "<Hostname>/<UUID>" or "<Hostname>/<UUID>/<GPU_I_ID>"
    hostname: str
    gpu_index: str
    uuid: str
    model_name: str | None
    device_type: str | None  # catalog id when the model name resolves, else the model name
    mig_instance_id: str | None = None
    mig_profile: str | None = None
    device_fraction: float = 1.0
    power_w: float | None = None
    energy_mj: float | None = None
    gpu_util_frac: float | None = None
    gr_engine_active_frac: float | None = None
    fb_used_mib: float | None = None
    fb_free_mib: float | None = None
    pod: str | None = None
    namespace: str | None = None
    container: str | None = None
    job_id: str | None = None
    lines: tuple[int, ...] = ()


@dataclass(frozen=True)
class DcgmScrape:
    """One scrape: when it was taken, the readings by key, and how many blank sentinels were skipped."""

    scraped_at: datetime
    gpus: dict[str, GpuReading] = field(default_factory=dict)
    samples: int = 0
    used_samples: int = 0
    blank_samples: int = 0
    path: str = ""


_METRIC_FIELDS = {
    "DCGM_FI_DEV_POWER_USAGE": ("power_w", 1.0),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("energy_mj", 1.0),
    "DCGM_FI_DEV_GPU_UTIL": ("gpu_util_frac", 1 / _PCT),
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": ("gr_engine_active_frac", 1.0),
    "DCGM_FI_DEV_FB_USED": ("fb_used_mib", 1.0),
    "DCGM_FI_DEV_FB_FREE": ("fb_free_mib", 1.0),
}


def _check_bounds(attr: str, value: float, metric: str, device_type: object, catalog: Catalog | None) -> None:
    """Utilization within 0-100 %, power within 2x the device's TDP (``flopwise.meter.bounds``)."""
    if attr == "power_w":
        device = catalog.devices.get(device_type) if catalog is not None and device_type else None
        check_power_w(value, metric, device.tdp_w if device else None, device.id if device else None)
    elif attr.endswith("_frac") and attr != "device_fraction":
        check_utilization_frac(value, metric)
    elif not math.isfinite(value):
        raise ValueError(f"{metric} {value!r} is not a finite number")


def parse_dcgm_scrape(
    lines: Iterable[str],
    *,
    scraped_at: datetime,
    rejected: list[RejectedRow],
    path: str = "<dcgm>",
    catalog: Catalog | None = None,
) -> DcgmScrape:
    """Read one dcgm-exporter scrape into a :class:`DcgmScrape`.

    *scraped_at* must be timezone-aware (the caller knows when it scraped; samples that carry their own
    timestamp do not change it). DCGM metrics that flopwise does not use (temperature, clocks, ...) are read
    and counted in ``samples`` but not kept. A sample without a ``gpu`` or ``UUID`` label is rejected.
    Raises IngestError when the text has no DCGM_FI sample at all.
    """
    if scraped_at.tzinfo is None:
        raise IngestError(path, None, "scraped_at has no time zone; pass an aware datetime (e.g. UTC)")
    readings: dict[str, dict[str, object]] = {}
    samples = used = blank = 0
    device_cache: dict[str, str] = {}
    for s in parse_prometheus_text(lines, path=path, rejected=rejected):
        if not s.name.startswith("DCGM_FI_"):
            rejected.append(RejectedRow(path, s.line, f"not a DCGM metric: {s.name!r}"))
            continue
        samples += 1
        lab = s.labels
        uuid = lab.get("UUID") or lab.get("uuid") or ""
        gpu = lab.get("gpu", "")
        if not uuid and not gpu:
            rejected.append(RejectedRow(path, s.line, f"{s.name} has neither a 'gpu' nor a 'UUID' label"))
            continue
        host = lab.get("Hostname", "")
        gi = lab.get("GPU_I_ID") or None
        key = f"{host}/{uuid or gpu}" + (f"/{gi}" if gi else "")
        r = readings.setdefault(
            key, {"key": key, "hostname": host, "gpu_index": gpu, "uuid": uuid, "lines": []}
        )
        r["lines"].append(s.line)  # type: ignore[union-attr]
        model = lab.get("modelName")
        if model and "model_name" not in r:
            r["model_name"] = model
            if catalog is not None:
                if model not in device_cache:
                    try:
                        device_cache[model] = catalog.device(model).id
                    except CatalogError:
                        device_cache[model] = model
                r["device_type"] = device_cache[model]
            else:
                r["device_type"] = model
        if gi:
            r["mig_instance_id"] = gi
            r["mig_profile"] = lab.get("GPU_I_PROFILE")
        for label, name in (("pod", "pod"), ("namespace", "namespace"), ("container", "container")):
            if lab.get(label):
                r[name] = lab[label]
        job = lab.get("hpc_job") or lab.get("job_id")
        if job:
            r["job_id"] = job
        if s.name not in _METRIC_FIELDS:
            continue
        if is_dcgm_blank(s.name, s.value):
            blank += 1
            continue
        attr, scale = _METRIC_FIELDS[s.name]
        value = s.value * scale
        try:
            _check_bounds(attr, value, s.name, r.get("device_type"), catalog)
        except ValueError as err:
            rejected.append(RejectedRow(path, s.line, str(err)))
            continue
        r[attr] = value
        used += 1
    if samples == 0:
        raise IngestError(path, None, "no DCGM_FI_* sample found; is this a dcgm-exporter scrape (/metrics)?")
    gpus = {}
    for key, r in readings.items():
        r["lines"] = tuple(r["lines"])  # type: ignore[arg-type]
        r.setdefault("model_name", None)
        r.setdefault("device_type", None)
        reading = GpuReading(**r)  # type: ignore[arg-type]
        if reading.mig_profile:
            frac = mig_fraction(reading.mig_profile, reading.model_name)
            if frac is not None:
                reading = replace(reading, device_fraction=frac)
        gpus[key] = reading
    return DcgmScrape(scraped_at, gpus, samples, used, blank, path)


def _physical_key(reading: GpuReading) -> str:
    return f"{reading.hostname}/{reading.uuid or reading.gpu_index}"


def _mean(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return (a + b) / 2


def _energy_j(before: GpuReading | None, after: GpuReading, dt_s: float) -> tuple[float | None, str | None]:
    """Energy between two readings of the same GPU: the counter delta (a decrease means a reset, so the new
    value is the energy since then, as Prometheus ``increase()`` assumes), else the trapezoid of power."""
    if before is not None and before.energy_mj is not None and after.energy_mj is not None:
        delta_mj = after.energy_mj - before.energy_mj
        if delta_mj < 0:
            delta_mj = after.energy_mj
        return delta_mj / MILLIJOULES_PER_J, "counter"
    if before is not None and before.power_w is not None and after.power_w is not None:
        return (before.power_w + after.power_w) / 2 * dt_s, "trapezoid"
    return None, None


def dcgm_usage(scrapes: Iterable[DcgmScrape]) -> Iterator[UsageRecord]:
    """Usage records for each GPU (or MIG instance) between consecutive scrapes.

    Per interval and GPU: device-hours = device fraction x interval; energy from the
    TOTAL_ENERGY_CONSUMPTION delta, else the trapezoid of POWER_USAGE; utilization the mean of the two
    readings (GR_ENGINE_ACTIVE when present, else GPU_UTIL; GPU_UTIL is not reported for MIG instances).
    A MIG GPU's energy is split among its instances by their fractions, and the share of unassigned slices
    goes to a record marked ``x_extra["mig_unassigned"]``, so the records of a GPU add up to its energy.
    """
    prev: DcgmScrape | None = None
    for scrape in scrapes:
        if prev is not None:
            if scrape.scraped_at <= prev.scraped_at:
                raise IngestError(
                    scrape.path,
                    None,
                    f"scrape at {scrape.scraped_at.isoformat()} is not after the one before it",
                )
            yield from _interval(prev, scrape)
        prev = scrape


def _device_energy(
    prev: DcgmScrape, cur: DcgmScrape, dt_s: float
) -> dict[str, tuple[float | None, str | None]]:
    """Energy per physical GPU, from whichever reading of it (whole GPU or any MIG instance) carries it."""
    out: dict[str, tuple[float | None, str | None]] = {}
    for key, after in cur.gpus.items():
        phys = _physical_key(after)
        if out.get(phys, (None, None))[0] is not None:
            continue
        out[phys] = _energy_j(prev.gpus.get(key), after, dt_s)
    return out


def _interval(prev: DcgmScrape, cur: DcgmScrape) -> Iterator[UsageRecord]:
    dt_s = (cur.scraped_at - prev.scraped_at).total_seconds()
    energy = _device_energy(prev, cur, dt_s)
    by_phys: dict[str, list[GpuReading]] = {}
    for reading in cur.gpus.values():
        by_phys.setdefault(_physical_key(reading), []).append(reading)
    for phys, readings in by_phys.items():
        instances = [r for r in readings if r.mig_instance_id]
        whole = [r for r in readings if not r.mig_instance_id]
        energy_j, basis = energy.get(phys, (None, None))
        parts: list[tuple[GpuReading, float, bool]] = []
        if instances:
            assigned = sum(r.device_fraction for r in instances)
            parts = [(r, r.device_fraction, False) for r in instances]
            if assigned < 1.0 - 1e-9:
                base = whole[0] if whole else instances[0]
                parts.append((base, 1.0 - assigned, True))
        else:
            parts = [(whole[0], 1.0, False)]
        for reading, fraction, unassigned in parts:
            before = prev.gpus.get(reading.key)
            util = None
            if not unassigned:
                util = _mean(before.gr_engine_active_frac if before else None, reading.gr_engine_active_frac)
                if util is None and not reading.mig_instance_id:
                    util = _mean(before.gpu_util_frac if before else None, reading.gpu_util_frac)
            tags = {k: v for k, v in (("pod", reading.pod), ("namespace", reading.namespace),
                                      ("container", reading.container)) if v and not unassigned}  # fmt: skip
            instance = None if unassigned else reading.mig_instance_id
            key = (
                f"dcgm:{phys}" + (f"/{instance}" if instance else "") + ("/unassigned" if unassigned else "")
            )
            extra: dict[str, object] = {"gpu_index": reading.gpu_index, "uuid": reading.uuid,
                                        "hostname": reading.hostname, "energy_basis": basis}  # fmt: skip
            if reading.mig_profile and not unassigned:
                extra["mig_profile"] = reading.mig_profile
                extra["mig_instance_id"] = reading.mig_instance_id
            if unassigned:
                extra["mig_unassigned"] = True
            if reading.fb_used_mib is not None and not instances:
                extra["fb_used_mib"] = reading.fb_used_mib
            if reading.power_w is not None:
                extra["power_w"] = reading.power_w
            yield UsageRecord(
                source="dcgm",
                source_key=f"{key}:{prev.scraped_at.astimezone(UTC).isoformat()}",
                charge_period_start=prev.scraped_at.astimezone(UTC),
                charge_period_end=cur.scraped_at.astimezone(UTC),
                resource_id=reading.uuid or None,
                service_category="Compute",
                tags=tags,
                x_device_type=reading.device_type,
                x_device_count=fraction,
                x_device_hours=fraction * dt_s / S_PER_H,
                x_gpu_utilization=util,
                x_energy_kwh=None if energy_j is None else energy_j * fraction / J_PER_KWH,
                x_job_id=None if unassigned else reading.job_id,
                x_account=None if unassigned else reading.namespace,
                x_extra=extra,
            )
