"""flopwise: estimate, plan, govern and meter ML compute.

The public API is re-exported here and imported lazily, so ``import flopwise`` stays cheap
(no numpy until an estimate is made)::

    import flopwise
    report = flopwise.estimate_training("llama-3.1-8b", "h100-sxm", tokens=15e12, device_count=1024)
    print(report.to_dict()["device_hours"])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real signatures, for type checkers and IDEs; at run time each name loads on first use
    from flopwise.api import estimate_serving, estimate_training
    from flopwise.catalog import load_catalog
    from flopwise.errors import (
        CatalogError,
        FlopwiseError,
        InputError,
        UnknownAcceleratorError,
        UnknownModelError,
    )
    from flopwise.estimate import estimate_serve, estimate_train
    from flopwise.models import count_params, load_models, parse_hf_config, resolve_model

__all__ = [
    "CatalogError",
    "FlopwiseError",
    "InputError",
    "UnknownAcceleratorError",
    "UnknownModelError",
    "count_params",
    "estimate_serve",
    "estimate_serving",
    "estimate_train",
    "estimate_training",
    "load_catalog",
    "load_models",
    "parse_hf_config",
    "resolve_model",
]

_WHERE = {
    "CatalogError": "flopwise.errors",
    "FlopwiseError": "flopwise.errors",
    "InputError": "flopwise.errors",
    "UnknownAcceleratorError": "flopwise.errors",
    "UnknownModelError": "flopwise.errors",
    "count_params": "flopwise.models",
    "estimate_serve": "flopwise.estimate",
    "estimate_train": "flopwise.estimate",
    "estimate_serving": "flopwise.api",
    "estimate_training": "flopwise.api",
    "load_catalog": "flopwise.catalog",
    "load_models": "flopwise.models",
    "parse_hf_config": "flopwise.models",
    "resolve_model": "flopwise.models",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'flopwise' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
