"""Latency under load of one replica serving with continuous batching: an analytic queueing model.

The scheduler modelled (and simulated step by step in ``plan.simulate``) is iteration-level scheduling as in Orca
(Yu et al., OSDI '22, https://www.usenix.org/conference/osdi22/presentation/yu) and vLLM (Kwon et al., SOSP '23,
arXiv:2309.06180) with prefill priority and no chunking: the engine loops over iterations; when requests wait and
one of the ``slots`` (the batch / concurrency cap, vLLM's ``max_num_seqs``) is free it admits them and runs their
prefill as one iteration (which emits each request's first token); otherwise it runs one decode step for every
running request, whose duration ``t(n)`` depends on the occupancy ``n``. A request leaves after ``decode_steps``
decode steps.

The model is parametrized by the mean number of requests in decode, ``N`` (so the arrival rate is explicit and
the search over loads needs no fixed-point iteration):

* engine-time balance: prefills take ``lambda * p1`` of the engine's time and decode steps the rest, producing
  ``N`` tokens each, so ``lambda * decode_steps = N (1 - lambda p1) / t(N)``, i.e.
  ``lambda = N / (decode_steps * t(N) + N * p1)``; the decode phase lasts ``D = N / lambda`` (Little's law).
* slots: a request holds a slot for ``S = W_engine + p1 + D``; offered load ``a = lambda S`` (Erlangs). The
  occupancy is *peakier* than Poisson because every prefill stalls every running decode: the departure rate at
  occupancy ``n`` is ``r(n) = n / (k t(n) + n p1)``, which flattens as ``n`` grows. For the birth-death
  (flow-equivalent server) chain with these rates and an affine ``t(n) = t0 + t1 n`` the occupancy is negative
  binomial with peakedness (variance / mean) ``1 / (1 - lambda B)``, ``B = k t1 + p1``; the simulation shows a
  wider spread still (a burst of prefills slows each running request for its whole stay, a delayed feedback the
  memoryless chain misses), and the peakedness ``z = (1 - lambda B)^-1.5`` reproduces it (exponent fitted to
  ``plan.simulate`` over four step/prefill regimes x caps 4-256 x 30-90% load; derived). The probability of
  waiting for a slot is then Hayward's approximation for peaked traffic, Erlang C at ``(c / z, a / z)``
  (Fredericks 1980, "Congestion in blocking systems: a simple approximation technique", BSTJ 59(6); Erlang B/C
  with real server counts through the regularized incomplete gamma function). ``t1`` is the chord slope of the
  step time between ``N`` and ``c``.
* slot wait tail: while every slot is busy requests leave at the saturation rate ``r_c = r(c)``, nearly
  deterministically (a full batch turns over in a fixed cycle), so the queue in front of the slots is an
  M/D/1-like queue of rate ``r_c``: ``P(W > x) = C exp(-x (r_c - lambda) / kappa)`` with the Allen-Cunneen
  factor ``kappa = (1 + cs^2) / 2`` (``cs^2`` of the hold time, near 0), which gives
  ``W_95 = kappa / (r_c - lambda) * ln(C / 0.05)`` when ``C > 0.05``, else 0 (Allen 1990, "Probability,
  Statistics and Queueing Theory", Sec. 5.5; Kingman 1961's heavy-traffic form for one server).
* engine wait after admission: the residual of the decode step in progress (uniform on ``[0, t(N)]`` while the
  engine is busy) plus earlier prefills, an M/D/1 queue of load ``f_p = lambda p1`` whose mean wait is
  ``f_p p1 / (2 (1 - f_p))`` (Pollaczek-Khinchine) with an exponential tail of the same mean.
* TTFT p95 = slot-wait p95 + engine-wait p95 + ``p1`` (a sum of p95s: an upper bound of the p95 of the sum).
* TPOT p95: a tagged request decodes alongside ``N`` others on average (PASTA), so each step takes ``t(N + 1)``;
  prefills of requests arriving meanwhile stall its decode: their number is Poisson with mean ``lambda D``, so
  ``TPOT_95 = t(N + 1) + (lambda D + 1.645 sqrt(lambda D) / (1 - f_p)) p1 / decode_steps`` (normal
  approximation; the ``1 / (1 - f_p)`` widens the spread because every stall lengthens the decode and lets more
  arrivals in, a branching process whose total size has a standard deviation about ``1 / (1 - f_p)`` times the
  Poisson one; derived, checked against the simulation).

Agreement with ``plan.simulate`` (tests/plan/test_queueing.py, docs/plan-serve.md): TTFT p95 within -30% / +60%
of the simulation (``TTFT_P95_RTOL_LOW`` / ``TTFT_P95_RTOL_HIGH``; the error is mostly on the conservative side)
and TPOT p95 within 35%, for batch caps 4, 16 and 64 at 30, 60 and 85% of saturation; over the wider fitting
set (caps 4-256, 30-90% load, four regimes) TTFT p95 is within -27% / +50%. The previous model (Erlang C at
``(c, a)``, tail rate ``c / S - lambda``) was up to 2.5x too low for a cap of 16 near saturation and up to 4.7x
too low for a cap of 64 at 90% load: it treated the occupancy as Poisson.

Every function takes numpy arrays and broadcasts; nothing loops over candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "P95_TAIL_FRAC",
    "PEAKEDNESS_EXPONENT",
    "P95_Z",
    "QueueState",
    "continuous_batching_state",
    "erlang_c",
    "occupancy_peakedness",
    "occupancy_arrival_rps",
    "saturation_rps",
]

#: the tail probability of a p95
P95_TAIL_FRAC = 0.05
#: the standard normal 95th percentile
P95_Z = 1.6448536269514722
#: exponent of the occupancy peakedness ``z = (1 - lambda B)^-e``: 1 is the memoryless birth-death chain; 1.5
#: is fitted to plan.simulate (four step/prefill regimes, caps 4-256, 30-90% load; derived, see module docstring)
PEAKEDNESS_EXPONENT = 1.5
#: upper bound of ``lambda B`` in the peakedness (at 1 the chain has no stationary state; the slot queue is
#: unstable there anyway)
_MAX_FEEDBACK_FRAC = 0.99


def erlang_c(servers, offered_load):
    """Probability that an arrival waits in an M/M/c queue with *servers* c and *offered_load* a = lambda/mu
    (Erlang C), for real a in [0, c); 1.0 where a >= c. *servers* may be real (Hayward's c / z).

    Uses Erlang B = Poisson pmf(c; a) / Poisson cdf(c; a) (Erlang's loss formula; e.g. Kleinrock 1975,
    "Queueing Systems" Vol. 1, Sec. 3.7), with the cdf as the regularized upper incomplete gamma function
    ``Q(c + 1, a)`` (equal to it at integer c, continuous in c), and ``C = B / (1 - (a / c)(1 - B))``;
    vectorized through ``scipy.special`` (no recursion over c).
    """
    c, a = np.broadcast_arrays(np.asarray(servers, dtype=float), np.asarray(offered_load, dtype=float))
    out = np.where(a >= c, 1.0, 0.0)
    # only where the Poisson(a) tail at c is not negligible: c more than 10 sd + 10 above a leaves C < 1e-20
    live = (a > 0) & (a < c) & (c - a < 10.0 * np.sqrt(np.maximum(a, 0.0)) + 10.0)
    cl, al = c[live], a[live]
    from scipy import special  # lazy: `import flopwise.plan` stays light

    log_pmf = cl * np.log(al) - al - special.gammaln(cl + 1.0)
    cdf = special.gammaincc(cl + 1.0, al)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        b = np.exp(log_pmf) / np.maximum(cdf, 1e-300)
        val = b / (1.0 - al / cl * (1.0 - b))
    out[live] = np.clip(val, 0.0, 1.0)
    return out if out.ndim else out[()]


def saturation_rps(slots, step_s_full, prefill_s, decode_steps):
    """Requests/s one replica completes with every slot busy: each request costs the engine its prefill ``p1``
    plus ``1/c`` of ``decode_steps`` steps of ``t(c)``: ``c / (decode_steps * t(c) + c * p1)``."""
    return slots / (decode_steps * step_s_full + slots * prefill_s)


def occupancy_arrival_rps(n_decoding, step_s, prefill_s, decode_steps):
    """The arrival rate at which the mean decode occupancy is *n_decoding* (engine-time balance of the module
    docstring): ``lambda = N / (decode_steps * t(N) + N * p1)``, *step_s* being ``t(N)``."""
    n = np.asarray(n_decoding, dtype=float)
    return n / (np.asarray(decode_steps, dtype=float) * step_s + n * np.asarray(prefill_s, dtype=float))


def occupancy_peakedness(n_decoding, *, slots, step_s, step_s_full, prefill_s, decode_steps, arrival_rps):
    """Peakedness (variance / mean) of the slot occupancy, ``(1 - lambda B)^-PEAKEDNESS_EXPONENT`` with
    ``B = decode_steps * t1 + prefill_s`` and ``t1`` the chord slope of the decode step time between the mean
    occupancy *n_decoding* (step time *step_s*) and *slots* (*step_s_full*); see the module docstring."""
    n = np.asarray(n_decoding, dtype=float)
    c = np.asarray(slots, dtype=float)
    slope = np.maximum(np.asarray(step_s_full, dtype=float) - step_s, 0.0) / np.maximum(c - n, 1e-9)
    feedback = np.asarray(arrival_rps, dtype=float) * (
        np.asarray(decode_steps, dtype=float) * slope + prefill_s
    )
    return (1.0 - np.clip(feedback, 0.0, _MAX_FEEDBACK_FRAC)) ** -PEAKEDNESS_EXPONENT


@dataclass(frozen=True)
class QueueState:
    """The steady state of one replica at mean decode occupancy ``n_decoding`` (arrays, broadcast shape).

    ``arrival_rps``: the request rate that yields it; ``slot_load``: offered load in slots (Erlangs);
    ``is_stable``: the slot queue is stable (a < c and the rate below saturation); ``utilization``: arrival
    rate over the saturation rate;
    ``prefill_frac``: share of engine time in prefill; ``wait_prob``: Erlang C; times in seconds.
    """

    n_decoding: Any
    arrival_rps: Any
    decode_s: Any
    slot_hold_s: Any
    slot_load: Any
    is_stable: Any
    wait_prob: Any
    slot_wait_p95_s: Any
    engine_wait_p95_s: Any
    ttft_mean_s: Any
    ttft_p95_s: Any
    tpot_mean_s: Any
    tpot_p95_s: Any
    prefill_frac: Any
    busy_frac: Any
    utilization: Any


def continuous_batching_state(
    n_decoding,
    *,
    slots,
    step_s,
    step_s_tagged,
    step_s_full,
    prefill_s,
    decode_steps,
    stall_prefill_s=None,
) -> QueueState:
    """The queueing model of the module docstring at mean decode occupancy *n_decoding* (> 0).

    *step_s* is the decode step time at occupancy ``N``, *step_s_tagged* at ``min(N + 1, slots)``, *step_s_full*
    at ``slots``; *prefill_s* is one request's prefill time ``p1``; *decode_steps* the decode steps per request.
    *stall_prefill_s* (default *prefill_s*) is the part of ``p1`` that runs as its own engine step and stalls the
    running decodes: 0 for an engine that mixes prompt tokens into decode steps (chunked prefill, Sarathi-Serve,
    arXiv:2403.02310), whose step times then include those tokens (``estimate.serve.online_decode``); the
    request's own first token still takes ``p1``.
    """
    n = np.asarray(n_decoding, dtype=float)
    c = np.asarray(slots, dtype=float)
    t = np.asarray(step_s, dtype=float)
    p_own = np.asarray(prefill_s, dtype=float)
    p1 = p_own if stall_prefill_s is None else np.asarray(stall_prefill_s, dtype=float)
    k = np.asarray(decode_steps, dtype=float)
    lam = occupancy_arrival_rps(n, t, p1, k)
    f_p = lam * p1
    decode = n / lam
    busy = np.minimum(1.0, f_p + (1.0 - f_p) * (1.0 - np.exp(-n)))
    # engine wait after admission: residual decode step (uniform while busy) + M/D/1 prefill queue
    residual_p95 = np.where(busy > P95_TAIL_FRAC, t * (1.0 - P95_TAIL_FRAC / np.maximum(busy, 1e-12)), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        pq_mean = f_p * p1 / (2.0 * (1.0 - f_p))
        pq_p95 = np.where(
            f_p > P95_TAIL_FRAC,
            p1 / (2.0 * (1.0 - f_p)) * np.log(np.maximum(f_p, 1e-300) / P95_TAIL_FRAC),
            0.0,
        )
    engine_wait_mean = busy * t / 2.0 + pq_mean
    engine_wait_p95 = residual_p95 + pq_p95
    hold = engine_wait_mean + p_own + decode
    a = lam * hold
    t_full = np.asarray(step_s_full, dtype=float)
    sat = saturation_rps(c, t_full, p1, k)
    stable = (a < c) & (f_p < 1.0) & (lam < sat)
    z = occupancy_peakedness(
        n, slots=c, step_s=t, step_s_full=t_full, prefill_s=p1, decode_steps=k, arrival_rps=lam
    )
    z = np.minimum(z, np.maximum(c, 1.0))  # at least one equivalent server
    wait_prob = erlang_c(c / z, a / z)
    interleaved = lam * decode
    cs2 = interleaved * p1**2 / hold**2  # only stalling prefills spread the hold time
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (1.0 + cs2) / 2.0 / (sat - lam)
        slot_wait_mean = wait_prob * scale
        slot_wait_p95 = np.where(
            wait_prob > P95_TAIL_FRAC, scale * np.log(np.maximum(wait_prob, 1e-300) / P95_TAIL_FRAC), 0.0
        )
    slot_wait_mean = np.where(stable, slot_wait_mean, np.inf)
    slot_wait_p95 = np.where(stable, slot_wait_p95, np.inf)
    t_tag = np.asarray(step_s_tagged, dtype=float)
    tpot_mean = t_tag + interleaved * p1 / k
    tpot_p95 = t_tag + (interleaved + P95_Z * np.sqrt(interleaved) / (1.0 - np.minimum(f_p, 0.99))) * p1 / k
    util = lam / sat
    return QueueState(
        n_decoding=n,
        arrival_rps=lam,
        decode_s=decode,
        slot_hold_s=hold,
        slot_load=a,
        is_stable=stable,
        wait_prob=wait_prob,
        slot_wait_p95_s=slot_wait_p95,
        engine_wait_p95_s=engine_wait_p95,
        ttft_mean_s=slot_wait_mean + engine_wait_mean + p_own,
        ttft_p95_s=slot_wait_p95 + engine_wait_p95 + p_own,
        tpot_mean_s=tpot_mean,
        tpot_p95_s=tpot_p95,
        prefill_frac=f_p,
        busy_frac=busy,
        utilization=util,
    )
