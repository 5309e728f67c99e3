"""CPU topology: cores, hardware threads, cloud vCPUs per core, and the per-core memory-bandwidth saturation curve.

A CPU in the device table is a whole socket. A cloud VM of a few vCPUs, or ``llama.cpp -t 4`` on a desktop, uses
part of it: :func:`cpu_slice` turns the socket into the part that is used.

* Compute scales with the **cores** used (peak per core = socket peak / cores). Hardware threads beyond the
  cores (SMT siblings) add no matmul throughput: both siblings share one core's vector units.
* vCPUs count honestly: on x86 clouds 2 vCPUs = 1 core (SMT); on Graviton 1 vCPU = 1 core
  (AWS Graviton getting-started guide, https://github.com/aws/aws-graviton-getting-started).
* Memory bandwidth saturates: a few cores already draw most of a socket's bandwidth. Where a published
  STREAM-style measurement per core count exists for the family (``data/cpu_bandwidth.csv``, each point with its
  source), the curve ``B(n)`` runs through the measured points: proportional to *n* below the first point, flat
  after the last, and between two points the saturation law below fitted through both (a straight line where
  the two points scale linearly). Without measurements (the fallback, flagged in the assumptions), one core
  draws ``b1 = outstanding_misses x 64 B / DRAM latency`` (Little's law; J. D. C. Little, "A proof for the
  queuing formula L = lambda W", Operations Research 9(3), 1961) and *n* cores draw
  ``B(n) = B_peak x (1 - exp(-n b1 / B_peak))``. Either way the slice keeps ``B(n) / B(N)`` of the catalog's
  socket bandwidth, so the whole socket is unchanged.
* Hybrid CPUs (Intel P/E cores, Apple P/E, phone big.LITTLE) list their core tiers (count x GHz x FP32
  FLOP/cycle, from the datasheets) in ``core_tiers``. Threads go to the fastest cores first, one per core, as
  llama.cpp's threads land when the OS schedules them (P-cores first). ggml splits each matmul's rows evenly over
  the threads and waits for all of them at the end of the op (``ggml_compute_forward_mul_mat``), so *n* threads
  run at *n* x the speed of the slowest core they use: threads spilling onto E-cores can make a run slower than
  one on the P-cores alone (a warning says so).
* Power: the slice is charged its share of the socket's TDP and idle power (share of the socket's peak
  throughput its cores hold; cores / N for CPUs whose cores are alike).

Pure functions over the catalog's frozen records; the table is read with the standard library.
"""

from __future__ import annotations

import csv
import functools
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

from flopwise.catalog.types import Device, Offering
from flopwise.errors import InputError, UnsupportedError
from flopwise.units import GIGA

__all__ = [
    "BURSTABLE_BASELINE_FRAC",
    "CACHE_LINE_BYTES",
    "burstable_caveat",
    "burstable_note",
    "CpuSlice",
    "CpuTopology",
    "bandwidth_curve",
    "bandwidth_frac",
    "cpu_slice",
    "cpu_topologies",
    "cpu_topology",
    "holds_whole_devices",
    "offering_slice",
    "socket_share",
    "slice_for_threads",
    "slice_for_vcpus",
]

CACHE_LINE_BYTES = 64
_TABLE = Path(__file__).with_name("data") / "cpu_topology.csv"
_BW_TABLE = Path(__file__).with_name("data") / "cpu_bandwidth.csv"

#: Burstable sizes: baseline CPU utilization per vCPU that CPU credits sustain (AWS EC2 user guide, "Key
#: concepts and definitions for burstable performance instances", baseline table; t3 and t4g are alike), and GCP's
#: shared-core E2 sizes, which sustain a fraction of their 2 vCPUs and burst above it for short periods
#: (https://cloud.google.com/compute/docs/general-purpose-machines#e2-shared-core: e2-micro 0.25, e2-small 0.5,
#: e2-medium 1 vCPU of 2).
BURSTABLE_BASELINE_FRAC = {
    **{
        f"{fam}.{size}": frac
        for fam in ("t3", "t4g")
        for size, frac in (
            ("nano", 0.05),
            ("micro", 0.10),
            ("small", 0.20),
            ("medium", 0.20),
            ("large", 0.30),
            ("xlarge", 0.40),
            ("2xlarge", 0.40),
        )
    },
    "e2-micro": 0.125,
    "e2-small": 0.25,
    "e2-medium": 0.50,
}


def _is_gcp_shared_core(instance_type: str) -> bool:
    return instance_type.startswith("e2-")


def _pct(frac: float) -> str:
    return f"{frac * 100:g}%"


def burstable_note(instance_type: str) -> str:
    """The catalog note of a burstable instance: what it sustains and what happens above it."""
    base = BURSTABLE_BASELINE_FRAC[instance_type]
    if _is_gcp_shared_core(instance_type):
        return (
            f"burstable: shared-core, sustains {_pct(base)} of each of its 2 vCPUs and bursts above it only for "
            "short periods"
        )
    return (
        f"burstable: CPU credits sustain {_pct(base)} per vCPU, sustained load above it is throttled to the baseline "
        "(standard) or billed for surplus credits (unlimited)"
    )


def burstable_caveat(instance_type: str, utilization: float | None = None) -> str | None:
    """The caveat for a burstable instance under a sustained load (None for other instances)."""
    base = BURSTABLE_BASELINE_FRAC.get(instance_type)
    if base is None:
        return None
    load = "" if utilization is None else f" at {utilization:.0%} sustained utilization"
    if utilization is not None and utilization <= base:
        verdict = "; the load stays under the baseline"
    elif _is_gcp_shared_core(instance_type):
        verdict = ": above the baseline the VM gets only its fractional share of the 2 vCPUs once the burst is spent"
    else:
        verdict = (
            ": above the baseline, credits run out and the CPU is throttled to the baseline (standard mode) "
            "or surplus credits are billed (unlimited mode)"
        )
    what = "shared-core, it sustains" if _is_gcp_shared_core(instance_type) else "CPU credits sustain"
    return f"{instance_type} is burstable: {what} {_pct(base)} per vCPU{load}{verdict}"


@dataclass(frozen=True)
class CpuTopology:
    """Cores and threads of one CPU device, and what one core can draw from memory."""

    device_id: str
    cores: int
    hw_threads: int
    cloud_vcpus_per_core: int  # 2 on x86 clouds (SMT), 1 on Graviton
    outstanding_misses_per_core: int
    dram_latency_ns: float
    matrix_unit: tuple[str, ...]
    source_url: str = ""
    retrieved: str = ""
    basis: str = "derived"
    note: str = ""
    #: hybrid CPUs: (cores, per-core FP32 GFLOP/s) per tier, fastest first; empty when all cores are alike
    core_tiers: tuple[tuple[int, float], ...] = ()
    #: hybrid CPUs: the performance cores (P tiers); the rest are efficiency cores
    performance_cores: int = 0

    @property
    def core_speeds(self) -> tuple[float, ...]:
        """Per-core relative throughput, fastest first (all 1.0 for CPUs whose cores are alike)."""
        if not self.core_tiers:
            return (1.0,) * self.cores
        return tuple(speed for n, speed in self.core_tiers for _ in range(n))

    @property
    def fast_cores(self) -> int:
        """The performance cores of a hybrid CPU (P-cores, big cores); all cores otherwise."""
        return self.performance_cores if self.core_tiers else self.cores

    @property
    def core_bandwidth_gb_per_s(self) -> float:
        """One core's DRAM bandwidth by Little's law: misses in flight x 64 B / latency (GB/s)."""
        return self.outstanding_misses_per_core * CACHE_LINE_BYTES / self.dram_latency_ns

    @property
    def vcpus(self) -> int:
        """vCPUs a cloud sells for the whole socket."""
        return self.cores * self.cloud_vcpus_per_core


@dataclass(frozen=True)
class CpuSlice:
    """A part of a CPU socket: the derived device and how it was derived (for assumptions)."""

    device: Device
    socket: Device
    cores: int
    threads: int
    bandwidth_frac: float
    compute_frac: float
    warnings: tuple[str, ...] = ()

    def assumptions(self) -> dict:
        topo = cpu_topology(self.socket.id)
        assert topo is not None
        curve = bandwidth_curve(self.socket.id)
        out: dict[str, object] = {
            "cpu_socket": self.socket.id,
            "cpu_cores_used": self.cores,
            "cpu_cores_socket": topo.cores,
            "cpu_threads": self.threads,
            "cpu_compute_frac": round(self.compute_frac, 4),
            "cpu_bandwidth_frac": round(self.bandwidth_frac, 4),
            "cpu_matrix_units": list(topo.matrix_unit),
        }
        if curve:
            out["cpu_bandwidth_basis"] = "measured: " + "; ".join(
                f"{p.cores} core(s) {p.gb_per_s:g} GB/s ({p.measure}, {p.source_url})" for p in curve
            )
            scaling = (
                "bandwidth B(n) through the published STREAM-style points (saturation law between points, flat "
                "after the last)"
            )
        else:
            out["cpu_bandwidth_basis"] = (
                "derived (fallback: no published STREAM-style curve for this CPU family in cpu_bandwidth.csv): "
                f"{topo.core_bandwidth_gb_per_s:.1f} GB/s per core by Little's law"
            )
            out["cpu_core_bandwidth_gb_per_s"] = round(topo.core_bandwidth_gb_per_s, 2)
            scaling = "bandwidth B(n) = B_peak(1 - exp(-n b1/B_peak)), b1 by Little's law"
        out["cpu_scaling"] = scaling + (
            "; compute: threads on the fastest cores first, n threads x the slowest core used (ggml's even row "
            "split)"
            if topo.core_tiers
            else "; compute x cores/N"
        )
        return out


def _int(row: dict[str, str], col: str, lo: int) -> int:
    try:
        v = int(row[col])
    except (KeyError, ValueError):
        raise ValueError(f"{_TABLE}: {row.get('device_id')!r}: {col} must be a whole number") from None
    if v < lo:
        raise ValueError(f"{_TABLE}: {row.get('device_id')!r}: {col} must be >= {lo}")
    return v


@functools.lru_cache(maxsize=1)
def cpu_topologies() -> dict[str, CpuTopology]:
    """The built-in topology table, keyed by device id."""
    out: dict[str, CpuTopology] = {}
    with _TABLE.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            cores = _int(row, "cores", 1)
            threads = _int(row, "hw_threads", cores)
            tiers, n_perf = _tiers(row, cores)
            latency = float(row["dram_latency_ns"])
            if not latency > 0:
                raise ValueError(f"{_TABLE}: {row['device_id']!r}: dram_latency_ns must be > 0")
            out[row["device_id"]] = CpuTopology(
                device_id=row["device_id"],
                cores=cores,
                hw_threads=threads,
                cloud_vcpus_per_core=_int(row, "cloud_vcpus_per_core", 1),
                outstanding_misses_per_core=_int(row, "outstanding_misses_per_core", 1),
                dram_latency_ns=latency,
                matrix_unit=tuple(m for m in row["matrix_unit"].split("|") if m),
                source_url=row["source_url"],
                retrieved=row["retrieved"],
                basis=row["basis"],
                note=row["note"],
                core_tiers=tiers,
                performance_cores=n_perf,
            )
    return out


def _tiers(row: dict[str, str], cores: int) -> tuple[tuple[tuple[int, float], ...], int]:
    """``core_tiers`` ``P:8x3.0x32|E:16x2.2x16`` (P or E: cores x GHz x FP32 FLOP/cycle) ->
    (((8, 96.0), (16, 35.2)), 8 performance cores)."""
    text = (row.get("core_tiers") or "").strip()
    if not text:
        return (), 0
    tiers = []
    kinds = []
    try:
        for part in text.split("|"):
            kind, spec = part.split(":")
            n, ghz, flop = spec.split("x")
            if kind not in ("P", "E"):
                raise ValueError(kind)
            kinds.append(kind)
            tiers.append((int(n), float(ghz) * float(flop)))
    except ValueError:
        raise ValueError(
            f"{_TABLE}: {row.get('device_id')!r}: core_tiers must read P:COUNTxGHZxFLOP_PER_CYCLE|E:..., "
            f"got {text!r}"
        ) from None
    if kinds != sorted(kinds, key=lambda k: k != "P") or "P" not in kinds:
        raise ValueError(f"{_TABLE}: {row.get('device_id')!r}: core_tiers must list the P tiers before the E")
    if sum(n for n, _ in tiers) != cores or any(n < 1 or v <= 0 for n, v in tiers):
        raise ValueError(f"{_TABLE}: {row.get('device_id')!r}: core_tiers must add up to the {cores} cores")
    if [v for _, v in tiers] != sorted((v for _, v in tiers), reverse=True):
        raise ValueError(f"{_TABLE}: {row.get('device_id')!r}: core_tiers must list the fastest tier first")
    return tuple(tiers), sum(n for (n, _), k in zip(tiers, kinds, strict=True) if k == "P")


@dataclass(frozen=True)
class BandwidthPoint:
    """One published memory-bandwidth measurement of a CPU at a core count."""

    cores: int
    gb_per_s: float
    measure: str
    source_url: str
    source_location: str


@functools.lru_cache(maxsize=1)
def _bandwidth_curves() -> dict[str, tuple[BandwidthPoint, ...]]:
    out: dict[str, list[BandwidthPoint]] = {}
    with _BW_TABLE.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            n = _int(row, "cores", 1)
            gb = float(row["gb_per_s"])
            if not gb > 0 or not row["source_url"].startswith("https://"):
                raise ValueError(f"{_BW_TABLE}: {row['device_id']!r}: gb_per_s > 0 and an https source needed")
            out.setdefault(row["device_id"], []).append(
                BandwidthPoint(n, gb, row["measure"], row["source_url"], row["source_location"])
            )
    curves = {}
    for dev, pts in out.items():
        pts.sort(key=lambda p: p.cores)
        if len({p.cores for p in pts}) != len(pts) or any(a.gb_per_s > b.gb_per_s for a, b in zip(pts, pts[1:], strict=False)):
            raise ValueError(f"{_BW_TABLE}: {dev!r}: one point per core count, bandwidth not falling with cores")
        curves[dev] = tuple(pts)
    return curves


def bandwidth_curve(device_id: str) -> tuple[BandwidthPoint, ...]:
    """The published bandwidth-vs-cores points of *device_id* (empty: none, the Little's-law fallback applies)."""
    return _bandwidth_curves().get(device_id, ())


def _saturating(n_a: int, b_a: float, n_b: int, b_b: float, n: float) -> float:
    """``B(n) = S(1 - exp(-n x))`` through (n_a, b_a) and (n_b, b_b), evaluated at n (n_a <= n <= n_b); a
    straight line where the two points scale linearly or better."""
    r = b_a / b_b
    if r <= n_a / n_b * (1 + 1e-9):
        return b_a + (b_b - b_a) * (n - n_a) / (n_b - n_a)

    def ratio(x: float) -> float:
        return -math.expm1(-n_a * x) / -math.expm1(-n_b * x)

    lo, hi = 1e-9, 1.0
    while ratio(hi) < r:
        hi *= 2.0
    for _ in range(100):  # ratio(x) rises from n_a/n_b (x -> 0) to 1 (x -> inf): bisection on x
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if ratio(mid) < r else (lo, mid)
    x = (lo + hi) / 2.0
    s = b_a / -math.expm1(-n_a * x)
    return s * -math.expm1(-n * x)


def _measured_bandwidth(curve: tuple[BandwidthPoint, ...], n: int) -> float:
    first, last = curve[0], curve[-1]
    if n <= first.cores:
        return first.gb_per_s * n / first.cores
    if n >= last.cores:
        return last.gb_per_s
    for a, b in zip(curve, curve[1:], strict=False):
        if a.cores <= n <= b.cores:
            return _saturating(a.cores, a.gb_per_s, b.cores, b.gb_per_s, n)
    raise AssertionError("unreachable: the curve is sorted")


def cpu_topology(device_id: str) -> CpuTopology | None:
    """The topology of *device_id*, or None for devices that are not sliceable CPUs."""
    return cpu_topologies().get(device_id)


@functools.lru_cache(maxsize=4096)
def _curve_frac(device_id: str, cores: int, socket_cores: int) -> float:
    curve = bandwidth_curve(device_id)
    return _measured_bandwidth(curve, cores) / _measured_bandwidth(curve, socket_cores)


def bandwidth_frac(topo: CpuTopology, socket_bandwidth_gb_per_s: float, cores: int) -> float:
    """Share of the socket's bandwidth that *cores* cores draw: ``B(n) / B(N)`` (see the module docstring): from
    the published curve where ``cpu_bandwidth.csv`` has one, else by Little's law."""
    if bandwidth_curve(topo.device_id):
        return _curve_frac(topo.device_id, cores, topo.cores)
    b1 = topo.core_bandwidth_gb_per_s
    peak = socket_bandwidth_gb_per_s

    def b(n: int) -> float:
        return peak * -math.expm1(-n * b1 / peak)

    return b(cores) / b(topo.cores)


def cpu_slice(
    device: Device, cores: int, *, threads: int | None = None, memory_gb: float | None = None
) -> CpuSlice:
    """*device* (a whole socket) cut down to *cores* cores; the whole socket returns the device unchanged.

    *memory_gb*: the memory the part can use (a VM's RAM); the id then names it (``graviton3@4c-8.6gb``)."""
    topo = cpu_topology(device.id)
    if topo is None:
        raise UnsupportedError(
            f"device {device.id!r} has no CPU topology in the catalog; it cannot be sliced"
        )
    if not 1 <= cores <= topo.cores:
        raise InputError("cores", cores, f"give 1 to {topo.cores} (the cores of one {device.id})")
    n_threads = cores if threads is None else threads
    cf = power_frac = cores / topo.cores
    warnings: tuple[str, ...] = ()
    if topo.core_tiers:
        speeds = topo.core_speeds
        used = speeds[:cores]  # threads on the fastest cores first
        total = sum(speeds)
        # ggml's even row split: every thread waits for the slowest core it uses
        cf = cores * min(used) / total
        power_frac = sum(used) / total
        if cores > topo.fast_cores:
            fast = topo.fast_cores * min(speeds[: topo.fast_cores]) / total
            warnings = (
                f"{cores} threads on {device.id}: {cores - topo.fast_cores} beyond its {topo.fast_cores} "
                "performance cores run on efficiency cores; llama.cpp splits each matmul evenly over the threads, "
                f"so all of them go at the slowest core's pace: compute {cf:.0%} of the socket vs {fast:.0%} with "
                f"-t {topo.fast_cores}",
            )
    if cores == topo.cores and memory_gb is None and cf >= 1.0 - 1e-12:
        return CpuSlice(device, device, cores, n_threads, 1.0, 1.0, warnings)
    # (a hybrid CPU on all its cores is still a slice: its threads go at the slowest core's pace)
    bf = bandwidth_frac(topo, device.memory_bandwidth_gb_per_s, cores)
    return _sliced(device, topo, cores, n_threads, cf, bf, power_frac, memory_gb, warnings)


def _sliced(
    device: Device,
    topo: CpuTopology,
    cores: int,
    n_threads: int,
    cf: float,
    bf: float,
    power_frac: float,
    memory_gb: float | None,
    warnings: tuple[str, ...],
) -> CpuSlice:

    def sc(v: float | None) -> float | None:
        return None if v is None else v * cf

    sliced = replace(
        device,
        id=f"{device.id}@{cores}c" + ("" if memory_gb is None else f"-{memory_gb:g}gb"),
        name=f"{device.name} ({cores} of {topo.cores} cores"
        + ("" if memory_gb is None else f", {memory_gb:g} GB")
        + ")",
        memory_gb=device.memory_gb if memory_gb is None else memory_gb,
        memory_bandwidth_gb_per_s=device.memory_bandwidth_gb_per_s * bf,
        peak_fp32_tflop_per_s=device.peak_fp32_tflop_per_s * cf,
        peak_tf32_tflop_per_s=sc(device.peak_tf32_tflop_per_s),
        peak_bf16_tflop_per_s=sc(device.peak_bf16_tflop_per_s),
        peak_fp16_tflop_per_s=sc(device.peak_fp16_tflop_per_s),
        peak_fp8_tflop_per_s=sc(device.peak_fp8_tflop_per_s),
        peak_int8_tflop_per_s=sc(device.peak_int8_tflop_per_s),
        peak_fp4_tflop_per_s=sc(device.peak_fp4_tflop_per_s),
        peak_int4_tflop_per_s=sc(device.peak_int4_tflop_per_s),
        sparse_bf16_tflop_per_s=sc(device.sparse_bf16_tflop_per_s),
        sparse_fp8_tflop_per_s=sc(device.sparse_fp8_tflop_per_s),
        sparse_int8_tflop_per_s=sc(device.sparse_int8_tflop_per_s),
        sparse_fp4_tflop_per_s=sc(device.sparse_fp4_tflop_per_s),
        tdp_w=device.tdp_w * power_frac,
        idle_w=device.idle_w * power_frac,
        aliases=(),
        note=f"{cores} of {topo.cores} cores of {device.id}; {device.note}",
    )
    return CpuSlice(sliced, device, cores, n_threads, bf, cf, warnings)


def slice_for_threads(device: Device, threads: int) -> CpuSlice:
    """The part of *device* that *threads* software threads use (``llama.cpp -t N``).

    Threads fill one per core first; threads beyond the cores run on SMT siblings and add no compute.
    Errors: threads < 1, more threads than the device's hardware threads, a device that is not a CPU.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError("threads", threads, "give a whole number of threads, 1 or more")
    topo = cpu_topology(device.id)
    if topo is None:
        what = "a GPU" if device.kind == "gpu" else f"a {device.kind} without a CPU topology in the catalog"
        raise InputError(
            "threads",
            threads,
            f"{device.id} is {what}; threads apply to CPU devices only (leave --threads out)",
        )
    if threads > topo.hw_threads:
        raise InputError(
            "threads",
            threads,
            f"{device.id} has {topo.cores} cores / {topo.hw_threads} hardware threads; give 1 to {topo.hw_threads}",
        )
    return cpu_slice(device, min(threads, topo.cores), threads=threads)


def slice_for_vcpus(device: Device, vcpus: int, *, memory_gb: float | None = None) -> CpuSlice:
    """The part of *device* a cloud VM of *vcpus* vCPUs gets (x86: 2 vCPUs per core; Graviton: 1).

    An odd vCPU count on an SMT cloud rounds up to the core it shares."""
    topo = cpu_topology(device.id)
    if topo is None:
        raise UnsupportedError(f"device {device.id!r} has no CPU topology in the catalog")
    if vcpus < 1 or vcpus > topo.vcpus * 16:
        raise InputError("vcpus", vcpus, f"give 1 to {topo.vcpus} vCPUs per {device.id} socket")
    cores = min(topo.cores, math.ceil(vcpus / topo.cloud_vcpus_per_core))
    return cpu_slice(device, cores, threads=vcpus, memory_gb=memory_gb)


def socket_share(offering: Offering) -> float:
    """Share of one socket an offering holds: vCPUs / the socket's vCPUs for a CPU VM smaller than a socket,
    else 1.0 (whole devices, GPUs, devices without a topology)."""
    topo = cpu_topology(offering.device_id)
    if topo is None or offering.device_count != 1 or offering.vcpus >= topo.vcpus:
        return 1.0
    return offering.vcpus / topo.vcpus


def offering_slice(device: Device, offering: Offering) -> CpuSlice | None:
    """The part of *device* a CPU VM smaller than one socket holds (its cores and its RAM), or None for
    whole-device offerings."""
    if socket_share(offering) >= 1.0:
        return None
    return slice_for_vcpus(device, offering.vcpus, memory_gb=offering.ram_gb)


def holds_whole_devices(offering: Offering) -> bool:
    """True unless the offering is a CPU VM smaller than one socket."""
    return socket_share(offering) >= 1.0


# ------------------------------------------------------------------------------ per-core kernel rates

_KERNEL_TABLE = Path(__file__).with_name("data") / "cpu_kernels.csv"
#: the format whose measured rates stand in for GGUF integer formats without their own row
KERNEL_STAND_IN_QUANT = "q4_0"
_SLICE_ID = re.compile(r"^(?P<socket>.+)@(?P<cores>\d+)c(?:-[0-9.]+gb)?$")


@dataclass(frozen=True)
class KernelRate:
    """Measured per-core throughput of llama.cpp's quantized matmul kernels on one ISA class, in one phase."""

    isa: str
    phase: str  # "prefill" (matrix x matrix) or "decode" (matrix x vector)
    quant: str
    gflop_per_s_per_core: float
    ref_cpu: str
    source_url: str
    source_location: str


@functools.lru_cache(maxsize=1)
def kernel_rates() -> dict[tuple[str, str, str], KernelRate]:
    """``(isa, phase, quant) -> KernelRate`` from ``data/cpu_kernels.csv`` (each row a published llama-bench run
    of mainline llama.cpp, converted to GFLOP/s per core with flopwise's own FLOP count)."""
    out: dict[tuple[str, str, str], KernelRate] = {}
    with _KERNEL_TABLE.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            rate = float(row["gflop_per_s_per_core"])
            if not rate > 0 or row["phase"] not in ("prefill", "decode"):
                raise ValueError(f"{_KERNEL_TABLE}: {row['isa']!r}: a positive rate and phase prefill|decode needed")
            if not row["source_url"].startswith("https://"):
                raise ValueError(f"{_KERNEL_TABLE}: {row['isa']!r}: an https source is needed")
            out[(row["isa"], row["phase"], row["quant"])] = KernelRate(
                row["isa"], row["phase"], row["quant"], rate, row["ref_cpu"], row["source_url"],
                row["source_location"],
            )  # fmt: skip
    return out


def isa_class(topo: CpuTopology) -> str:
    """The kernel class llama.cpp's ggml-cpu compiles for this CPU: ``x86-avx512`` (AVX-512 VNNI, AMX parts
    included: no AMX row is published here), ``x86-avx2`` (AVX2 / AVX-VNNI), ``arm-neon`` (NEON dot product,
    i8mm, SVE)."""
    units = set(topo.matrix_unit)
    if any(u.startswith(("avx512", "amx")) for u in units):
        return "x86-avx512"
    if any(u.startswith(("avx", "avx2")) for u in units):
        return "x86-avx2"
    return "arm-neon"


@dataclass(frozen=True)
class CpuKernelCompute:
    """Achieved matmul rates of llama.cpp's kernels on the cores a CPU device uses."""

    prefill_flop_per_s: float
    decode_flop_per_s: float
    fast_core_equivalents: float
    basis: str


def kernel_compute(device: Device, quant: str) -> CpuKernelCompute | None:
    """llama.cpp's quantized matmul throughput on *device* (a CPU socket or a slice of one, as
    :func:`cpu_slice` names it) for *quant*, or None where no per-core measurement covers its ISA class and
    quant (the caller keeps its peak x efficiency).

    rate = per-core kernel rate (``cpu_kernels.csv``: published single-socket llama-bench runs, per core) x the
    cores used in fast-core equivalents: ggml splits each matmul's rows evenly over the threads and waits for
    the slowest (``ggml_compute_forward_mul_mat``), so n threads count as n x (slowest core used / fastest core),
    from ``core_tiers``. The decode (matrix x vector) rate falls back to the prefill (matrix x matrix) rate of
    the class when no decode run is published (an upper bound: decode then stays bandwidth-bound). At batch 1 the
    decode rate binds on a few cores (13900K -t 4: 4 x 42.3 GFLOP/s, 12.8 tokens/s vs 12.65 measured; its 4
    P-cores could draw 94% of the socket's bandwidth). The reference cores' clocks are not rescaled: right for
    desktop parts at boost clocks like the reference 7950X, an overestimate for servers running AVX-512 near base
    clock (the likeliest cause of the GCP C3 case's +77%, src/flopwise/validation/README.md)."""
    m = _SLICE_ID.match(device.id)
    socket_id = m.group("socket") if m else device.id
    topo = cpu_topology(socket_id)
    if topo is None:
        return None
    cores = int(m.group("cores")) if m else topo.cores
    isa = isa_class(topo)
    table = kernel_rates()
    # a format without its own run takes Q4_0's (the other GGUF integer formats also dequantize blocks to int8
    # and run the same integer dot products, vec_dot_type Q8_0/Q8_K in ggml-cpu); the basis says so
    row_quant = quant if (isa, "prefill", quant) in table else KERNEL_STAND_IN_QUANT
    pre = table.get((isa, "prefill", row_quant))
    if pre is None:
        return None
    dec = table.get((isa, "decode", row_quant))
    speeds = topo.core_speeds
    fast = cores * min(speeds[:cores]) / max(speeds)
    stand_in = "" if row_quant == quant else f" ({row_quant}'s rate standing in for {quant})"
    basis = (
        f"{isa} llama.cpp kernels: {pre.gflop_per_s_per_core:g} GFLOP/s per core for {row_quant} prefill "
        f"({pre.ref_cpu}, {pre.source_url}){stand_in}"
        + (
            f", {dec.gflop_per_s_per_core:g} for decode ({dec.ref_cpu}, {dec.source_url})"
            if dec is not None
            else "; decode at the prefill rate (no published decode run for the class)"
        )
        + f"; x {fast:.2f} fast-core equivalents"
    )
    pre_rate = pre.gflop_per_s_per_core * GIGA * fast
    dec_rate = (dec.gflop_per_s_per_core if dec is not None else pre.gflop_per_s_per_core) * GIGA * fast
    return CpuKernelCompute(pre_rate, dec_rate, fast, basis)
