"""NVML sampler errors on a machine without a driver, and aggregation of a recorded (handmade) sample file."""

from __future__ import annotations

import io
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from flopwise.catalog import load_catalog
from flopwise.errors import InputError, UnsupportedError
from flopwise.meter.nvml import (
    GpuSample,
    NvmlSampler,
    ReplaySampler,
    aggregate_samples,
    write_samples_csv,
)
from flopwise.meter.record import RejectedRow

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "meter" / "nvml-samples-handmade.csv"


def _replay(rejected):
    return ReplaySampler(FIXTURE.read_text().splitlines(True), path=str(FIXTURE), rejected=rejected)


def test_no_driver_or_no_library_says_so():
    """This machine has no NVIDIA driver: the sampler must say so (or say how to install nvidia-ml-py)."""
    try:
        import pynvml  # noqa: F401
    except ImportError:
        expected = "pip install nvidia-ml-py"
    else:
        expected = "no NVIDIA driver"
    try:
        sampler = NvmlSampler()
    except UnsupportedError as exc:
        assert expected in str(exc)
    else:  # pragma: no cover - only on a machine with a GPU
        sampler.close()
        pytest.skip("this machine has an NVIDIA driver")


def test_missing_nvidia_ml_py_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(UnsupportedError, match=r"pip install nvidia-ml-py"):
        NvmlSampler()


class _NVMLError(Exception):
    pass


class _NotSupported(_NVMLError):
    pass


class _DriverNotLoaded(_NVMLError):
    pass


def _fake_pynvml(mig: bool = False) -> SimpleNamespace:
    def not_supported(*_):
        raise _NotSupported("Not Supported")

    return SimpleNamespace(
        NVMLError=_NVMLError, NVMLError_NotSupported=_NotSupported, NVMLError_DriverNotLoaded=_DriverNotLoaded,
        NVML_DEVICE_MIG_ENABLE=1,
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: ("gpu", i),
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3" if h[0] == "gpu" else "NVIDIA H100 80GB HBM3 MIG 3g.40gb",
        nvmlDeviceGetUUID=lambda h: "GPU-x" if h[0] == "gpu" else f"MIG-{h[1]}",
        nvmlDeviceGetPowerUsage=lambda h: 512_345 if h[0] == "gpu" else not_supported(),
        nvmlDeviceGetTotalEnergyConsumption=lambda h: 9_000_000 if h[0] == "gpu" else not_supported(),
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=87, memory=40),
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=2**30, total=80 * 2**30, free=79 * 2**30),
        nvmlDeviceGetComputeRunningProcesses=lambda h: [SimpleNamespace(pid=7, usedGpuMemory=2**29)],
        nvmlDeviceGetMigMode=lambda h: (1, 1) if mig else (0, 0),
        nvmlDeviceGetMaxMigDeviceCount=lambda h: 2,
        nvmlDeviceGetMigDeviceHandleByIndex=lambda h, i: ("mig", i) if i == 0 else not_supported(),
    )  # fmt: skip


def test_nvml_sampler_units_and_mig(monkeypatch):
    now = datetime(2024, 5, 1, tzinfo=UTC)
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml())
    with NvmlSampler(clock=lambda: now) as sampler:
        (s,) = sampler.sample()
    assert (s.name, s.uuid, s.power_w, s.energy_mj, s.gpu_util_frac) == ("NVIDIA H100 80GB HBM3", "GPU-x", 512.345,
                                                                          9e6, 0.87)  # fmt: skip
    assert s.mem_total_bytes == 80 * 2**30 and s.processes[0].pid == 7
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(mig=True))
    (m,) = NvmlSampler(clock=lambda: now).sample()
    assert m.mig_profile == "3g.40gb" and math.isclose(m.device_fraction, 3 / 7)
    assert m.power_w is None and m.energy_mj is None  # not supported on a MIG device: unknown, not zero
    with pytest.raises(InputError, match="gpu_indices"):
        NvmlSampler([3])


def test_nvml_driver_not_loaded_is_mapped(monkeypatch):
    fake = _fake_pynvml()
    fake.nvmlInit = lambda: (_ for _ in ()).throw(_DriverNotLoaded("Driver Not Loaded"))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with pytest.raises(UnsupportedError, match=r"^no NVIDIA driver: .*Driver Not Loaded.*flopwise ingest"):
        NvmlSampler()


def test_aggregate_recorded_samples_hourly():
    rejected: list[RejectedRow] = []
    samples = list(_replay(rejected).samples())
    assert len(samples) == 20 and [r.line for r in rejected] == [22]
    records = aggregate_samples(samples, 3600, max_gap_s=30, catalog=load_catalog())
    by = {(r.x_extra["gpu_index"], r.charge_period_start.hour): r for r in records}
    assert sorted(by) == [(0, 11), (0, 12), (1, 11)]
    h11, h12 = by[(0, 11)], by[(0, 12)]
    assert h11.x_device_type == "h100-sxm" and h11.x_extra["energy_basis"] == "counter"
    assert math.isclose(h11.x_energy_kwh * 3.6e6, 700 * 60, rel_tol=1e-12)  # counter: 700 W for 60 s
    assert math.isclose(h12.x_energy_kwh * 3.6e6, 300 * 60, rel_tol=1e-12)
    assert h11.charge_period_end == h12.charge_period_start == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert math.isclose(h11.x_device_hours + h12.x_device_hours, 120 / 3600)
    assert math.isclose(h11.x_gpu_utilization, (5 * 0.9 + (0.9 + 0.3) / 2) / 6)
    assert h11.x_extra["pids"] == [4242] and h11.x_extra["mem_used_max_bytes"] == 40e9
    a100 = by[(1, 11)]
    assert a100.x_device_type == "a100-sxm-80gb" and a100.x_extra["energy_basis"] == "trapezoid"
    assert math.isclose(a100.x_energy_kwh * 3.6e6, 200 * 50)  # the 70 s gap is not integrated
    assert a100.x_extra["covered_s"] == 50
    # one interval of everything gives the same totals (intervals add up)
    whole = aggregate_samples(samples, None, max_gap_s=30)
    assert math.isclose(
        sum(r.x_energy_kwh for r in whole), sum(r.x_energy_kwh for r in records), rel_tol=1e-12
    )


def test_trapezoid_without_the_counter():
    rejected: list[RejectedRow] = []
    samples = [
        GpuSample(s.timestamp, s.gpu_index, s.uuid, s.name, s.power_w, None, s.gpu_util_frac)
        for s in _replay(rejected).samples()
        if s.gpu_index == 0
    ]
    (rec,) = aggregate_samples(samples, None)
    # power steps from 700 to 300 W at 12:00:00, so the trapezoid misses half a step in one 10 s segment
    assert math.isclose(rec.x_energy_kwh * 3.6e6, 700 * 60 + 300 * 60 + (500 - 700) * 10)


def test_windows_and_replay_round_trip():
    rejected: list[RejectedRow] = []
    sampler = _replay(rejected)
    sampler.begin_window("epoch")
    for _ in range(11):
        sampler.sample()
    records = sampler.end_window("epoch")
    assert {r.x_extra["gpu_index"] for r in records} == {0, 1}
    with pytest.raises(InputError, match="does not exist"):
        sampler.end_window("epoch")
    buf = io.StringIO()
    samples = list(_replay([]).samples())
    assert write_samples_csv(samples, buf) == len(samples)
    again = list(ReplaySampler(io.StringIO(buf.getvalue())).samples())
    assert [(s.timestamp, s.power_w, s.energy_mj, s.processes) for s in again] == [
        (s.timestamp, s.power_w, s.energy_mj, s.processes) for s in samples
    ]


def test_out_of_order_and_naive_samples():
    t = datetime(2024, 1, 1, tzinfo=UTC)
    rejected: list[RejectedRow] = []
    s1 = GpuSample(t.replace(second=10), 0, "u", power_w=100.0)
    s0 = GpuSample(t, 0, "u", power_w=100.0, line=9)
    aggregate_samples([s1, s0], rejected=rejected)
    assert rejected[0].line == 9 and "not after" in rejected[0].reason
    with pytest.raises(InputError, match="timezone-aware"):
        aggregate_samples([GpuSample(datetime(2024, 1, 1), 0, "u")])
    with pytest.raises(InputError, match="interval_s"):
        aggregate_samples([], 0)
