"""flopwise validate's tpot_ms category: TPOT under load, in-sample and leave one source out."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from flopwise.cli.main import app


def test_validate_tpot_json():
    res = CliRunner().invoke(app, ["validate", "--category", "tpot_ms", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    cat = next(c for c in data["categories"] if c["category"] == "tpot_ms")
    assert cat["n"] >= 10 and cat["median_abs_rel_error"] <= data["bounds"]["tpot_ms"]
    rows = data["online_tpot_fit"]
    overall = next(r for r in rows if r["engine"] == "all")
    assert overall["median_abs_rel_error_loso"] <= 1.5 * overall["median_abs_rel_error_in_sample"] + 1e-9
    assert {r["engine"] for r in rows} >= {"vllm", "sglang", "trt-llm", "all"}
    assert len({r["source"] for r in rows if r["engine"] != "all"}) >= 2


def test_validate_tpot_table():
    res = CliRunner().invoke(app, ["validate", "--category", "tpot_ms"])
    assert res.exit_code == 0, res.output
    assert "leave one source out" in res.output and "tpot_ms" in res.output
