"""Fit of the load-dependent power coefficients (``flopwise.estimate.energy.LOAD_POWER_COEFFS``) to the published
average-power cases (``data/cases_energy.csv``), and their leave-one-out errors.

Model (estimate.energy.load_activity_frac): per phase ``P = idle + (TDP - idle) x (k_mem x u_mem + k_compute x
u_compute)``; the request's average power weights prefill and decode by their time, so it is linear in
``(k_mem, k_compute)`` and the fit is a least-squares solve on relative error (the clip to [0, 1] is ignored in
the fit and applied in the estimate). One pair per device generation (``timing.device_generation``).

Held-out errors: leave-one-source-out (refit on the other ``source_url``s; with no other source of the
generation the held-out cases fall back to the fixed activity shares the estimator used before,
``PREFILL_ACTIVITY_FRAC``/``DECODE_ACTIVITY_FRAC``, and the table says so) and leave-one-case-out.
Run ``python -m flopwise.validation.energy`` for the table.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flopwise.validation.runner import ValidationCase, load_cases

__all__ = ["CATEGORY", "EnergyFitReport", "energy_observations", "fit_power_coeffs", "power_fit_report"]

CATEGORY = "avg_power_w_per_device"


@dataclass(frozen=True)
class _Obs:
    case: ValidationCase
    generation: str
    idle_w: float
    tdp_w: float
    x_mem: float  # time-weighted memory-bandwidth utilization over the request
    x_compute: float  # time-weighted compute utilization
    fixed_w: float  # the power of the fixed-share model (the fallback)


def energy_observations(cases: Sequence[ValidationCase], catalog: Any, registry: Any) -> list[_Obs]:
    """Per power case whose model and device are known: its time-weighted utilizations from estimate_serve."""
    from flopwise.estimate import energy as en
    from flopwise.estimate.serve import estimate_serve
    from flopwise.estimate.timing import device_generation

    out = []
    for c in cases:
        if c.category != CATEGORY:
            continue
        device = catalog.devices.get(c.device)
        model = registry.get(c.model) if c.model in registry else None
        if device is None or model is None:
            continue
        inp = c.inputs
        kw: dict[str, Any] = {"engine": inp.get("engine") or "vllm"}
        if inp.get("kv_dtype"):
            kw["kv_dtype"] = inp["kv_dtype"]
        est = estimate_serve(
            model, device, device_count=c.device_count or 1, quant=inp.get("quant") or "bf16",
            batch=inp.get("batch") or 1, input_tokens=inp.get("input_tokens") or 1,
            output_tokens=inp.get("output_tokens") or 1, **kw,
        )  # fmt: skip
        a = est.assumptions
        ttft = float(est.ttft_ms)
        dec = float(est.tpot_ms) * float(a["output_tokens"])
        w_p, w_d = ttft / (ttft + dec), dec / (ttft + dec)
        x_m = w_p * float(a["prefill_memory_utilization"]) + w_d * float(a["decode_memory_utilization"])
        x_c = w_p * float(a["prefill_compute_utilization"]) + w_d * float(a["decode_compute_utilization"])
        act_fixed = w_p * en.PREFILL_ACTIVITY_FRAC + w_d * en.DECODE_ACTIVITY_FRAC
        fixed = en.device_power_w(device.tdp_w, device.idle_w, act_fixed)
        out.append(_Obs(c, device_generation(device), device.idle_w, device.tdp_w, x_m, x_c, fixed))
    return out


def fit_power_coeffs(obs: Sequence[_Obs]) -> tuple[float, float]:
    """Least-squares ``(k_mem, k_compute)`` minimising the relative error of average power over *obs*
    (k_compute fixed at 0 when there are fewer than two cases)."""
    import numpy as np

    rng = np.array([o.tdp_w - o.idle_w for o in obs])
    meas = np.array([o.case.measured for o in obs])
    idle = np.array([o.idle_w for o in obs])
    y = (meas - idle) / meas
    if len(obs) < 2:
        return float(y[0] / (rng[0] * obs[0].x_mem / meas[0])), 0.0
    a = np.column_stack([rng * [o.x_mem for o in obs], rng * [o.x_compute for o in obs]]) / meas[:, None]
    sol, *_ = np.linalg.lstsq(a, y, rcond=None)
    return float(sol[0]), float(sol[1])


def _predict_w(o: _Obs, coeffs: tuple[float, float]) -> float:
    act = min(max(coeffs[0] * o.x_mem + coeffs[1] * o.x_compute, 0.0), 1.0)
    return o.idle_w + (o.tdp_w - o.idle_w) * act


@dataclass(frozen=True)
class EnergyFitReport:
    """Per-generation coefficients and per-case errors: in-sample, leave-one-case-out, leave-one-source-out
    (fractions; ``loso_basis`` says per case whether the fixed-share fallback was used)."""

    coeffs: dict[str, tuple[float, float]]
    rows: tuple[dict[str, Any], ...]

    def median(self, column: str, generation: str | None = None) -> float:
        vals = [abs(r[column]) for r in self.rows if generation is None or r["generation"] == generation]
        return statistics.median(vals) if vals else float("nan")


def power_fit_report(
    cases: Sequence[ValidationCase] | None = None, catalog: Any = None, registry: Any = None
) -> EnergyFitReport:
    """Fit per generation on *cases* (default: the packaged ones) and the held-out errors of every case."""
    if catalog is None:
        from flopwise.catalog import load_catalog

        catalog = load_catalog()
    if registry is None:
        from flopwise.models import load_models

        registry = load_models()
    obs = energy_observations(load_cases() if cases is None else cases, catalog, registry)
    gens = sorted({o.generation for o in obs})
    coeffs = {g: fit_power_coeffs([o for o in obs if o.generation == g]) for g in gens}
    rows = []
    for o in obs:
        same = [p for p in obs if p.generation == o.generation]
        other_case = [p for p in same if p is not o]
        other_src = [p for p in same if p.case.source_url != o.case.source_url]
        loo = _predict_w(o, fit_power_coeffs(other_case)) if other_case else o.fixed_w
        loso = _predict_w(o, fit_power_coeffs(other_src)) if other_src else o.fixed_w
        ins = _predict_w(o, coeffs[o.generation])
        m = o.case.measured
        rows.append({
            "id": o.case.id, "generation": o.generation, "engine": o.case.inputs.get("engine", ""),
            "device": o.case.device, "measured_w": m, "in_sample_w": round(ins, 1),
            "in_sample": (ins - m) / m, "leave_one_case_out": (loo - m) / m,
            "leave_one_source_out": (loso - m) / m, "fixed_share_model": (o.fixed_w - m) / m,
            "loso_basis": "refit" if other_src else "fixed shares (no other source)",
            "source_url": o.case.source_url,
        })  # fmt: skip
    return EnergyFitReport(coeffs, tuple(rows))


def main() -> None:  # pragma: no cover - a report printer
    rep = power_fit_report()
    for g, (km, kc) in rep.coeffs.items():
        print(f"{g}: k_mem {km:.3f}  k_compute {kc:.3f}")
    for r in rep.rows:
        print(
            f"{r['id']:45s} meas {r['measured_w']:6.0f} W  in-sample {r['in_sample']:+.1%}  "
            f"LOO {r['leave_one_case_out']:+.1%}  LOSO {r['leave_one_source_out']:+.1%} ({r['loso_basis']})  "
            f"fixed-share {r['fixed_share_model']:+.1%}"
        )
    for col in ("in_sample", "leave_one_case_out", "leave_one_source_out", "fixed_share_model"):
        print(f"median |{col}|: {rep.median(col):.1%}")


if __name__ == "__main__":  # pragma: no cover
    main()
