"""Admission latency at Slurm: sbatch wall time with flopwise's job_submit.lua and without it, side by side.

Starts the real single-node Slurm of tests/enforce/slurmlab.py (needs root, Debian's Slurm packages, munge and
MariaDB at 127.0.0.1:3306: .ci/slurm-deps.sh), creates a budgeted account, writes a decision cache with 20
budgets and 200 undecided jobs in it (so the plugin does real work per submission), then times N
``sbatch --hold`` submissions (held: nothing runs, only admission is measured) in alternating blocks with the
plugin off and on (slurmctld restarted between blocks, as slurm.conf's JobSubmitPlugins needs). Prints p50, p99
and the p99 difference, which is what the plugin adds per job at the engine (target: under 20 ms).

Run: ``python bench/bench_enforce_slurm.py [N]`` (default N = 200 per side, in 4 blocks each).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "enforce"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import slurmlab  # noqa: E402
from _enforce_common import pct  # noqa: E402

from flopwise.enforce.slurm import AccountSpec, load_config, render_cache, render_plugin  # noqa: E402

BLOCKS = 4




def _submit_block(lab: slurmlab.SlurmLab, n: int, account: str) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = subprocess.run(
            ["sbatch", "-A", account, "--hold", "--gres=gpu:h100:1", "--time=10", "--wrap", "true"],
            env=lab.env, capture_output=True, text=True, check=False, cwd=lab.root,
        )  # fmt: skip
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise SystemExit(f"sbatch failed: {r.stderr}")
    lab.run("scancel", "-A", account)
    return times


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    missing = slurmlab.missing_tools()
    if missing:
        raise SystemExit(f"needs {', '.join(missing)} (run .ci/slurm-deps.sh as root)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "cache.lua"
        config = load_config(
            {"cache": str(cache), "state_dir": str(root / "state"),
             "gpus": {"h100": {"device": "h100-sxm", "usd_per_h": "2.50"}}}
        )  # fmt: skip
        lab = slurmlab.start_lab(root / "lab", job_submit_lua=render_plugin(cache))
        try:
            account = "bench_proj"
            lab.run("sacctmgr", "-i", "add", "account", account)
            lab.run("sacctmgr", "-i", "add", "user", "root", f"account={account}")
            budgets = [
                {"id": i, "name": f"b{i}", "unit": "usd" if i % 2 else "device_hours", "is_hard": True,
                 "scope_kind": "project" if i == 1 else "org", "scope_id": 1,
                 "remaining": Decimal("1000000"), "current_window_start": "2026-01-01T00:00:00Z"}
                for i in range(1, 21)
            ]  # fmt: skip
            undecided = {f"1-{k}": {"1": 5_000_000} for k in range(200)}
            accounts = [AccountSpec(account, "root", project_id=1, team_id=1)]

            def refresh() -> None:
                cache.write_text(render_cache(accounts, budgets, config, [], time.time(), undecided))

            off: list[float] = []
            on: list[float] = []
            per = max(1, n // BLOCKS)
            for _ in range(BLOCKS):
                lab.set_job_submit_plugin(False)
                off += _submit_block(lab, per, account)
                lab.set_job_submit_plugin(True)
                refresh()
                on += _submit_block(lab, per, account)
        finally:
            lab.stop()
    ms = 1000.0
    print(f"sbatch wall time over {len(off)} submissions per side (single-node lab, {BLOCKS} alternating blocks)")
    print(f"  without job_submit.lua: p50 {statistics.median(off) * ms:7.2f} ms  p99 {pct(off, 0.99) * ms:7.2f} ms")
    print(f"  with flopwise plugin:   p50 {statistics.median(on) * ms:7.2f} ms  p99 {pct(on, 0.99) * ms:7.2f} ms")
    print(
        f"  added by the plugin:    p50 {(statistics.median(on) - statistics.median(off)) * ms:+7.2f} ms  "
        f"p99 {(pct(on, 0.99) - pct(off, 0.99)) * ms:+7.2f} ms  (target < 20 ms p99)"
    )


if __name__ == "__main__":
    main()
