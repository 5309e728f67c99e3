"""`flopwise plan ...` end to end: the JSON shape the issue promises, tables, and bad input."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flopwise.cli.main import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]

SERVE_OPTION_KEYS = {
    "device",
    "count",
    "replicas",
    "tensor_parallel",
    "quant",
    "batch",
    "pricing",
    "provider",
    "region",
    "cost_per_hour_usd",
    "cost_per_1m_tokens_usd",
    "ttft_p95_ms",
    "tpot_p95_ms",
    "throughput_tokens_per_s",
    "energy_per_1m_tokens_kwh",
    "co2e_per_1m_tokens_kg",
    "meets_slo",
}
TRAIN_OPTION_KEYS = {
    "device",
    "count",
    "parallelism",
    "wall_clock_hours",
    "device_hours",
    "cost_usd",
    "energy_kwh",
    "co2e_kg",
    "pricing",
}
CHAT = [
    "--model",
    "llama-3.1-8b",
    "--rps",
    "20",
    "--input-tokens",
    "1000",
    "--output-tokens",
    "200",
    "--ttft-p95-ms",
    "1000",
    "--tpot-p95-ms",
    "100",
]


def run_json(*args):
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_plan_serve_json_shape():
    data = run_json("plan", "serve", *CHAT)
    assert {"options", "rejected", "pareto", "assumptions"} <= data.keys()
    assert data["options"], data.get("summary")
    for option in data["options"]:
        assert option.keys() >= SERVE_OPTION_KEYS
        assert option["meets_slo"] is True
        assert option["ttft_p95_ms"] <= 1000 and option["tpot_p95_ms"] <= 100
    costs = [float(o["cost_per_hour_usd"]) for o in data["options"]]
    assert costs == sorted(costs)


def test_plan_serve_table_and_impossible_slo():
    result = runner.invoke(app, ["plan", "serve", *CHAT])
    assert result.exit_code == 0, result.output
    assert "plan serve llama-3.1-8b" in result.stdout
    result = runner.invoke(
        app, ["plan", "serve", *CHAT[:-4], "--ttft-p95-ms", "0.01", "--tpot-p95-ms", "0.01", "--json"]
    )
    assert result.exit_code == 4  # answered, but nothing is feasible
    data = json.loads(result.stdout)
    assert data["options"] == []
    assert data["rejected"], "an impossible SLO must say why, not return an empty answer"


def test_plan_train_json_shape():
    data = run_json(
        "plan",
        "train",
        "--model",
        "llama-3.1-8b",
        "--tokens",
        "1T",
        "--deadline",
        "30d",
        "--pricing",
        "on-demand",
    )
    assert data["options"]
    for option in data["options"]:
        assert option.keys() >= TRAIN_OPTION_KEYS
        assert option["pricing"] == "on-demand"
        assert option["wall_clock_hours"] <= 30 * 24


def test_plan_size_chinchilla():
    data = run_json("plan", "size", "--budget-flops", "5.76e23")
    assert 2e10 <= data["chinchilla"]["params"] <= 1e11


def test_plan_fleet_example():
    data = run_json("plan", "fleet", str(ROOT / "examples" / "fleet.yaml"))
    assert data["is_feasible"] is True
    assert 0 <= data["saving_frac"] < 1
    assert {s["name"] for s in data["services"]} == {"chat", "analyst", "summarize"}
    table = runner.invoke(app, ["plan", "fleet", str(ROOT / "examples" / "fleet.yaml")])
    assert table.exit_code == 0 and "best single type" in table.stdout


def test_plan_fleet_impossible_exits_4():
    result = runner.invoke(
        app, ["plan", "fleet", str(ROOT / "tests" / "plan" / "fixtures" / "fleet-impossible.yaml")]
    )
    assert result.exit_code == 4
    assert "no feasible fleet" in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["plan", "serve", "--model", "llama-3.1-8b", "--rps", "-1"], "rps"),
        (["plan", "serve", "--model", "llama-3.1-8b", "--rps", "1", "--objective", "vibes"], "objective"),
        (["plan", "train", "--model", "llama-3.1-8b", "--tokens", "1T", "--deadline", "soon"], "deadline"),
        (["plan", "train", "--model", "llama-3.1-8b", "--tokens", "1T", "--budget-usd", "lots"], "budget"),
        (["plan", "size"], "budget"),
        (["plan", "size", "--budget-usd", "1000000"], "--device"),
        (["plan", "fleet", "does-not-exist.yaml"], "does-not-exist.yaml"),
    ],
)
def test_plan_bad_input(args, needle):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr
    assert "Traceback" not in result.output


def test_plan_fleet_bad_spec(tmp_path):
    spec = tmp_path / "fleet.yaml"
    spec.write_text(
        "services:\n  - {name: chat, model: llama-3.1-8b, rps: -3, input_tokens: 100, output_tokens: 10}\n"
    )
    result = runner.invoke(app, ["plan", "fleet", str(spec)])
    assert result.exit_code == 2
    assert "services[0].rps" in result.stderr


def test_plan_serve_what_ifs():
    data = run_json("plan", "serve", *CHAT, "--what-if")
    names = {w["name"] for w in data["what_ifs"]}
    assert {"quantize", "spot", "reserved", "greener_region", "prefix_caching"} <= names
    assert all(w["caveat"] for w in data["what_ifs"])
