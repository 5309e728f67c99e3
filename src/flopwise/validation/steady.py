"""Fit of the steady-state training constants (``flopwise.estimate.timing.STEADY_STATE_MFU`` and
``FP8_STEADY_MFU_SCALE``) to the published steady-state cases, and their leave-one-source-out errors.

Model: steady-state model TFLOP/s per device = ``MFU[generation] x peak(precision)`` with ``MFU`` fitted per
generation on bf16 cases and one fp8 scale on fp8 cases (``MFU_fp8 / MFU[generation]``), each as the median of
the cases' measured ratios (robust to one outlying table row). A generation without a bf16 case takes the median
of all bf16 cases; with no fp8 case left the scale falls back to ``timing.FP8_MFU_SCALE`` (DeepSeek-V3).

Leave-one-source-out: for each source (its ``source_url``) the constants are refitted on the other sources and
the held-out cases are predicted with them, so no table grades a constant fitted to itself.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flopwise.validation.runner import ValidationCase

__all__ = ["SteadyFit", "fit_steady", "leave_one_source_out", "steady_cases"]

CATEGORY = "train_tflops_per_device"


@dataclass(frozen=True)
class SteadyFit:
    """Fitted constants: ``mfu`` by generation (bf16) and ``fp8_scale``."""

    mfu: Mapping[str, float]
    fp8_scale: float

    def predict_tflop_per_s(self, generation: str, precision: str, peak_tflop_per_s: float) -> float:
        mfu = self.mfu.get(generation, statistics.median(self.mfu.values()))
        return mfu * (self.fp8_scale if precision == "fp8" else 1.0) * peak_tflop_per_s


def steady_cases(cases: Sequence[ValidationCase]) -> list[ValidationCase]:
    return [c for c in cases if c.category == CATEGORY]


def _observations(cases: Sequence[ValidationCase], catalog: Any) -> list[tuple[ValidationCase, str, str, float, float]]:
    """(case, generation, precision, peak TFLOP/s, measured MFU) per case whose device is in the catalog."""
    from flopwise.estimate.quant import resolve_compute_peak
    from flopwise.estimate.timing import device_generation

    out = []
    for c in cases:
        device = catalog.devices.get(c.device)
        if device is None:
            continue
        precision = c.inputs.get("precision") or "bf16"
        dtype, peak = resolve_compute_peak(device, precision)
        out.append((c, device_generation(device), dtype, peak, c.measured / peak))
    return out


def fit_steady(cases: Sequence[ValidationCase], catalog: Any) -> SteadyFit:
    """Median-ratio fit of the constants on *cases* (see the module docstring)."""
    from flopwise.estimate.timing import FP8_MFU_SCALE, STEADY_STATE_MFU

    obs = _observations(steady_cases(cases), catalog)
    bf16 = [o for o in obs if o[2] != "fp8"]
    by_gen: dict[str, list[float]] = {}
    for _, gen, _, _, mfu in bf16:
        by_gen.setdefault(gen, []).append(mfu)
    overall = statistics.median([o[4] for o in bf16]) if bf16 else STEADY_STATE_MFU["hopper"][0]
    mfu = {gen: statistics.median(v) for gen, v in by_gen.items()}
    for gen in STEADY_STATE_MFU:
        mfu.setdefault(gen, mfu.get("hopper", overall))
    fp8 = [o[4] / mfu.get(o[1], overall) for o in obs if o[2] == "fp8"]
    return SteadyFit(mfu, statistics.median(fp8) if fp8 else FP8_MFU_SCALE)


def leave_one_source_out(cases: Sequence[ValidationCase], catalog: Any) -> dict[str, list[tuple[str, float]]]:
    """``{source_url: [(case id, rel_error), ...]}`` with the constants refitted without that source."""
    cases = steady_cases(cases)
    out: dict[str, list[tuple[str, float]]] = {}
    for source in sorted({c.source_url for c in cases}):
        fit = fit_steady([c for c in cases if c.source_url != source], catalog)
        held = [c for c in cases if c.source_url == source]
        out[source] = [
            (c.id, fit.predict_tflop_per_s(gen, prec, peak) / c.measured - 1.0)
            for c, gen, prec, peak, _ in _observations(held, catalog)
        ]
    return out
