"""Model architectures: the built-in registry, Hugging Face config parsing and parameter counting.

Stdlib only, so the CLI can import it without numpy.
"""

from __future__ import annotations

from flopwise.models.params import ParamCount, count_params
from flopwise.models.types import ModelArch

__all__ = ["ModelArch", "ParamCount", "count_params"]
