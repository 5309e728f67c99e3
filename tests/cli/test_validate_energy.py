"""flopwise validate's energy section."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from flopwise.cli.main import app


def test_validate_energy_section_json():
    res = CliRunner().invoke(app, ["validate", "--category", "avg_power_w_per_device", "--json"])
    assert res.exit_code == 0, res.output
    energy = json.loads(res.output)["energy"]
    (hopper,) = [g for g in energy["summary"] if g["generation"] == "hopper"]
    assert hopper["n"] >= 3 and hopper["engines"] == ["vllm"]
    for col in ("in_sample", "leave_one_case_out", "leave_one_source_out"):
        assert 0 <= hopper[f"median_abs_{col}"] < 1
    assert all(r["source_url"].startswith("https://") for r in energy["cases"])


def test_validate_energy_section_table():
    res = CliRunner().invoke(app, ["validate", "--category", "avg_power_w_per_device"])
    assert res.exit_code == 0, res.output
    assert "energy: average power per device" in res.output
