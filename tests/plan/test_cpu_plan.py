"""The planner ranks CPU slices beside GPUs and says when a CPU is enough (issue: CPUs where they suffice)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from flopwise.cli.main import app

runner = CliRunner()

EXAMPLE = [
    "plan", "serve", "--model", "llama-3.2-1b", "--rps", "0.5", "--input-tokens", "300", "--output-tokens", "100",
    "--ttft-p95-ms", "2000", "--tpot-p95-ms", "150", "--json",
]  # fmt: skip


@pytest.fixture(scope="module")
def example():
    out = runner.invoke(app, EXAMPLE)
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def test_small_model_low_traffic_plan_is_a_cpu_vm(example):
    top = example["options"][0]
    versus = example["cpu_vs_gpu"]
    cpu, gpu = versus["cheapest_cpu"], versus["cheapest_gpu"]
    assert cpu is not None and gpu is not None
    # the plan is a CPU offering because one meets the SLO for less than any GPU option
    assert Decimal(cpu["cost_per_hour_usd"]) < Decimal(gpu["cost_per_hour_usd"])
    assert top["device"] == cpu["device"] and "@" in top["device"]  # a slice of a socket: a small VM
    assert top["ttft_p95_ms"] <= 2000 and top["tpot_p95_ms"] <= 150
    over = versus["gpu_over_provisioning"]
    assert over["gpu_utilization"] < 0.1 and over["gpu_cost_ratio_vs_cpu"] > 1.0
    assert "A CPU is enough" in example["summary"]


def test_crossover_series_is_chart_ready(example):
    cross = example["cpu_vs_gpu"]["crossover"]
    series = cross["series"]
    assert [r["rps"] for r in series] == sorted(r["rps"] for r in series)
    assert series[0]["cheaper"] == "cpu"
    at = cross["gpu_takes_over_at_rps"]
    assert at is not None and at > 0.5
    # CPU cost grows with traffic (more or bigger VMs); the first GPU-cheaper point is the crossover
    cpu_costs = [Decimal(r["cpu_cost_per_hour_usd"]) for r in series]
    assert cpu_costs == sorted(cpu_costs)
    assert next(r["rps"] for r in series if r["cheaper"] == "gpu") == at


def test_burstable_options_state_the_credit_caveat():
    out = runner.invoke(app, [*EXAMPLE[:-1], "--providers", "aws", "--top", "200", "--json"])
    assert out.exit_code == 0, out.output
    opts = json.loads(out.output)["options"]
    burst = [o for o in opts if (o["instance_type"] or "").startswith(("t3.", "t4g."))]
    for o in burst:
        assert o["caveats"] and "burstable" in o["caveats"][0]
    assert all(not o["caveats"] for o in opts if o not in burst)


def test_a_small_vm_holds_only_its_ram_and_burstables_carry_the_caveat():
    args = [*EXAMPLE[:-1], "--providers", "aws", "--top", "300", "--json"]
    args[args.index("--rps") + 1] = "0.05"
    args[args.index("--ttft-p95-ms") + 1] = "30000"
    args[args.index("--tpot-p95-ms") + 1] = "1000"
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    opts = json.loads(out.output)["options"]
    for o in opts:  # a 0.5 GiB t4g.nano cannot hold 1B weights: no option uses it
        assert o["instance_type"] not in ("t4g.nano", "t3.nano", "t4g.micro", "t3.micro"), o
    burst = [o for o in opts if (o["instance_type"] or "").startswith(("t3.", "t4g."))]
    assert burst, "a 1B model at 0.05 req/s with a lax SLO fits some burstable VM"
    for o in burst:
        assert o["caveats"] and "burstable" in o["caveats"][0] and "per vCPU" in o["caveats"][0]
