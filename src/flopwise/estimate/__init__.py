"""The estimator: pure physics of training and serving (memory, FLOPs, time, power, energy, CO2e, cost).

Stdlib + numpy only; no file, network, environment or clock access. Per-term functions live in
``memory``, ``flops``, ``timing``, ``energy``, ``cost`` and ``quant``; ``estimate_train`` and
``estimate_serve`` compose them. See docs/methodology.md.
"""

from __future__ import annotations

from flopwise.estimate.memory import MemoryEstimate
from flopwise.estimate.quant import QUANT_FORMATS, QuantFormat, get_quant
from flopwise.estimate.serve import ServeEstimate, estimate_serve
from flopwise.estimate.train import TrainEstimate, estimate_train

__all__ = [
    "QUANT_FORMATS",
    "MemoryEstimate",
    "QuantFormat",
    "ServeEstimate",
    "TrainEstimate",
    "estimate_serve",
    "estimate_train",
    "get_quant",
]
