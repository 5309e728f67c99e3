"""Time to ``import flopwise.plan`` now that scipy loads only when a solver runs, against the old eager cost
(the same import plus ``scipy.optimize`` and ``scipy.special``, which plan/size.py and plan/queueing.py used to
import at module level). Each sample is a fresh interpreter; both are measured in one run, interleaved.

Run: ``python bench/bench_import_plan.py [N]`` (default N = 7 samples each; the median is printed).
"""

from __future__ import annotations

import statistics
import subprocess
import sys

LAZY = "import flopwise.plan"
EAGER = "import flopwise.plan, scipy.optimize, scipy.special"
_TIMED = "import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"


def _sample(stmt: str) -> float:
    out = subprocess.run([sys.executable, "-c", _TIMED.format(stmt=stmt)], capture_output=True, text=True, check=True)
    return float(out.stdout)


def main(n: int) -> None:
    _sample(EAGER)  # warm the file cache for both
    lazy, eager = [], []
    for _ in range(n):
        lazy.append(_sample(LAZY))
        eager.append(_sample(EAGER))
    lazy_ms, eager_ms = statistics.median(lazy) * 1e3, statistics.median(eager) * 1e3
    print(f"import flopwise.plan (scipy lazy):           {lazy_ms:7.0f} ms (median of {n})")
    print(f"baseline, scipy imported eagerly as before:  {eager_ms:7.0f} ms (median of {n})")
    print(f"saved: {eager_ms - lazy_ms:.0f} ms ({(eager_ms - lazy_ms) / eager_ms:.0%})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
