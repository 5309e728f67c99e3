"""The analytic continuous-batching model (plan.queueing) against the discrete-event simulation (plan.simulate)
of the same scheduler, and Erlang C against its textbook recursion."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq

from flopwise.errors import InputError
from flopwise.plan.queueing import continuous_batching_state, erlang_c, occupancy_peakedness
from flopwise.plan.simulate import simulate_continuous_batching

#: tolerances of the analytic p95s against the simulation (stated in plan/queueing.py's docstring): TTFT p95 may be
#: at most 30% low and 60% high (the model errs on the conservative side), TPOT p95 within 35%
TTFT_P95_RTOL_LOW, TTFT_P95_RTOL_HIGH = 0.30, 0.60
TPOT_P95_RTOL = 0.35

# a GPU-like replica: decode step 8 ms + 0.2 ms per running sequence, prefill 50 ms, 100 decode steps
STEP_FIXED_S, STEP_PER_SEQ_S, PREFILL_S, DECODE_STEPS = 0.008, 0.0002, 0.05, 100


BASE = (STEP_FIXED_S, STEP_PER_SEQ_S, PREFILL_S, DECODE_STEPS)
# other regimes: long prompts (prefill 200 ms, 300 decode steps) and a CPU-like replica (1 s prefill, 100 ms steps)
HEAVY_PREFILL = (0.02, 0.0005, 0.2, 300)
CPU_LIKE = (0.1, 0.002, 1.0, 50)


def _state(n, slots, regime=BASE):
    fixed, per_seq, prefill, steps = regime

    def step(x):
        return fixed + per_seq * x

    return continuous_batching_state(
        n,
        slots=slots,
        step_s=step(n),
        step_s_tagged=step(np.minimum(n + 1.0, slots)),
        step_s_full=step(slots),
        prefill_s=prefill,
        decode_steps=steps,
    )


def _at_utilization(util, slots, regime=BASE):
    top = _state(slots * (1 - 1e-9), slots, regime)
    target = util * top.arrival_rps / top.utilization
    n = brentq(lambda x: float(_state(x, slots, regime).arrival_rps) - target, 1e-6, slots * (1 - 1e-9))
    return target, _state(n, slots, regime)


def _simulate(rps, slots, regime=BASE):
    fixed, per_seq, prefill, steps = regime
    occupancy = np.arange(slots + 1, dtype=float)
    return simulate_continuous_batching(
        arrival_rps=rps,
        slots=slots,
        step_s=fixed + per_seq * occupancy,
        prefill_s=np.full(slots + 1, prefill),
        decode_steps=steps,
        n_requests=30_000,
        warmup_requests=3_000,
        seed=1,
    )


def _assert_ttft_p95_within_tolerance(analytic_s: float, simulated_s: float) -> None:
    ratio = analytic_s / simulated_s
    assert 1 - TTFT_P95_RTOL_LOW <= ratio <= 1 + TTFT_P95_RTOL_HIGH, (analytic_s, simulated_s)


@pytest.mark.parametrize("slots", [4, 16, 64])
@pytest.mark.parametrize("util", [0.3, 0.6, 0.85])
def test_analytic_p95_matches_simulation(slots, util):
    rps, state = _at_utilization(util, slots)
    assert bool(state.is_stable)
    sim = _simulate(rps, slots)
    _assert_ttft_p95_within_tolerance(float(state.ttft_p95_s), sim.ttft_p95_s)
    assert math.isclose(float(state.tpot_p95_s), sim.tpot_p95_s, rel_tol=TPOT_P95_RTOL)
    # the means agree more closely, and the throughput is the offered load (the queue is stable)
    assert math.isclose(float(state.tpot_mean_s), sim.tpot_mean_s, rel_tol=0.15)
    assert math.isclose(sim.throughput_rps, rps, rel_tol=0.05)


@pytest.mark.parametrize(
    ("regime", "slots", "util"),
    [
        (BASE, 16, 0.9),
        (BASE, 64, 0.9),
        (HEAVY_PREFILL, 16, 0.85),
        (HEAVY_PREFILL, 64, 0.9),
        (CPU_LIKE, 16, 0.85),
    ],
)
def test_ttft_p95_near_saturation_is_not_underestimated(regime, slots, util):
    """Where the Poisson-occupancy model (Erlang C at (c, a)) was 1.5-4.7x too low: mid caps near saturation."""
    rps, state = _at_utilization(util, slots, regime)
    sim = _simulate(rps, slots, regime)
    _assert_ttft_p95_within_tolerance(float(state.ttft_p95_s), sim.ttft_p95_s)
    # the mean occupancy of the engine-time balance is close to the simulated one
    assert math.isclose(float(state.n_decoding), sim.mean_decoding, rel_tol=0.15)


def test_peakedness_widens_the_wait_probability():
    # the same offered load waits more often when the occupancy is peaked (Hayward: Erlang C at (c/z, a/z))
    st = _state(11.24, 16)
    assert float(occupancy_peakedness(
        11.24, slots=16, step_s=STEP_FIXED_S + STEP_PER_SEQ_S * 11.24, step_s_full=STEP_FIXED_S + STEP_PER_SEQ_S * 16,
        prefill_s=PREFILL_S, decode_steps=DECODE_STEPS, arrival_rps=st.arrival_rps,
    )) > 1.5  # fmt: skip
    assert float(st.wait_prob) > 2 * float(erlang_c(16, st.slot_load))


def test_latency_grows_with_load():
    n = np.linspace(1, 60, 30)
    st = _state(n, 64)
    assert np.all(np.diff(st.arrival_rps) > 0)
    assert np.all(np.diff(st.ttft_p95_s) >= -1e-12)
    assert np.all(np.diff(st.tpot_p95_s) > 0)
    assert np.all((st.utilization > 0) & (st.utilization < 1))


def _erlang_c_recursive(c: int, a: float) -> float:
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b / (1 - a / c * (1 - b))


@pytest.mark.parametrize(("c", "a"), [(1, 0.5), (4, 2.0), (16, 12.0), (64, 60.0), (256, 200.0)])
def test_erlang_c_matches_recursion(c, a):
    assert math.isclose(float(erlang_c(c, a)), _erlang_c_recursive(c, a), rel_tol=1e-9)
    # M/M/1: the probability of waiting is the utilization
    assert math.isclose(float(erlang_c(1, 0.7)), 0.7, rel_tol=1e-12)
    assert float(erlang_c(4, 4.0)) == 1.0


def test_erlang_c_is_continuous_in_the_server_count():
    # real server counts (Hayward's c / z) interpolate between the integer ones
    lo, mid, hi = (float(erlang_c(c, 6.0)) for c in (8.0, 8.5, 9.0))
    assert hi < mid < lo


def test_simulation_is_deterministic_and_checks_input():
    kw = dict(arrival_rps=5.0, slots=2, step_s=[0, 0.01, 0.011], prefill_s=[0, 0.05, 0.1], decode_steps=10)
    a = simulate_continuous_batching(**kw, n_requests=500, warmup_requests=50, seed=7)
    b = simulate_continuous_batching(**kw, n_requests=500, warmup_requests=50, seed=7)
    assert a.ttft_p95_s == b.ttft_p95_s and a.tpot_p95_s == b.tpot_p95_s
    with pytest.raises(InputError, match="slots"):
        simulate_continuous_batching(**{**kw, "step_s": [0, 0.01]}, n_requests=100, warmup_requests=10)
