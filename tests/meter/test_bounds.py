"""meter/bounds.py: one place for the physical and storage bounds of metered values, used by every parser."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from flopwise.catalog import load_catalog
from flopwise.meter.bounds import (
    MAX_DEVICES_PER_JOB,
    check_device_count,
    check_money,
    check_power_w,
    check_utilization_frac,
)
from flopwise.meter.nvml import GpuSample, iter_aggregate_samples
from flopwise.meter.opencost import parse_opencost_allocation
from flopwise.meter.record import RejectedRow
from flopwise.meter.sacct import gpu_count_from_tres


def test_device_count():
    assert check_device_count(8) == 8 and check_device_count(0.5) == 0.5
    assert check_device_count(MAX_DEVICES_PER_JOB) == MAX_DEVICES_PER_JOB
    for bad in (MAX_DEVICES_PER_JOB + 1, 99_999_999, -1, math.inf, math.nan):
        with pytest.raises(ValueError):
            check_device_count(bad)
    with pytest.raises(ValueError, match="more than any cluster holds"):
        gpu_count_from_tres("gres/gpu:h100=99999999,gres/gpu=99999999")
    with pytest.raises(ValueError, match="not a number of GPUs"):
        gpu_count_from_tres("gres/gpu=lots")


def test_utilization_and_power():
    assert check_utilization_frac(None) is None and check_utilization_frac(1.0) == 1.0
    for bad in (1.5, -0.01, math.inf, math.nan):
        with pytest.raises(ValueError, match="outside 0-100 %"):
            check_utilization_frac(bad)
    assert check_power_w(1400.0, tdp_w=700.0) == 1400.0  # exactly 2x TDP: a spike, still possible
    with pytest.raises(ValueError, match="2x the 700 W TDP"):
        check_power_w(1400.1, tdp_w=700.0)
    with pytest.raises(ValueError, match="more than any accelerator draws"):
        check_power_w(50_000.0)
    for bad in (math.inf, math.nan, -1.0):
        with pytest.raises(ValueError):
            check_power_w(bad)


def test_money():
    assert check_money(Decimal("999999999999.99")) == Decimal("999999999999.99")
    assert check_money(Decimal("-12.5")) == Decimal("-12.5")  # refunds and credits are negative
    for bad in (Decimal("1e12"), Decimal("-1e13"), Decimal("Infinity"), Decimal("NaN")):
        with pytest.raises(ValueError):
            check_money(bad)


def test_replayed_or_nvml_samples_out_of_bounds_are_rejected():
    t0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
    samples = [
        GpuSample(
            t0 + timedelta(seconds=10 * i),
            0,
            "GPU-1",
            "NVIDIA H100 80GB HBM3",
            power_w=p,
            gpu_util_frac=u,
            line=i + 2,
        )  # fmt: skip
        for i, (p, u) in enumerate([(300.0, 0.5), (300.0, 1.5), (math.inf, 0.5), (2000.0, 0.5), (310.0, 0.6)])
    ]
    rejected: list[RejectedRow] = []
    (record,) = iter_aggregate_samples(samples, 3600.0, rejected=rejected, catalog=load_catalog())
    assert [r.line for r in rejected] == [3, 4, 5]
    assert math.isfinite(record.x_energy_kwh) and record.x_gpu_utilization == pytest.approx(0.55)


def test_opencost_cost_and_gpu_count_bounds():
    window = {"start": "2024-05-01T00:00:00Z", "end": "2024-05-01T01:00:00Z"}
    doc = {
        "code": 200,
        "data": [
            {
                "ok": {**window, "totalCost": 1.5, "gpuCount": 1, "gpuHours": 1},
                "huge": {**window, "totalCost": 1e13},
                "gpus": {**window, "totalCost": 1.0, "gpuCount": 1e8},
            }
        ],
    }
    rejected: list[RejectedRow] = []
    records = list(parse_opencost_allocation(doc, rejected=rejected))
    assert [r.x_extra["x_AllocationName"] for r in records] == ["ok"]
    reasons = " ".join(r.reason for r in rejected)
    assert "totalCost" in reasons and "gpuCount" in reasons
