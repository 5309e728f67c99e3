"""GPU samplers (NVML live, CSV replay) and the aggregation of samples into usage records.

Shaped after zeus (https://github.com/ml-energy/zeus, ``zeus/device/gpu/nvidia.py``): the vendor API sits
behind the :class:`GpuSampler` ABC, ``pynvml`` (the ``nvidia-ml-py`` package) is imported only when an
:class:`NvmlSampler` is built, and NVML errors become flopwise errors. :class:`ReplaySampler` replays a CSV
of recorded samples (``write_samples_csv`` writes one), so tests run the real aggregation path.

::

    sampler = NvmlSampler()                 # UnsupportedError "no NVIDIA driver ..." without a driver
    sampler.begin_window("step")
    ...
    records = sampler.end_window("step")    # one UsageRecord per GPU

NVML calls and units (https://docs.nvidia.com/deploy/nvml-api/group__nvmlDeviceQueries.html):
``nvmlDeviceGetPowerUsage`` mW, ``nvmlDeviceGetTotalEnergyConsumption`` mJ since driver load (Volta and
newer), ``nvmlDeviceGetUtilizationRates`` %, ``nvmlDeviceGetMemoryInfo`` bytes,
``nvmlDeviceGetComputeRunningProcesses`` (pid, usedGpuMemory bytes), MIG devices through
``nvmlDeviceGetMigDeviceHandleByIndex``. A query the device does not support gives None, never zero.
"""

from __future__ import annotations

import contextlib
import csv
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from flopwise.errors import CatalogError, IngestError, InputError, UnsupportedError
from flopwise.meter.bounds import check_power_w, check_utilization_frac
from flopwise.meter.dcgm import mig_fraction
from flopwise.meter.record import RejectedRow, UsageRecord
from flopwise.units import J_PER_KWH, MILLIJOULES_PER_J, MILLIWATTS_PER_W, S_PER_H

__all__ = [
    "SAMPLE_CSV_COLUMNS",
    "GpuSample",
    "GpuSampler",
    "NvmlSampler",
    "ProcessSample",
    "ReplaySampler",
    "aggregate_samples",
    "iter_aggregate_samples",
    "write_samples_csv",
]

_PCT = 100.0
_INSTALL_HINT = "install it with `pip install nvidia-ml-py` (it provides the pynvml module)"
_NO_DRIVER_HINT = (
    "Install the NVIDIA driver on this machine, or meter from logs instead with "
    "`flopwise ingest nvidia-smi FILE` or `flopwise ingest dcgm FILE|URL`"
)


@dataclass(frozen=True)
class ProcessSample:
    """One process on a GPU at sample time."""

    pid: int
    used_memory_bytes: float | None = None


@dataclass(frozen=True)
class GpuSample:
    """One reading of one GPU (or MIG device). None means the device did not report the value."""

    timestamp: datetime  # timezone-aware
    gpu_index: int
    uuid: str
    name: str | None = None
    power_w: float | None = None
    energy_mj: float | None = None  # cumulative counter
    gpu_util_frac: float | None = None
    mem_used_bytes: float | None = None
    mem_total_bytes: float | None = None
    mig_profile: str | None = None
    device_fraction: float = 1.0
    processes: tuple[ProcessSample, ...] = ()
    line: int | None = None  # where it came from, for recorded samples

    @property
    def key(self) -> str:
        return self.uuid or str(self.gpu_index)


#: Columns of a recorded sample CSV (``processes``: ``pid=bytes`` joined by ``;``).
SAMPLE_CSV_COLUMNS = (
    "timestamp", "gpu_index", "uuid", "name", "power_w", "energy_mj", "gpu_util_frac", "mem_used_bytes",
    "mem_total_bytes", "mig_profile", "device_fraction", "processes",
)  # fmt: skip


class GpuSampler(ABC):
    """A source of per-GPU samples, with zeus-style named measurement windows."""

    def __init__(self) -> None:
        self._windows: dict[str, list[GpuSample]] = {}

    @abstractmethod
    def sample(self) -> list[GpuSample]:
        """One sample per GPU (and per MIG device), all taken now."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the vendor library; the default has nothing to release."""

    def begin_window(self, key: str) -> None:
        """Start the measurement window *key*: windows are named and may overlap."""
        self._windows[key] = self.sample()

    def end_window(self, key: str) -> list[UsageRecord]:
        """End window *key*: one record per GPU covering the window. Raises InputError for an unknown key."""
        if key not in self._windows:
            raise InputError(
                "window", key, f"measurement window {key!r} does not exist; call begin_window first"
            )
        begin = self._windows.pop(key)
        return aggregate_samples([*begin, *self.sample()], interval_s=None, max_gap_s=None, source_prefix=key)

    def __enter__(self) -> GpuSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _import_pynvml() -> Any:
    try:
        import pynvml
    except ImportError as exc:
        raise UnsupportedError(
            f"NVML sampling needs nvidia-ml-py, which is not installed; {_INSTALL_HINT}"
        ) from exc
    return pynvml


def _nvml_error(pynvml: Any, exc: Exception, what: str) -> UnsupportedError:
    """Map an NVMLError onto flopwise's error, with the cause and the fix."""
    no_driver = tuple(
        getattr(pynvml, n)
        for n in ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded")
        if hasattr(pynvml, n)
    )
    if no_driver and isinstance(exc, no_driver):
        return UnsupportedError(f"no NVIDIA driver: NVML could not be loaded ({exc}). {_NO_DRIVER_HINT}.")
    if hasattr(pynvml, "NVMLError_NoPermission") and isinstance(exc, pynvml.NVMLError_NoPermission):
        return UnsupportedError(
            f"NVML denied {what} ({exc}); run the agent as a user allowed to query the GPUs."
        )
    return UnsupportedError(f"NVML failed at {what}: {exc}.")


class NvmlSampler(GpuSampler):
    """Samples every GPU (or the given indices) through NVML.

    Raises UnsupportedError when nvidia-ml-py is missing (with the install command) or when there is no
    NVIDIA driver ("no NVIDIA driver: ..."). *clock* returns the current aware time (tests pass their own).
    """

    def __init__(
        self, gpu_indices: Iterable[int] | None = None, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        super().__init__()
        self._nvml = _import_pynvml()
        self._clock = clock or (lambda: datetime.fromtimestamp(time.time(), UTC))
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as exc:
            raise _nvml_error(self._nvml, exc, "nvmlInit") from exc
        try:
            count = self._nvml.nvmlDeviceGetCount()
            indices = list(range(count)) if gpu_indices is None else list(gpu_indices)
            bad = [i for i in indices if not 0 <= i < count]
            if bad:
                raise InputError("gpu_indices", bad, f"this machine has GPUs 0..{count - 1}")
            self._handles = [(i, self._nvml.nvmlDeviceGetHandleByIndex(i)) for i in indices]
        except self._nvml.NVMLError as exc:
            raise _nvml_error(self._nvml, exc, "listing the GPUs") from exc

    def _query(self, fn: str, *args: Any) -> Any:
        """Call one NVML query; None when the device does not support it (or has no data yet)."""
        nv = self._nvml
        try:
            return getattr(nv, fn)(*args)
        except nv.NVMLError as exc:
            soft = tuple(getattr(nv, n) for n in ("NVMLError_NotSupported", "NVMLError_NoData", "NVMLError_NotFound")
                         if hasattr(nv, n))  # fmt: skip
            if soft and isinstance(exc, soft):
                return None
            raise _nvml_error(nv, exc, fn) from exc

    @staticmethod
    def _text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    def _device_sample(self, now: datetime, index: int, handle: Any, mig_profile: str | None) -> GpuSample:
        name = self._query("nvmlDeviceGetName", handle)
        power_mw = self._query("nvmlDeviceGetPowerUsage", handle)
        energy = self._query("nvmlDeviceGetTotalEnergyConsumption", handle)
        util = self._query("nvmlDeviceGetUtilizationRates", handle)
        mem = self._query("nvmlDeviceGetMemoryInfo", handle)
        procs = self._query("nvmlDeviceGetComputeRunningProcesses", handle) or []
        name_text = self._text(name) if name is not None else None
        fraction = (mig_fraction(mig_profile, name_text) if mig_profile else None) or 1.0
        return GpuSample(
            timestamp=now,
            gpu_index=index,
            uuid=self._text(self._query("nvmlDeviceGetUUID", handle) or ""),
            name=name_text,
            power_w=None if power_mw is None else power_mw / MILLIWATTS_PER_W,
            energy_mj=None if energy is None else float(energy),
            gpu_util_frac=None if util is None else util.gpu / _PCT,
            mem_used_bytes=None if mem is None else float(mem.used),
            mem_total_bytes=None if mem is None else float(mem.total),
            mig_profile=mig_profile,
            device_fraction=fraction,
            processes=tuple(
                ProcessSample(int(p.pid), None if p.usedGpuMemory is None else float(p.usedGpuMemory))
                for p in procs
            ),
        )

    def sample(self) -> list[GpuSample]:
        now = self._clock()
        out = []
        for index, handle in self._handles:
            mig = self._query("nvmlDeviceGetMigMode", handle)
            if mig is not None and mig[0] == getattr(self._nvml, "NVML_DEVICE_MIG_ENABLE", 1):
                for slot in range(self._query("nvmlDeviceGetMaxMigDeviceCount", handle) or 0):
                    mig_handle = self._query("nvmlDeviceGetMigDeviceHandleByIndex", handle, slot)
                    if mig_handle is None:
                        continue
                    mig_name = self._text(self._query("nvmlDeviceGetName", mig_handle) or "")
                    profile = mig_name.rsplit(" ", 1)[-1] if " MIG " in mig_name else None
                    out.append(self._device_sample(now, index, mig_handle, profile))
                continue
            out.append(self._device_sample(now, index, handle, None))
        return out

    def close(self) -> None:
        with contextlib.suppress(self._nvml.NVMLError):
            self._nvml.nvmlShutdown()


def _opt_float(text: str) -> float | None:
    text = text.strip()
    return float(text) if text else None


class ReplaySampler(GpuSampler):
    """Replays a recorded sample CSV (columns :data:`SAMPLE_CSV_COLUMNS`): each :meth:`sample` call returns
    the rows of the next timestamp. Rows are read lazily; malformed rows go to *rejected*."""

    def __init__(
        self, lines: Iterable[str], *, path: str = "<samples>", rejected: list[RejectedRow] | None = None
    ):
        super().__init__()
        self.path = path
        self.rejected: list[RejectedRow] = [] if rejected is None else rejected
        self._rows = self._read(lines)
        self._pending: GpuSample | None = None

    def _read(self, lines: Iterable[str]) -> Iterator[GpuSample]:
        reader = csv.DictReader(lines)
        missing = {"timestamp", "gpu_index"} - set(reader.fieldnames or ())
        if missing:
            raise IngestError(
                self.path, 1, f"the sample CSV lacks {sorted(missing)}; expected {SAMPLE_CSV_COLUMNS}"
            )
        for row in reader:
            lineno = reader.line_num
            try:
                ts = datetime.fromisoformat(row["timestamp"])
                if ts.tzinfo is None:
                    raise ValueError(f"timestamp {row['timestamp']!r} has no time zone")
                procs = []
                for item in filter(None, (row.get("processes") or "").split(";")):
                    pid, _, used = item.partition("=")
                    procs.append(ProcessSample(int(pid), _opt_float(used)))
                yield GpuSample(
                    timestamp=ts,
                    gpu_index=int(row["gpu_index"]),
                    uuid=(row.get("uuid") or "").strip(),
                    name=(row.get("name") or "").strip() or None,
                    power_w=_opt_float(row.get("power_w") or ""),
                    energy_mj=_opt_float(row.get("energy_mj") or ""),
                    gpu_util_frac=_opt_float(row.get("gpu_util_frac") or ""),
                    mem_used_bytes=_opt_float(row.get("mem_used_bytes") or ""),
                    mem_total_bytes=_opt_float(row.get("mem_total_bytes") or ""),
                    mig_profile=(row.get("mig_profile") or "").strip() or None,
                    device_fraction=_opt_float(row.get("device_fraction") or "") or 1.0,
                    processes=tuple(procs),
                    line=lineno,
                )
            except (ValueError, TypeError) as exc:
                self.rejected.append(
                    RejectedRow(self.path, lineno, f"bad sample row: {exc}", ",".join(map(str, row.values())))
                )

    def sample(self) -> list[GpuSample]:
        """The rows of the next timestamp; an empty list once the recording is exhausted."""
        first = self._pending or next(self._rows, None)
        self._pending = None
        if first is None:
            return []
        batch = [first]
        for s in self._rows:
            if s.timestamp != first.timestamp:
                self._pending = s
                break
            batch.append(s)
        return batch

    def samples(self) -> Iterator[GpuSample]:
        """Every remaining sample, in file order."""
        while batch := self.sample():
            yield from batch


def write_samples_csv(samples: Iterable[GpuSample], out: IO[str]) -> int:
    """Record samples as CSV (the format :class:`ReplaySampler` reads). Returns the rows written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SAMPLE_CSV_COLUMNS)
    n = 0
    for s in samples:
        writer.writerow([
            s.timestamp.isoformat(), s.gpu_index, s.uuid, s.name or "",
            *("" if v is None else repr(float(v)) for v in (s.power_w, s.energy_mj, s.gpu_util_frac,
                                                             s.mem_used_bytes, s.mem_total_bytes)),
            s.mig_profile or "", repr(s.device_fraction),
            ";".join(f"{p.pid}={'' if p.used_memory_bytes is None else int(p.used_memory_bytes)}" for p in s.processes),
        ])  # fmt: skip
        n += 1
    return n


@dataclass
class _Bucket:
    """What has been integrated for one GPU in one interval."""

    index: int
    start: datetime | None = None
    end: datetime | None = None
    covered_s: float = 0.0
    energy_j: float = 0.0
    energy_covered_s: float = 0.0
    util_s: float = 0.0
    util_covered_s: float = 0.0
    samples: int = 0
    first_line: int | None = None
    last_line: int | None = None
    mem_used_max_bytes: float | None = None
    bases: set[str] = field(default_factory=set)
    pids: set[int] = field(default_factory=set)


class _Aggregator:
    def __init__(self, interval_s: float | None, max_gap_s: float | None, source: str, source_prefix: str,
                 rejected: list[RejectedRow] | None, path: str, device_type: Callable[[str | None], str | None]):  # fmt: skip
        if interval_s is not None and not (interval_s > 0 and math.isfinite(interval_s)):
            raise InputError("interval_s", interval_s, "give a positive number of seconds, e.g. 3600")
        self.interval_s = interval_s
        self.max_gap_s = max_gap_s
        self.source = source
        self.prefix = source_prefix
        self.rejected = rejected
        self.path = path
        self.device_type = device_type
        self.last: dict[str, GpuSample] = {}
        self.buckets: dict[str, _Bucket] = {}

    def bucket_of(self, t: datetime) -> int:
        return 0 if self.interval_s is None else math.floor(t.timestamp() / self.interval_s)

    def bucket_start(self, index: int) -> datetime:
        assert self.interval_s is not None
        return datetime.fromtimestamp(index * self.interval_s, UTC)

    def note(self, b: _Bucket, s: GpuSample) -> None:
        b.samples += 1
        if s.line is not None:
            b.first_line = s.line if b.first_line is None else b.first_line
            b.last_line = s.line
        if s.mem_used_bytes is not None:
            b.mem_used_max_bytes = max(b.mem_used_max_bytes or 0.0, s.mem_used_bytes)
        b.pids.update(p.pid for p in s.processes)

    def add(self, s: GpuSample) -> Iterator[UsageRecord]:
        key = s.key
        prev = self.last.get(key)
        if prev is not None and s.timestamp <= prev.timestamp:
            if self.rejected is not None:
                self.rejected.append(RejectedRow(self.path, s.line or 0, f"sample of GPU {key} at "
                                     f"{s.timestamp.isoformat()} is not after the one before it"))  # fmt: skip
            return
        self.last[key] = s
        idx = self.bucket_of(s.timestamp)
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = _Bucket(idx, start=s.timestamp, end=s.timestamp)
            self.note(bucket, s)
            return
        dt_s = (s.timestamp - prev.timestamp).total_seconds()
        if self.max_gap_s is not None and dt_s > self.max_gap_s:
            # the logger stopped: nothing is known about the gap, so nothing is integrated over it
            if bucket.index != idx:
                yield from self.emit(key, prev, bucket)
                bucket = self.buckets[key] = _Bucket(idx, start=s.timestamp, end=s.timestamp)
            self.note(bucket, s)
            return
        seg_energy, basis = self.segment_energy(prev, s, dt_s)
        util = None
        if prev.gpu_util_frac is not None and s.gpu_util_frac is not None:
            util = (prev.gpu_util_frac + s.gpu_util_frac) / 2
        t = prev.timestamp
        while True:
            seg_end = s.timestamp if bucket.index == idx else self.bucket_start(bucket.index + 1)
            part_s = (seg_end - t).total_seconds()
            if part_s > 0:
                if bucket.start is None:
                    bucket.start = t
                bucket.end = seg_end
                bucket.covered_s += part_s
                if seg_energy is not None:
                    bucket.energy_j += seg_energy * part_s / dt_s
                    bucket.energy_covered_s += part_s
                    bucket.bases.add(basis or "")
                if util is not None:
                    bucket.util_s += util * part_s
                    bucket.util_covered_s += part_s
            if bucket.index == idx:
                break
            yield from self.emit(key, prev, bucket)
            t = seg_end
            bucket = self.buckets[key] = _Bucket(bucket.index + 1)
        self.note(bucket, s)

    @staticmethod
    def segment_energy(a: GpuSample, b: GpuSample, dt_s: float) -> tuple[float | None, str | None]:
        """Joules between two samples: the cumulative counter when both have it (and it did not go back),
        else the trapezoid of power over time."""
        if a.energy_mj is not None and b.energy_mj is not None and b.energy_mj >= a.energy_mj:
            return (b.energy_mj - a.energy_mj) / MILLIJOULES_PER_J, "counter"
        if a.power_w is not None and b.power_w is not None:
            return (a.power_w + b.power_w) / 2 * dt_s, "trapezoid"
        return None, None

    def emit(self, key: str, s: GpuSample, b: _Bucket) -> Iterator[UsageRecord]:
        if b.start is None or b.end is None or b.covered_s <= 0:
            return
        extra: dict[str, Any] = {
            "gpu_index": s.gpu_index, "uuid": s.uuid, "samples": b.samples, "covered_s": b.covered_s,
            "energy_basis": "+".join(sorted(b.bases)) or None,
            "energy_covered_frac": b.energy_covered_s / b.covered_s,
        }  # fmt: skip
        if b.first_line is not None:
            extra["first_line"], extra["last_line"] = b.first_line, b.last_line
        if b.mem_used_max_bytes is not None:
            extra["mem_used_max_bytes"] = b.mem_used_max_bytes
        if s.mig_profile:
            extra["mig_profile"] = s.mig_profile
        if b.pids:
            extra["pids"] = sorted(b.pids)
        yield UsageRecord(
            source=self.source,
            source_key=f"{self.source}:{self.prefix}:{key}:{b.start.astimezone(UTC).isoformat()}",
            charge_period_start=b.start.astimezone(UTC),
            charge_period_end=b.end.astimezone(UTC),
            resource_id=s.uuid or None,
            service_category="Compute",
            x_device_type=self.device_type(s.name),
            x_device_count=s.device_fraction,
            x_device_hours=s.device_fraction * b.covered_s / S_PER_H,
            x_gpu_utilization=b.util_s / b.util_covered_s if b.util_covered_s > 0 else None,
            x_energy_kwh=b.energy_j / J_PER_KWH if b.energy_covered_s > 0 else None,
            x_extra=extra,
        )

    def finish(self) -> Iterator[UsageRecord]:
        for key, bucket in self.buckets.items():
            yield from self.emit(key, self.last[key], bucket)
        self.buckets.clear()


def iter_aggregate_samples(
    samples: Iterable[GpuSample],
    interval_s: float | None = 3600.0,
    *,
    max_gap_s: float | None = 300.0,
    source: str = "nvml",
    source_prefix: str = "",
    rejected: list[RejectedRow] | None = None,
    path: str = "<samples>",
    catalog: Any = None,
) -> Iterator[UsageRecord]:
    """Stream samples into one record per GPU per interval (see :func:`aggregate_samples`)."""
    cache: dict[str | None, str | None] = {}

    def device_type(name: str | None) -> str | None:
        if name not in cache:
            cache[name] = name
            if name and catalog is not None:
                with contextlib.suppress(CatalogError):
                    cache[name] = catalog.device(name.split(" MIG ")[0]).id
        return cache[name]

    agg = _Aggregator(interval_s, max_gap_s, source, source_prefix, rejected, path, device_type)
    for s in samples:
        if s.timestamp.tzinfo is None:
            raise InputError("timestamp", s.timestamp.isoformat(), "samples need timezone-aware timestamps")
        try:  # the same physical bounds as every parser (flopwise.meter.bounds): NVML, replayed CSVs
            check_utilization_frac(s.gpu_util_frac, "gpu_util_frac")
            dev = catalog.devices.get(device_type(s.name)) if catalog is not None else None
            check_power_w(s.power_w, "power_w", dev.tdp_w if dev else None, dev.id if dev else None)
        except ValueError as err:
            if rejected is not None:
                rejected.append(RejectedRow(path, s.line or 0, str(err)))
            continue
        yield from agg.add(s)
    yield from agg.finish()


def aggregate_samples(
    samples: Iterable[GpuSample],
    interval_s: float | None = 3600.0,
    *,
    max_gap_s: float | None = 300.0,
    source: str = "nvml",
    source_prefix: str = "",
    rejected: list[RejectedRow] | None = None,
    path: str = "<samples>",
    catalog: Any = None,
) -> list[UsageRecord]:
    """Aggregate per-GPU samples into one UsageRecord per GPU per interval.

    Intervals are aligned to multiples of *interval_s* since the Unix epoch in UTC (3600: whole hours);
    ``None`` makes one interval of everything (a measurement window). Between two consecutive samples of a
    GPU, energy is the cumulative energy counter's delta when both samples carry it and it did not go back,
    else the trapezoid of power over time; a segment crossing an interval boundary is split in proportion to
    time, so the intervals' energies add up to the total. Utilization is the time-weighted mean of the
    trapezoid. A gap longer than *max_gap_s* (the logger stopped) is not integrated: the period covers only
    the observed time (``x_extra["covered_s"]``), and ``x_device_hours`` = device fraction x covered hours.
    Energy that could not be integrated over part of the period leaves ``x_extra["energy_covered_frac"]``
    below 1; with none at all it is None. Samples out of order are reported to *rejected*.
    """
    return list(
        iter_aggregate_samples(
            samples, interval_s, max_gap_s=max_gap_s, source=source, source_prefix=source_prefix,
            rejected=rejected, path=path, catalog=catalog,
        )
    )  # fmt: skip
