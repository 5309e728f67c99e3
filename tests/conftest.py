"""Root of the test tree: puts ``tests/`` on ``sys.path`` so test modules and the conftest files below can
import the shared helpers here (``import pgutil``) whichever directory pytest is started on."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

# Hypothesis: in CI (CI=true), derandomized so a red run is reproducible and a green one stays green; locally
# random, so new inputs keep being explored (and failures are kept in .hypothesis/ to replay).
import os  # noqa: E402

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
