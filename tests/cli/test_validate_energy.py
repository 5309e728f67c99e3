"""flopwise validate's energy section."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from flopwise.cli.main import app


def test_validate_energy_section_json():
    res = CliRunner().invoke(app, ["validate", "--category", "avg_power_w_per_device", "--json"])
    assert res.exit_code == 0, res.output
    energy = json.loads(res.output)["energy"]
    gens = {g["generation"]: g for g in energy["summary"]}
    assert {"all", "hopper", "ampere"} <= set(gens)
    assert gens["hopper"]["n"] >= 3 and gens["hopper"]["engines"] == ["vllm"]
    assert gens["ampere"]["n"] >= 10 and gens["all"]["sources"] >= 2
    for g in gens.values():
        for col in ("in_sample", "leave_one_case_out", "leave_one_source_out"):
            assert 0 <= g[f"median_abs_{col}"] < 1
        assert g["w_mem_w_per_tb_s"] > 0
    assert all(r["source_url"].startswith("https://") for r in energy["cases"])
    assert energy["j_cases"] and all(r["throughput_ratio"] > 0 for r in energy["j_cases"])


def test_validate_energy_per_token_category():
    res = CliRunner().invoke(app, ["validate", "--category", "energy_j_per_output_token", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert {c["category"] for c in data["cases"]} == {"energy_j_per_output_token"}
    assert data["energy"]["j_summary"]


def test_validate_energy_section_table():
    res = CliRunner().invoke(app, ["validate", "--category", "avg_power_w_per_device"])
    assert res.exit_code == 0, res.output
    assert "energy: average power per device" in res.output
    assert "energy: GPU energy per output token" in res.output
