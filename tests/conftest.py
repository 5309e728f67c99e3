"""Root of the test tree: puts ``tests/`` on ``sys.path`` so test modules and the conftest files below can
import the shared helpers here (``import pgutil``) whichever directory pytest is started on."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
