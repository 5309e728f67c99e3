"""flopwise validate's CPU section: runs with thread counts, thread scaling and the CPU issue's targets."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from flopwise.cli.main import app


def test_validate_cpu_section_json():
    res = CliRunner().invoke(app, ["validate", "--category", "decode_tokens_per_s", "--json"])
    assert res.exit_code == 0, res.output
    cpu = json.loads(res.output)["cpu_threads"]
    assert cpu["within_targets"] is True
    assert cpu["targets"] == {"decode_median_abs_rel_error": 0.15, "thread_scaling": 0.15}
    assert cpu["median_abs_rel_error"] <= 0.15 and cpu["scaling_max_abs_rel_error"] <= 0.15
    assert cpu["leave_one_source_out_median_abs_rel_error"] == cpu["median_abs_rel_error"]
    assert {s["threads"] for s in cpu["thread_scaling"]} == {8, 16, 24, 32}
    assert all(r["source_url"].startswith("https://") for r in cpu["cases"])


def test_validate_cpu_section_table_and_other_categories():
    res = CliRunner().invoke(app, ["validate", "--category", "prefill_tokens_per_s"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # the console wraps long lines
    assert "CPU thread scaling" in text and "targets 15% / 15%: met" in text
    res = CliRunner().invoke(app, ["validate", "--category", "train_flops", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["cpu_threads"] is None
