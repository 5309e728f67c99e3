"""``flopwise ingest`` end to end: a summary table or one JSON object, rejects on stderr, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from flopwise.cli.main import app

DATA = Path(__file__).resolve().parents[1] / "data"
runner = CliRunner()


def sample(rel: str) -> Path:
    path = DATA / rel
    assert path.exists(), f"sample file {rel} is missing from tests/data (see tests/data/README.md)"
    return path


def test_ingest_json_twice_then_duplicates(tmp_path):
    db = f"sqlite:///{tmp_path / 'f.db'}"
    args = ["ingest", "slurm", str(sample("slurm/hb-jobinfo-sacct.txt")), "--database-url", db,
            "--assume-tz", "Europe/Amsterdam", "--format", "hb-jobinfo", "--cluster", "hb", "--json"]  # fmt: skip
    first = runner.invoke(app, args)
    assert first.exit_code == 5, first.output  # partial: some rows rejected, the others stored
    body = json.loads(first.stdout)
    assert (body["status"], body["rows_read"], body["records_inserted"], body["rows_rejected"]) == (
        "partial", 242, 87, 19,
    )  # fmt: skip
    assert body["reconciles"] is True and body["rejects"][0]["line"] == 3
    second = json.loads(runner.invoke(app, args).stdout)
    assert (second["records_inserted"], second["records_duplicate"]) == (0, 87)
    # after ingesting: attribution, settling and alerts ran (no rules or budgets here: all stays unattributed)
    assert body["burn"]["unattributed"] == 87 and body["burn"]["new_alerts"] == 0
    skipped = json.loads(runner.invoke(app, [*args, "--no-burn"]).stdout)
    assert skipped["burn"] is None


def test_ingest_table_and_rejects_on_stderr(tmp_path):
    db = f"sqlite:///{tmp_path / 'f.db'}"
    result = runner.invoke(
        app, ["ingest", "focus", str(sample("focus/focus-1.0-sample.csv")), "--database-url", db]
    )
    assert result.exit_code == 0  # every row stored
    assert "rows read" in result.stdout and "1,000" in result.stdout
    # FOCUS timestamps are UTC: the official sample's zone-less ones read without --assume-tz
    assert "no time zone" not in result.stderr and "line " not in result.stderr
    bill = Path(__file__).resolve().parents[1] / "fixtures" / "meter" / "focus-gpu-handmade.csv"
    bad = tmp_path / "bad.csv"
    lines = bill.read_text(encoding="utf-8").splitlines(keepends=True)
    bad.write_text(lines[0] + lines[1] + "1,2,3\n", encoding="utf-8")
    partial = runner.invoke(app, ["ingest", "focus", str(bad), "--database-url", db])
    assert partial.exit_code == 5  # some rows rejected: a partial ingest
    assert "line 3: has 3 fields" in partial.stderr  # the reject, with its line and reason


def test_failed_run_exits_2_with_one_message(tmp_path):
    db = f"sqlite:///{tmp_path / 'f.db'}"
    result = runner.invoke(app, ["ingest", "focus", str(sample("dcgm/h100x8-dcgm-exporter-scrape.prom")),
                                 "--database-url", db])  # fmt: skip
    assert result.exit_code == 2  # the input could not be understood: bad input
    assert "not a FOCUS file" in result.stderr and "nothing of this input was kept" in result.stderr


def test_unknown_source_is_a_usage_error(tmp_path):
    result = runner.invoke(
        app, ["ingest", "splunk", "x.csv", "--database-url", f"sqlite:///{tmp_path / 'f.db'}"]
    )
    assert result.exit_code == 2


def test_unknown_region_is_bad_input(tmp_path):
    result = runner.invoke(app, ["ingest", "focus", str(sample("focus/focus-1.0-sample.csv")),
                                 "--database-url", f"sqlite:///{tmp_path / 'f.db'}", "--region", "country:Atlantis"])  # fmt: skip
    assert result.exit_code == 2


def test_overlap_flag_reaches_the_options(tmp_path, monkeypatch):
    """``--overlap`` / ``--no-overlap`` set ``IngestOptions.overlap``; without either the default stands."""
    import flopwise.meter.ingest as ingest_mod

    seen = []
    real = ingest_mod.ingest_source

    def spy(*args, **kwargs):
        seen.append(kwargs["options"].overlap)
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest_mod, "ingest_source", spy)
    db = f"sqlite:///{tmp_path / 'f.db'}"
    base = ["ingest", "focus", str(sample("focus/focus-1.0-sample.csv")), "--database-url", db, "--no-burn"]
    for flag in ([], ["--overlap"], ["--no-overlap"]):
        assert runner.invoke(app, [*base, *flag]).exit_code == 0
    assert seen == [ingest_mod.IngestOptions().overlap, True, False]
