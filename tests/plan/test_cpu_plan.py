"""The planner ranks CPU slices beside GPUs and says when a CPU is enough (issue: CPUs where they suffice)."""

from __future__ import annotations

import json
import re
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


def test_owned_machine_is_ranked_beside_rentals_at_its_energy_cost():
    # at 0.1 req/s one 13900K meets the SLO (prompt processing at llama.cpp's per-core kernel rates; at 0.5 req/s
    # it needs 4, the next test's case)
    args = [*EXAMPLE, "--owned", "core-i9-13900k", "--top", "1000"]
    args[args.index("--rps") + 1] = "0.1"
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    mine = [o for o in data["options"] if o["provider"] == "owned"]
    rentals = [o for o in data["options"] if o["provider"] != "owned"]
    assert mine and rentals
    best = mine[0]
    assert best["device"] == "core-i9-13900k" and best["pricing"] == "onprem"
    # energy only: the 13900K's power at the EIA residential rate, PUE 1.0 (no purchase, no overhead)
    assert best["pue"] == 1.0
    energy_usd_h = Decimal(str(best["power_per_device_w"])) / 1000 * Decimal("0.165")
    assert abs(Decimal(best["cost_per_hour_usd"]) - energy_usd_h) <= Decimal("0.01")
    assert Decimal(best["cost_per_hour_usd"]) < Decimal(rentals[0]["cost_per_hour_usd"])
    entry = data["assumptions"]["owned"][0]
    assert entry["device"] == "core-i9-13900k" and entry["meets_targets"] is True
    assert entry["rank"] == data["options"].index(best) + 1
    assert "Owned 1 x core-i9-13900k: rank" in data["summary"] and "energy only" in data["summary"]
    # the CPU-vs-GPU comparison stays between machines one can rent or buy
    assert data["cpu_vs_gpu"]["cheapest_cpu"]["device"] != "core-i9-13900k"


def test_owned_machine_too_small_for_the_load_is_rejected_with_the_count():
    out = runner.invoke(
        app, [*EXAMPLE[:5], "40", *EXAMPLE[6:], "--owned", "raspberry-pi-5-8gb", "--providers", "aws"]
    )
    data = json.loads(out.output)
    assert not any(o["provider"] == "owned" for o in data["options"])
    entry = data["assumptions"]["owned"][0]
    assert entry["meets_targets"] is False and entry["reason"]
    assert "Owned 1 x raspberry-pi-5-8gb: does not meet the targets" in data["summary"]


@pytest.mark.parametrize(
    ("spec", "needle"),
    [("rtx-4090:0", "1 to 64"), ("rtx-4090:two", "whole number"), ("rtx-4909", "rtx-4090"), (":2", "DEVICE")],
)
def test_owned_bad_input_is_a_clear_error(spec, needle):
    out = runner.invoke(app, [*EXAMPLE, "--owned", spec])
    assert out.exit_code == 2, out.output
    assert needle in out.output


def test_owned_count_caps_replicas():
    from flopwise.api import owned_devices
    from flopwise.catalog import load_catalog
    from flopwise.models import load_models, resolve_model
    from flopwise.plan.candidates import ServeWorkload
    from flopwise.plan.serve import plan_serve

    cat = load_catalog()
    arch, _ = resolve_model("llama-3.2-1b", load_models())
    wl = ServeWorkload(model=arch, rps=6.0, input_tokens=300, output_tokens=100, ttft_p95_ms=2000, tpot_p95_ms=150)
    plan = plan_serve(wl, cat, providers=["aws"], owned=owned_devices(["core-i9-13900k:2"], cat), top_k=1000)
    for o in plan.options:
        if o["provider"] == "owned":
            assert o["count"] <= 2
    capped = [r for r in plan.rejected if r.get("kind") == "exceeds_owned"]
    assert capped
    # the nearest miss is named (37 at llama.cpp's per-core kernel rates: 6 req/s x 300 prompt tokens is 4.4
    # TFLOP/s of prefill against about 0.58 per 13900K)
    assert re.search(r"needs \d+ x core-i9-13900k", plan.summary)
    assert all(r["shortfall_unit"] == "devices" and "2 owned" in r["reason"] for r in capped)
