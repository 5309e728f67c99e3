"""`--calibrate`: estimates corrected by plan-vs-actual factors learned from metered usage in the store (#5)."""

from __future__ import annotations

import json
import math
from decimal import Decimal

from typer.testing import CliRunner

from flopwise.cli.main import app
from flopwise.store import make_engine, make_session_factory, upgrade, write_session
from flopwise.store.ledger import CalibrationSample

runner = CliRunner()
#: actual / estimated device-hours of four past H100 training runs: their median is 1.3
RATIOS = (1.25, 1.3, 1.3, 1.4)


def _seed(url: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    with write_session(make_session_factory(engine)) as s:
        for ratio in RATIOS:
            s.add(CalibrationSample(device_type="h100-sxm", workload_kind="train", estimated_device_hours=100.0,
                                    actual_device_hours=100.0 * ratio, estimated_cost_usd=Decimal("300"),
                                    actual_cost_usd=Decimal("300") * Decimal(str(ratio))))  # fmt: skip
    engine.dispose()


def test_estimate_train_calibrated_by_metered_history(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    _seed(url)
    args = ["estimate", "train", "--model", "llama-3.1-8b", "--tokens", "100B", "--device", "h100", "--count", "8",
            "--pricing", "on-demand", "--json"]  # fmt: skip
    raw = json.loads(runner.invoke(app, args).stdout)
    result = runner.invoke(app, [*args, "--calibrate", "--database-url", url])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # the shrunk median of the ratios: (4 x 1.3 + 2 x 1) / (4 + 2) = 1.2
    factor = data["calibrated"]["factors"]["device_hours"]
    assert math.isclose(factor, 1.2, rel_tol=1e-9)
    assert math.isclose(data["calibrated"]["device_hours"], raw["device_hours"] * factor, rel_tol=1e-9)
    assert data["device_hours"] == raw["device_hours"]  # the raw estimate is kept beside the correction
    assert Decimal(data["calibrated"]["cost_usd"]) > Decimal(raw["cost_usd"])


def test_no_history_warns_and_leaves_the_estimate(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    result = runner.invoke(app, ["estimate", "serve", "--model", "llama-3.1-8b", "--device", "L4", "--calibrate",
                                 "--database-url", url, "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert "calibrated" not in data
    assert any("no plan-vs-actual calibration" in w for w in data["warnings"])


def test_plan_train_options_carry_calibration_and_rerank(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    _seed(url)
    result = runner.invoke(app, ["plan", "train", "--model", "llama-3.1-8b", "--tokens", "100B", "--pricing",
                                 "on-demand", "--calibrate", "--database-url", url, "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    options = json.loads(result.stdout)["options"]
    h100 = [o for o in options if o["device"] == "h100-sxm"]
    assert h100 and all("calibrated" in o for o in h100)
    assert all("calibrated" not in o for o in options if o["device"] != "h100-sxm")
    costs = [Decimal(o.get("calibrated", {}).get("cost_usd", o["cost_usd"])) for o in options]
    assert costs == sorted(costs)
