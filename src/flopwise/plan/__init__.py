"""Planning: pure search and optimization over the estimator (no I/O).

``plan_serve`` ranks every way to serve a model across the catalog (device, tensor parallel, quantization, price
basis, batch cap, replicas) with latency under load from a queueing model of continuous batching
(``plan.queueing``, checked against the discrete-event simulation in ``plan.simulate``); ``what_ifs`` prices the
changes one could make to a chosen option. See docs/plan-serve.md. ``plan_train`` searches device, count and
parallelism for a training run (docs/plan-train.md), ``plan_size`` gives compute-optimal model sizes, and
``plan_fleet`` solves the cheapest hardware mix for several services as an integer program (docs/plan-fleet.md).
"""

from __future__ import annotations

from flopwise.plan.candidates import (
    CandidateSpace,
    ServeCandidate,
    ServeWorkload,
    SkippedCandidate,
    enumerate_serve_candidates,
    enumerate_serve_space,
)
from flopwise.plan.fleet import FleetPlan, FleetSpec, parse_fleet_spec, plan_fleet, solve_fleet
from flopwise.plan.queueing import QueueState, continuous_batching_state, erlang_c
from flopwise.plan.serve import CapacityTable, ServePlan, plan_serve, replica_capacity
from flopwise.plan.simulate import SimResult, simulate_continuous_batching
from flopwise.plan.size import SizePlan, plan_size
from flopwise.plan.train import TrainPlan, breakeven_utilization, plan_train
from flopwise.plan.whatif import WhatIf, what_ifs

__all__ = [
    "CandidateSpace",
    "CapacityTable",
    "ServePlan",
    "plan_serve",
    "replica_capacity",
    "QueueState",
    "ServeCandidate",
    "ServeWorkload",
    "SimResult",
    "SkippedCandidate",
    "continuous_batching_state",
    "enumerate_serve_candidates",
    "enumerate_serve_space",
    "erlang_c",
    "simulate_continuous_batching",
    "WhatIf",
    "what_ifs",
    "FleetPlan",
    "FleetSpec",
    "parse_fleet_spec",
    "plan_fleet",
    "solve_fleet",
    "SizePlan",
    "plan_size",
    "TrainPlan",
    "breakeven_utilization",
    "plan_train",
]
