"""Plan vs actual: what a request estimated against what its metered usage was, and calibration from the errors.

For a compute request with usage in the ledger (``usage_records.request_id``), :func:`plan_vs_actual` compares
the request's ``estimated_device_hours``, ``estimated_cost_usd`` and ``estimated_kwh`` with the sums of its
usage. :func:`record_calibration_samples` stores one ``calibration_samples`` row per such request (per device
type and workload kind), once.

:func:`calibration_factors` turns samples into a multiplicative correction per ``(device_type,
workload_kind)``: the median of ``actual / estimated`` over the group's samples (the median, so one runaway job
does not move it), shrunk toward 1 by a pseudo-count of ``prior_samples`` samples at ratio 1 (the usual
credibility weighting: with n samples, ``n x median + k x 1`` over ``n + k``; Bühlmann & Gisler, *A Course in
Credibility Theory*, 2005, ch. 3), and only for groups with at least ``min_samples`` samples. ``estimate`` and
``plan`` multiply their device-hours (and what follows from them: cost, energy) by
:func:`calibrated` ``(value, factors, device_type, workload_kind)``; a group without a factor is left as is.

Power per device closes the loop the same way (metric ``power_w``): the actual is the energy of the request's
usage records whose energy was *measured* (DCGM ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` or NVML, i.e. the device
boundary) over those records' device-hours; the estimate is the request's stored ``power_per_device_w``. Its
factor corrects ``power_per_device_w`` (and the device-boundary energy) of later estimates.

The pure part (:class:`CalibrationPoint`, :func:`calibration_factors`, :func:`calibrated`,
:func:`median_abs_error_frac`) imports no database code.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flopwise.errors import InputError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = [
    "CALIBRATION_METRICS",
    "CalibrationPoint",
    "calibrated",
    "calibration_factors",
    "load_calibration_points",
    "median_abs_error_frac",
    "plan_vs_actual",
    "record_calibration_samples",
]

CALIBRATION_METRICS = ("device_hours", "cost_usd", "energy_kwh", "power_w")
DEFAULT_MIN_SAMPLES = 3
DEFAULT_PRIOR_SAMPLES = 2.0


@dataclass(frozen=True)
class CalibrationPoint:
    """One completed request: its device type and workload kind, estimated and actual amounts (None = unknown)."""

    device_type: str
    workload_kind: str
    estimated_device_hours: float | None = None
    actual_device_hours: float | None = None
    estimated_cost_usd: float | None = None
    actual_cost_usd: float | None = None
    estimated_energy_kwh: float | None = None
    actual_energy_kwh: float | None = None
    estimated_power_w: float | None = None
    actual_power_w: float | None = None

    def pair(self, metric: str) -> tuple[float, float] | None:
        """(estimated, actual) of *metric* when both are known and positive, else None."""
        if metric not in CALIBRATION_METRICS:
            raise InputError("metric", metric, f"use one of {', '.join(CALIBRATION_METRICS)}")
        est = getattr(self, f"estimated_{metric}")
        act = getattr(self, f"actual_{metric}")
        if est is None or act is None or float(est) <= 0 or float(act) <= 0:
            return None
        return float(est), float(act)


def calibration_factors(
    samples: Iterable[CalibrationPoint],
    metric: str = "device_hours",
    min_samples: int = DEFAULT_MIN_SAMPLES,
    prior_samples: float = DEFAULT_PRIOR_SAMPLES,
) -> dict[tuple[str, str], float]:
    """``{(device_type, workload_kind): actual/estimated correction}`` (see the module docstring).

    Samples without both amounts of *metric* are skipped. Groups with fewer than *min_samples* usable samples
    get no entry (use 1). ``prior_samples`` = 0 gives the plain median.
    """
    if min_samples < 1:
        raise InputError("min_samples", min_samples, "give 1 or more")
    if prior_samples < 0:
        raise InputError("prior_samples", prior_samples, "give 0 or more (0 = no shrinkage)")
    ratios: dict[tuple[str, str], list[float]] = defaultdict(list)
    for point in samples:
        pair = point.pair(metric)
        if pair is not None:
            ratios[(point.device_type, point.workload_kind)].append(pair[1] / pair[0])
    out = {}
    for key, values in ratios.items():
        n = len(values)
        if n >= min_samples:
            out[key] = (n * statistics.median(values) + prior_samples) / (n + prior_samples)
    return out


def calibrated(
    value: float, factors: Mapping[tuple[str, str], float], device_type: str, workload_kind: str
) -> float:
    """*value* (an estimate of device-hours, cost or energy) times the group's correction, or unchanged."""
    return value * factors.get((device_type, workload_kind), 1.0)


def median_abs_error_frac(
    samples: Iterable[CalibrationPoint],
    factors: Mapping[tuple[str, str], float] | None = None,
    metric: str = "device_hours",
) -> float | None:
    """Median of |estimate (x correction) - actual| / actual over the samples with both amounts; None if none."""
    errors = []
    for point in samples:
        pair = point.pair(metric)
        if pair is None:
            continue
        est, act = pair
        if factors is not None:
            est = calibrated(est, factors, point.device_type, point.workload_kind)
        errors.append(abs(est - act) / act)
    return statistics.median(errors) if errors else None


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


def _error_frac(estimated: Any, actual: Any) -> float | None:
    if estimated is None or actual is None or float(actual) == 0:
        return None
    return (float(estimated) - float(actual)) / float(actual)


def _estimated_power_w(estimate: Any) -> float | None:
    """The average power per device a stored estimate gives (``power_per_device_w``; a plan option's too)."""
    if not isinstance(estimate, dict):
        return None
    value = estimate.get("power_per_device_w")
    if value is None and isinstance(estimate.get("recommended"), dict):
        value = estimate["recommended"].get("power_per_device_w")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def plan_vs_actual(
    session: Session, org_id: int | None = None, request_ids: Iterable[int] | None = None
) -> list[dict[str, Any]]:
    """Per request with metered usage: estimated vs actual device-hours, cost and energy, and the errors.

    ``*_error_frac`` = (estimated - actual) / actual: positive when the estimate was high. Money is Decimal.
    """
    from sqlalchemy import func, select

    from flopwise.store.ledger import UsageRecordRow as Row
    from flopwise.store.models import ComputeRequest
    from flopwise.store.types import to_money

    usage = (
        select(
            Row.request_id.label("request_id"),
            func.count().label("records"),
            func.sum(Row.x_device_hours).label("device_hours"),
            func.sum(Row.cost_usd).label("cost_usd"),
            func.sum(Row.x_energy_kwh).label("energy_kwh"),
            func.min(Row.charge_period_start).label("first_start"),
            func.max(Row.charge_period_end).label("last_end"),
        )
        .where(Row.request_id.is_not(None))
        .group_by(Row.request_id)
        .subquery()
    )
    measured = (
        select(
            Row.request_id.label("request_id"),
            func.sum(Row.x_energy_kwh).label("measured_kwh"),
            func.sum(Row.x_device_hours).label("measured_device_hours"),
        )
        .where(Row.request_id.is_not(None), Row.energy_basis == "measured", Row.x_energy_kwh.is_not(None))
        .group_by(Row.request_id)
        .subquery()
    )
    stmt = (
        select(ComputeRequest, usage, measured.c.measured_kwh, measured.c.measured_device_hours)
        .join(usage, usage.c.request_id == ComputeRequest.id)
        .outerjoin(measured, measured.c.request_id == ComputeRequest.id)
    )
    if org_id is not None:
        stmt = stmt.where(ComputeRequest.org_id == org_id)
    if request_ids is not None:
        stmt = stmt.where(ComputeRequest.id.in_(list(request_ids)))
    out = []
    for row in session.execute(stmt.order_by(ComputeRequest.id)):
        req = row[0]
        actual_cost = None if row.cost_usd is None else to_money(row.cost_usd)
        est_power = _estimated_power_w(req.estimate)
        # the ledger's energy is the device's (measured by NVML/DCGM, or estimated by the meter at device power):
        # compare it with the estimate's device energy (power x device-hours), not the facility energy the
        # request reserved (device x host share x PUE); estimates that give no power keep their stored figure
        est_device_kwh = (
            est_power * float(req.estimated_device_hours) / 1000.0
            if est_power is not None and req.estimated_device_hours is not None
            else None
        )
        est_kwh = est_device_kwh if est_device_kwh is not None else _f(req.estimated_kwh)
        act_power = (
            float(row.measured_kwh) * 1000.0 / float(row.measured_device_hours)
            if row.measured_kwh is not None and row.measured_device_hours
            else None
        )
        out.append(
            {
                "request_id": req.id,
                "project_id": req.project_id,
                "device_type": req.device_type,
                "workload_kind": req.workload_kind,
                "records": int(row.records),
                "first_start": row.first_start,
                "last_end": row.last_end,
                "estimated_device_hours": _f(req.estimated_device_hours),
                "actual_device_hours": _f(row.device_hours),
                "device_hours_error_frac": _error_frac(req.estimated_device_hours, row.device_hours),
                "estimated_cost_usd": req.estimated_cost_usd,
                "actual_cost_usd": actual_cost,
                "cost_error_frac": _error_frac(req.estimated_cost_usd, actual_cost),
                "estimated_energy_kwh": est_kwh,
                "estimated_energy_boundary": "device" if est_device_kwh is not None else "as estimated",
                "actual_energy_kwh": _f(row.energy_kwh),
                "energy_error_frac": _error_frac(est_kwh, row.energy_kwh),
                "estimated_power_w": est_power,
                "actual_power_w": act_power,
                "power_error_frac": _error_frac(est_power, act_power),
            }
        )
    return out


def record_calibration_samples(session: Session, request_ids: Iterable[int] | None = None) -> list[int]:
    """Store one ``calibration_samples`` row per request with usage that has none yet; returns their request ids.

    Requests without a device type are skipped (a sample is per device type). Call it once a request's usage is
    complete (e.g. after :func:`flopwise.meter.burn.apply_actuals` for ended jobs).
    """
    from sqlalchemy import select

    from flopwise.store.ledger import CalibrationSample

    done = set(
        session.scalars(select(CalibrationSample.request_id).where(CalibrationSample.request_id.is_not(None)))
    )
    created = []
    for item in plan_vs_actual(session, request_ids=request_ids):
        if item["request_id"] in done or not item["device_type"]:
            continue
        session.add(
            CalibrationSample(
                request_id=item["request_id"],
                device_type=item["device_type"],
                workload_kind=item["workload_kind"],
                estimated_device_hours=item["estimated_device_hours"],
                actual_device_hours=item["actual_device_hours"],
                estimated_cost_usd=item["estimated_cost_usd"],
                actual_cost_usd=item["actual_cost_usd"],
                estimated_energy_kwh=item["estimated_energy_kwh"],
                actual_energy_kwh=item["actual_energy_kwh"],
                estimated_power_w=item["estimated_power_w"],
                actual_power_w=item["actual_power_w"],
            )
        )
        created.append(item["request_id"])
    session.flush()
    return created


def load_calibration_points(
    session: Session, device_type: str | None = None, workload_kind: str | None = None
) -> list[CalibrationPoint]:
    """The stored samples as :class:`CalibrationPoint` (optionally of one device type and workload kind)."""
    from sqlalchemy import select

    from flopwise.store.ledger import CalibrationSample as S

    stmt = select(S).order_by(S.id)
    if device_type is not None:
        stmt = stmt.where(S.device_type == device_type)
    if workload_kind is not None:
        stmt = stmt.where(S.workload_kind == workload_kind)
    return [
        CalibrationPoint(
            s.device_type,
            s.workload_kind,
            s.estimated_device_hours,
            s.actual_device_hours,
            _f(s.estimated_cost_usd),
            _f(s.actual_cost_usd),
            s.estimated_energy_kwh,
            s.actual_energy_kwh,
            s.estimated_power_w,
            s.actual_power_w,
        )
        for s in session.scalars(stmt)
    ]
