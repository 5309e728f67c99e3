"""A small deterministic discrete-event simulation of the continuous-batching scheduler of ``plan.queueing``.

Poisson arrivals from a seeded ``numpy.random.Generator``; ``slots`` concurrent requests at most; the engine runs
one iteration at a time: if requests wait and slots are free it admits as many as fit (FCFS) and prefills them
(up to ``max_prefill_batch`` at once, ``prefill_s[k]`` for ``k`` prompts; this emits their first tokens), else it runs one decode step of
``step_s[n]`` for the ``n`` running requests; a request leaves after ``decode_steps`` decode steps. Used by the
tests to check the analytic p95s, and by anyone who wants the distribution rather than an approximation.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import numpy as np

from flopwise.errors import InputError

__all__ = ["SimResult", "simulate_continuous_batching"]


@dataclass(frozen=True)
class SimResult:
    """Per-request TTFT and TPOT (seconds, after warm-up) and summary statistics of one run."""

    ttft_s: Any
    tpot_s: Any
    ttft_p95_s: float
    tpot_p95_s: float
    ttft_mean_s: float
    tpot_mean_s: float
    mean_decoding: float
    throughput_rps: float
    busy_frac: float


def simulate_continuous_batching(
    *,
    arrival_rps: float,
    slots: int,
    step_s,
    prefill_s,
    decode_steps: int,
    n_requests: int = 20_000,
    warmup_requests: int = 2_000,
    seed: int = 0,
    max_prefill_batch: int = 1,
) -> SimResult:
    """Run the scheduler for *n_requests* Poisson arrivals at *arrival_rps*.

    *step_s*: array of length ``slots + 1``, decode step time by occupancy (index 0 unused); *prefill_s*: array of
    length ``slots + 1``, prefill time of ``k`` prompts together (index 0 unused). Statistics skip the first
    *warmup_requests* requests. *max_prefill_batch* caps the prompts prefilled in one iteration (1: FCFS one at
    a time, what a per-iteration token budget of about one prompt gives, as the analytic model assumes).
    """
    step = np.asarray(step_s, dtype=float)
    prefill = np.asarray(prefill_s, dtype=float)
    if slots < 1 or step.shape != (slots + 1,) or prefill.shape != (slots + 1,):
        raise InputError(
            "step_s/prefill_s", (step.shape, prefill.shape), f"give arrays of length slots + 1 = {slots + 1}"
        )
    if decode_steps < 1:
        raise InputError("decode_steps", decode_steps, "give at least one decode step")
    if not 0 <= warmup_requests < n_requests:
        raise InputError("warmup_requests", warmup_requests, "must be below n_requests")
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / arrival_rps, size=n_requests)).tolist()
    step_l = step.tolist()
    prefill_l = prefill.tolist()

    first_token = [0.0] * n_requests
    finish = [0.0] * n_requests
    running: list[tuple[int, int]] = []  # heap of (decode step index at which it finishes, request)
    step_count = 0  # decode steps run so far
    now = 0.0
    next_arrival = 0  # index of the next request not yet arrived
    queue_head = 0  # requests [queue_head, next_arrival) wait, FCFS
    done = 0
    busy_s = 0.0
    decoding_area = 0.0
    while done < n_requests:
        while next_arrival < n_requests and arrivals[next_arrival] <= now:
            next_arrival += 1
        waiting = next_arrival - queue_head
        free = slots - len(running)
        if waiting and free:
            k = min(waiting, free, max_prefill_batch)
            dt = prefill_l[k]
            decoding_area += len(running) * dt
            now += dt
            busy_s += dt
            for r in range(queue_head, queue_head + k):
                first_token[r] = now
                heapq.heappush(running, (step_count + decode_steps, r))
            queue_head += k
        elif running:
            n = len(running)
            dt = step_l[n]
            decoding_area += n * dt
            now += dt
            busy_s += dt
            step_count += 1
            while running and running[0][0] <= step_count:
                _, r = heapq.heappop(running)
                finish[r] = now
                done += 1
        else:
            now = max(now, arrivals[next_arrival])
    arr = np.asarray(arrivals)[warmup_requests:]
    ft = np.asarray(first_token)[warmup_requests:]
    fin = np.asarray(finish)[warmup_requests:]
    ttft = ft - arr
    tpot = (fin - ft) / decode_steps
    return SimResult(
        ttft_s=ttft,
        tpot_s=tpot,
        ttft_p95_s=float(np.percentile(ttft, 95)),
        tpot_p95_s=float(np.percentile(tpot, 95)),
        ttft_mean_s=float(ttft.mean()),
        tpot_mean_s=float(tpot.mean()),
        mean_decoding=decoding_area / now,
        throughput_rps=n_requests / now,
        busy_frac=busy_s / now,
    )
