"""DCGM exporter scrapes: the real 8xH100 scrape in tests/data/dcgm and two handmade scrapes (MIG, energy)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flopwise.catalog import load_catalog
from flopwise.errors import IngestError
from flopwise.meter.dcgm import (
    dcgm_usage,
    is_dcgm_blank,
    mig_fraction,
    parse_dcgm_scrape,
    parse_prometheus_text,
)
from flopwise.meter.record import RejectedRow

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "tests" / "data" / "dcgm" / "h100x8-dcgm-exporter-scrape.prom"
FIXTURES = ROOT / "tests" / "fixtures" / "meter"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=60)


def _real() -> Path:
    if not REAL.exists():
        pytest.skip(f"sample file {REAL.name} not found in {REAL.parent}")
    return REAL


def _scrape(path: Path, at: datetime, rejected: list[RejectedRow]):
    with path.open(encoding="utf-8") as f:
        return parse_dcgm_scrape(f, scraped_at=at, rejected=rejected, path=str(path), catalog=load_catalog())


def test_real_h100_scrape_per_gpu():
    rejected: list[RejectedRow] = []
    scrape = _scrape(_real(), T0, rejected)
    assert rejected == []
    assert len(scrape.gpus) == 8
    lines = sum(1 for line in _real().read_text(encoding="utf-8").splitlines() if line.strip())
    assert scrape.samples == lines == 30  # every line is a sample, each accounted for
    assert sum(len(g.lines) for g in scrape.gpus.values()) == scrape.samples
    gpu0 = scrape.gpus["gpu-node-1/GPU-c4529c8d-69c4-b61d-e0bc-7b2460096005"]
    assert gpu0.device_type == "h100-sxm" and gpu0.model_name == "NVIDIA H100 80GB HBM3"
    assert gpu0.power_w == pytest.approx(113.611) and gpu0.gpu_util_frac == 0.0
    assert (gpu0.pod, gpu0.namespace, gpu0.container) == (
        "vllm-agg-0-vllmdecodeworker-s65j5",
        "dynamo-workload",
        "main",
    )
    assert gpu0.energy_mj is None  # this scrape has no energy counter
    others = [g for k, g in scrape.gpus.items() if g is not gpu0]
    assert all(g.pod is None and 60 < g.power_w < 70 for g in others)
    assert sum(g.power_w for g in scrape.gpus.values()) == pytest.approx(
        113.611 + 68.347 + 65.709 + 67.316 + 68.717 + 65.742 + 67.328 + 66.997, rel=1e-12
    )


def test_real_scrape_twice_gives_trapezoid_energy_per_gpu():
    rejected: list[RejectedRow] = []
    a, b = _scrape(_real(), T0, rejected), _scrape(_real(), T0 + timedelta(hours=1), rejected)
    records = list(dcgm_usage([a, b]))
    assert len(records) == 8
    gpu0 = next(r for r in records if r.tags.get("pod"))
    assert gpu0.x_energy_kwh == pytest.approx(0.113611, rel=1e-9)  # 113.611 W for 1 h
    assert gpu0.x_extra["energy_basis"] == "trapezoid" and gpu0.x_account == "dynamo-workload"
    assert all(r.x_device_hours == 1.0 and r.x_device_type == "h100-sxm" for r in records)


def test_handmade_scrapes_counter_delta_mig_and_sentinels():
    rejected: list[RejectedRow] = []
    a = _scrape(FIXTURES / "dcgm-scrape-t0-handmade.prom", T0, rejected)
    b = _scrape(FIXTURES / "dcgm-scrape-t1-handmade.prom", T1, rejected)
    assert [(r.line, r.reason.split(":")[0]) for r in rejected] == [(26, "not a Prometheus sample")]
    assert a.blank_samples == 3 and b.blank_samples == 4  # int64 energy, 2 int32 MIG util, (t1) fp64 power
    g1 = a.gpus["node-7/GPU-22222222-aaaa-bbbb-cccc-111111111111"]
    assert g1.pod == 'say "hi"\\there'  # escaped label value
    assert g1.energy_mj is None
    mig = a.gpus["node-7/GPU-33333333-aaaa-bbbb-cccc-222222222222/1"]
    assert mig.mig_profile == "3g.40gb" and mig.device_fraction == pytest.approx(3 / 7)
    assert mig.gpu_util_frac is None and mig.gr_engine_active_frac == 0.5

    records = list(dcgm_usage([a, b]))
    by_key = {r.source_key.split(":2024-")[0]: r for r in records}
    whole = by_key["dcgm:node-7/GPU-11111111-aaaa-bbbb-cccc-000000000000"]
    assert whole.x_energy_kwh == pytest.approx(650 * 60 / 3.6e6, rel=1e-12)  # counter delta 39,000 J
    assert whole.x_extra["energy_basis"] == "counter"
    assert whole.x_gpu_utilization == pytest.approx(0.98) and whole.x_account == "team-a"
    assert whole.x_device_hours == pytest.approx(60 / 3600)
    blank = by_key["dcgm:node-7/GPU-22222222-aaaa-bbbb-cccc-111111111111"]
    assert blank.x_energy_kwh is None  # blank counter and a blank power reading: unknown, not zero
    mig_records = [r for r in records if "GPU-33333333" in r.source_key]
    assert len(mig_records) == 3  # two instances and the unassigned 3/7
    assert sum(r.x_device_count for r in mig_records) == pytest.approx(1.0)
    # invariant: the instances' energy adds up to the GPU's counter delta (12,000 J)
    assert sum(r.x_energy_kwh for r in mig_records) == pytest.approx(12_000 / 3.6e6, rel=1e-12)
    inst = next(r for r in mig_records if r.x_extra.get("mig_instance_id") == "9")
    assert inst.x_device_count == pytest.approx(1 / 7) and inst.x_gpu_utilization == pytest.approx(0.2)
    assert inst.tags == {"pod": "notebook-x", "namespace": "team-c"}
    unassigned = next(r for r in mig_records if r.x_extra.get("mig_unassigned"))
    assert unassigned.x_gpu_utilization is None and unassigned.tags == {}


def test_counter_reset_and_idempotent_keys():
    rejected: list[RejectedRow] = []
    a = _scrape(FIXTURES / "dcgm-scrape-t1-handmade.prom", T0, rejected)
    b = _scrape(FIXTURES / "dcgm-scrape-t0-handmade.prom", T1, rejected)  # counters went down: a reboot
    rec = next(r for r in dcgm_usage([a, b]) if "GPU-11111111" in r.source_key)
    assert rec.x_energy_kwh == pytest.approx(1_000_000_000 / 1e3 / 3.6e6)  # the counter since the reset
    assert [r.source_key for r in dcgm_usage([a, b])] == [r.source_key for r in dcgm_usage([a, b])]
    with pytest.raises(IngestError, match="not after"):
        list(dcgm_usage([b, a]))


def test_sentinels():
    assert is_dcgm_blank("DCGM_FI_DEV_GPU_UTIL", 2147483632)
    assert is_dcgm_blank("DCGM_FI_DEV_GPU_UTIL", 2147483634)  # not supported
    assert not is_dcgm_blank("DCGM_FI_DEV_GPU_UTIL", 99)
    assert is_dcgm_blank("DCGM_FI_DEV_POWER_USAGE", 140737488355328.0)
    assert is_dcgm_blank("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 9223372036854775792)
    assert not is_dcgm_blank("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 2147483632)  # a real int64 count
    assert is_dcgm_blank("DCGM_FI_DEV_FB_USED", math.nan)


def test_mig_fractions():
    assert mig_fraction("1g.10gb", "NVIDIA H100 80GB HBM3") == pytest.approx(1 / 7)
    assert mig_fraction("7g.80gb") == 1.0
    assert mig_fraction("2g.12gb", "NVIDIA A30") == 0.5
    assert mig_fraction("bogus") is None


def test_exposition_format_details():
    text = [
        "# HELP x_total A counter.\n",
        "# TYPE x_total counter\n",
        'x_total{a="1",b="new\\nline"} 1.5e3 1714564800000\n',
        "x_plain +Inf\n",
        'x_trailing{a="1",} NaN\n',
        "x_bad{a=1} 2\n",
        "x_novalue{}\n",
    ]
    rejected: list[RejectedRow] = []
    samples = list(parse_prometheus_text(text, path="t", rejected=rejected))
    assert [(s.name, s.value if s.value == s.value else "nan") for s in samples] == [
        ("x_total", 1500.0),
        ("x_plain", math.inf),
        ("x_trailing", "nan"),
    ]
    assert samples[0].labels == {"a": "1", "b": "new\nline"} and samples[0].timestamp_ms == 1714564800000
    assert [r.line for r in rejected] == [6, 7]


def test_not_a_dcgm_scrape_fails_once():
    with pytest.raises(IngestError, match="no DCGM_FI_"):
        parse_dcgm_scrape(["# nothing here\n", "up 1\n"], scraped_at=T0, rejected=[], path="x.prom")
    with pytest.raises(IngestError, match="time zone"):
        parse_dcgm_scrape([], scraped_at=datetime(2024, 1, 1), rejected=[], path="x.prom")
