"""Plan vs actual and calibration: factors from a synthetic history cut the median error on later requests;
samples from requests with metered usage in a real store (SQLite)."""

from __future__ import annotations

import math
import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from flopwise.errors import InputError
from flopwise.meter.burn import apply_attribution
from flopwise.meter.calibration import (
    CalibrationPoint,
    calibrated,
    calibration_factors,
    load_calibration_points,
    median_abs_error_frac,
    plan_vs_actual,
    record_calibration_samples,
)
from flopwise.store import (
    ComputeRequest,
    Organization,
    Project,
    Team,
    User,
    make_engine,
    make_session_factory,
    read_session,
    upgrade,
    write_session,
)
from flopwise.store.ledger import UsageRecordRow

#: the (device, workload) biases of the synthetic history: actual = estimate x bias x lognormal noise
BIASES = {("h100-sxm", "train"): 1.35, ("a100-sxm-80gb", "fine-tune"): 0.8, ("l4", "serve"): 1.1}
NOISE_SIGMA = 0.15


def _history(n_per_group: int, seed: int) -> list[CalibrationPoint]:
    rng = random.Random(seed)
    points = []
    for _ in range(n_per_group):
        for (device, kind), bias in BIASES.items():
            est = rng.uniform(5, 500)
            act = est * bias * math.exp(rng.gauss(0, NOISE_SIGMA))
            points.append(
                CalibrationPoint(device, kind, est, act, est * 2.0, act * 2.0, est * 0.7, act * 0.7)
            )
    return points


def test_calibration_cuts_the_median_error_on_later_requests(capsys):
    history = _history(40, seed=7)
    train, test = history[: len(history) * 6 // 10], history[len(history) * 6 // 10 :]
    factors = calibration_factors(train)
    before = median_abs_error_frac(test)
    after = median_abs_error_frac(test, factors)
    with capsys.disabled():
        print(f"\ncalibration on the synthetic history: median |error| {before:.1%} -> {after:.1%}")
    assert set(factors) == set(BIASES)
    for key, bias in BIASES.items():
        assert factors[key] == pytest.approx(bias, rel=0.08)
    noise_floor = 0.6745 * NOISE_SIGMA  # median |exp(N(0, s)) - 1| ~ median |N(0, s)| for small s
    assert before > 0.15 and after < 0.65 * before and after < 1.2 * noise_floor
    for metric in ("cost_usd", "energy_kwh"):  # the same correction holds for cost and energy here
        assert median_abs_error_frac(test, calibration_factors(train, metric), metric) == pytest.approx(after)


def test_shrinkage_and_minimum_sample_count():
    points = [CalibrationPoint("h100-sxm", "train", 10, 20) for _ in range(3)]
    assert calibration_factors(points, min_samples=4) == {}
    assert calibration_factors(points, prior_samples=0)[("h100-sxm", "train")] == 2.0
    shrunk = calibration_factors(points, prior_samples=3)[("h100-sxm", "train")]
    assert shrunk == pytest.approx(1.5)  # (3 x 2 + 3 x 1) / 6
    many = calibration_factors(points * 100, prior_samples=3)[("h100-sxm", "train")]
    assert 1.95 < many < 2.0  # the data win as samples accumulate


def test_median_ignores_a_runaway_job_and_unknowns_are_skipped():
    points = [CalibrationPoint("l4", "serve", 10, 11) for _ in range(5)]
    points.append(CalibrationPoint("l4", "serve", 10, 500))  # a job that hung
    points.append(CalibrationPoint("l4", "serve", None, 3))
    points.append(CalibrationPoint("l4", "serve", 0, 3))
    assert calibration_factors(points, prior_samples=0)[("l4", "serve")] == pytest.approx(1.1)
    assert calibrated(100.0, {("l4", "serve"): 1.1}, "l4", "serve") == pytest.approx(110.0)
    assert calibrated(100.0, {}, "l4", "serve") == 100.0
    assert median_abs_error_frac([]) is None


def test_bad_parameters_are_input_errors():
    with pytest.raises(InputError, match="metric"):
        calibration_factors([CalibrationPoint("l4", "serve", 1, 1)], metric="flops")
    with pytest.raises(InputError, match="min_samples"):
        calibration_factors([], min_samples=0)
    with pytest.raises(InputError, match="prior_samples"):
        calibration_factors([], prior_samples=-1)


@pytest.fixture
def factory(tmp_path):
    url = "sqlite:///" + (tmp_path / "flopwise.db").as_posix()
    upgrade(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


def test_plan_vs_actual_and_samples_from_the_store(factory):
    t0 = datetime(2025, 2, 1, tzinfo=UTC)
    with write_session(factory) as s:
        org = Organization(name=f"cal-{uuid.uuid4().hex[:6]}")
        s.add(org)
        s.flush()
        team = Team(org_id=org.id, name="t")
        s.add(team)
        s.flush()
        project, user = Project(team_id=team.id, name="p"), User(org_id=org.id, name="u")
        s.add_all([project, user])
        s.flush()
        ids = []
        for i, (est_h, act_h) in enumerate([(10, 13), (20, 27), (40, 52), (8, 10)]):
            req = ComputeRequest(
                org_id=org.id, requester_id=user.id, project_id=project.id, workload_kind="train", inputs={},
                device_type="h100-sxm" if i < 3 else None, device_count=1, estimated_device_hours=Decimal(est_h),
                estimated_cost_usd=Decimal(est_h) * 2, estimated_kwh=Decimal(est_h) * Decimal("0.7"),
            )  # fmt: skip
            s.add(req)
            s.flush()
            ids.append(req.id)
            for part in range(2):  # usage arrives in two records per request
                s.add(UsageRecordRow(
                    source="dcgm", source_key=f"cal-{req.id}-{part}", charge_period_start=t0 + timedelta(hours=part),
                    charge_period_end=t0 + timedelta(hours=part + 1), cost_usd=Decimal(act_h), cost_basis="catalog-onprem",
                    x_device_hours=act_h / 2, x_energy_kwh=act_h * 0.35, energy_basis="measured", tags={},
                    x_extra={}, x_request_id=str(req.id),
                ))  # fmt: skip
        s.flush()
        apply_attribution(s)
        rows = plan_vs_actual(s, org_id=org.id)
        created = record_calibration_samples(s)
        again = record_calibration_samples(s)
    assert [r["request_id"] for r in rows] == ids
    first = rows[0]
    assert first["actual_device_hours"] == pytest.approx(13) and first["records"] == 2
    assert first["actual_cost_usd"] == Decimal("26") and first["estimated_cost_usd"] == Decimal("20")
    assert first["device_hours_error_frac"] == pytest.approx((10 - 13) / 13)
    assert first["energy_error_frac"] == pytest.approx((7 - 9.1) / 9.1)
    assert created == ids[:3] and again == []  # no device type: no sample; once per request
    with read_session(factory) as s:
        points = load_calibration_points(s, "h100-sxm", "train")
    factors = calibration_factors(points, prior_samples=0)
    assert factors[("h100-sxm", "train")] == pytest.approx(1.3)  # median of 1.3, 1.35, 1.3


def test_measured_power_calibrates_power_per_device(factory):
    """DCGM/NVML energy over device-hours gives the measured power; the estimate's power_per_device_w the
    estimated one; usage without measured energy gives no power sample."""
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    with write_session(factory) as s:
        org = Organization(name=f"pow-{uuid.uuid4().hex[:6]}")
        s.add(org)
        s.flush()
        team = Team(org_id=org.id, name="t")
        s.add(team)
        s.flush()
        project, user = Project(team_id=team.id, name="p"), User(org_id=org.id, name="u")
        s.add_all([project, user])
        s.flush()
        ids = []
        for i, basis in enumerate(["measured", "measured", "measured", "estimated"]):
            req = ComputeRequest(
                org_id=org.id, requester_id=user.id, project_id=project.id, workload_kind="serve", inputs={},
                estimate={"power_per_device_w": 500.0}, device_type="h100-sxm", device_count=1,
                estimated_device_hours=Decimal(10), estimated_kwh=Decimal(7),
            )  # fmt: skip
            s.add(req)
            s.flush()
            ids.append(req.id)
            s.add(UsageRecordRow(
                source="dcgm", source_key=f"pow-{req.id}", charge_period_start=t0 + timedelta(hours=i),
                charge_period_end=t0 + timedelta(hours=i + 1), cost_usd=Decimal(1), cost_basis="catalog-onprem",
                x_device_hours=4.0, x_energy_kwh=4.0 * (0.6 + 0.05 * i), energy_basis=basis, tags={},
                x_extra={}, x_request_id=str(req.id),
            ))  # fmt: skip
        s.flush()
        apply_attribution(s)
        rows = plan_vs_actual(s, org_id=org.id)
        record_calibration_samples(s)
    assert rows[0]["estimated_power_w"] == pytest.approx(500.0)
    assert rows[0]["actual_power_w"] == pytest.approx(600.0)
    assert rows[0]["power_error_frac"] == pytest.approx(-100 / 600)
    assert rows[3]["actual_power_w"] is None  # energy not measured: no power sample
    # energy compared on the ledger's (device) boundary: 500 W x 10 device-hours, not the 7 kWh facility figure
    assert rows[0]["estimated_energy_kwh"] == pytest.approx(5.0)
    assert rows[0]["estimated_energy_boundary"] == "device"
    assert rows[0]["energy_error_frac"] == pytest.approx((5.0 - 2.4) / 2.4)
    with read_session(factory) as s:
        points = load_calibration_points(s, "h100-sxm", "serve")
    factors = calibration_factors(points, metric="power_w", prior_samples=0)
    assert factors[("h100-sxm", "serve")] == pytest.approx(650 / 500)  # median of 600, 650, 700 W
