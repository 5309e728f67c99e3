"""nvidia-smi --query-gpu CSV logs (handmade fixture in nvidia-smi's own format)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flopwise.catalog import load_catalog
from flopwise.errors import IngestError
from flopwise.meter.nvidia_smi import parse_nvidia_smi, parse_nvidia_smi_samples
from flopwise.meter.record import RejectedRow

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "meter" / "nvidia-smi-query-gpu-handmade.csv"


def test_units_unknowns_and_rejects():
    rejected: list[RejectedRow] = []
    samples = list(
        parse_nvidia_smi_samples(
            FIXTURE.read_text(encoding="utf-8").splitlines(True), rejected=rejected, assume_tz="UTC"
        )
    )
    lines = FIXTURE.read_text(encoding="utf-8").splitlines()
    headers = sum(line.startswith("timestamp") for line in lines)
    assert len(samples) + len(rejected) + headers == len(lines) == 12  # every line accounted for
    assert [(r.line, r.reason.split(" ")[0]) for r in rejected] == [(11, "expected"), (12, "power.draw")]
    first = samples[0]
    assert first.timestamp == datetime(2024, 5, 1, 11, 59, 30, tzinfo=UTC)
    assert (first.power_w, first.gpu_util_frac, first.mem_used_bytes) == (690.0, 0.95, 61234 * 2**20)
    assert samples[1].power_w is None  # [N/A]
    assert samples[5].gpu_util_frac is None  # [Not Supported]


def test_hourly_records_trapezoid_energy():
    rejected: list[RejectedRow] = []
    records = list(
        parse_nvidia_smi(
            FIXTURE.read_text(encoding="utf-8").splitlines(True),
            rejected=rejected,
            assume_tz="UTC",
            catalog=load_catalog(),
        )
    )
    by = {(r.x_extra["gpu_index"], r.charge_period_start.hour): r for r in records}
    assert sorted(by) == [(0, 11), (0, 12), (1, 11), (1, 12)]
    h11 = by[(0, 11)]
    assert h11.source == "nvidia-smi" and h11.x_device_type == "h100-sxm"
    assert math.isclose(h11.x_energy_kwh * 3.6e6, (690 + 710) / 2 * 15 + (710 + 700) / 2 * 15)
    assert math.isclose(by[(0, 12)].x_energy_kwh * 3.6e6, 700 * 15)
    assert math.isclose(h11.x_device_hours, 30 / 3600)
    gpu1 = by[(1, 11)]
    assert gpu1.x_energy_kwh is None and gpu1.x_extra["energy_covered_frac"] == 0  # [N/A] power: unknown
    assert math.isclose(by[(1, 12)].x_energy_kwh * 3.6e6, 70 * 15)
    assert len({r.source_key for r in records}) == len(records)


def test_noheader_nounits_needs_fields_and_zone():
    text = ["2024/05/01 12:00:00.000, 0, 300.5\n", "2024/05/01 12:00:10.000, 0, 299.5\n"]
    with pytest.raises(IngestError, match="no header line"):
        list(parse_nvidia_smi(text, rejected=[], path="smi.csv"))
    rejected: list[RejectedRow] = []
    assert list(parse_nvidia_smi(text, rejected=rejected, fields="timestamp,index,power.draw [W]")) == []
    assert all("assume_tz" in r.reason for r in rejected)
    (rec,) = parse_nvidia_smi(text, rejected=[], fields="timestamp,index,power.draw [W]", assume_tz="UTC")
    assert math.isclose(rec.x_energy_kwh * 3.6e6, 3000)
    with pytest.raises(IngestError, match="index or uuid"):
        list(parse_nvidia_smi(["timestamp, power.draw [W]\n"], rejected=[]))
