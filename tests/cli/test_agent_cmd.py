"""`flopwise agent`: no NVIDIA driver -> exit 1 with the message; `--replay --once` against an in-process server.

The in-process server is a real app (``create_app`` over a SQLite file, migrated) reached through FastAPI's
TestClient, handed to the command through Click's context object, so the records go the whole way: NVML-shaped
samples -> aggregation -> JSON -> ``POST /api/v1/usage`` -> costing -> the ledger.
"""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from flopwise.cli.main import app as cli

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "meter" / "nvml-samples-handmade.csv"
runner = CliRunner()


def _has_driver() -> bool:
    try:
        from flopwise.meter.nvml import NvmlSampler

        NvmlSampler().close()
    except Exception:
        return False
    return True  # pragma: no cover - only on a machine with a GPU


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(app, TestClient, admin token) of a fresh server on a SQLite file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from flopwise.server import Settings, create_app
    from flopwise.server.bootstrap import bootstrap

    url = "sqlite:///" + (tmp_path_factory.mktemp("agent") / "flopwise.db").as_posix()
    app = create_app(Settings(database_url=url))
    _org, _user, token = bootstrap(app.state.db, "acme", "root", datetime.now(UTC))
    with TestClient(app) as client:
        yield app, client, token
    app.state.engine.dispose()


def _ledger(app) -> list:
    from flopwise.store import read_session
    from flopwise.store.ledger import UsageRecordRow

    table = UsageRecordRow.__table__
    with read_session(app.state.db) as s:
        return list(s.execute(select(table).where(table.c.source == "nvml").order_by(table.c.id)).all())


@pytest.mark.skipif(_has_driver(), reason="this machine has an NVIDIA driver")
def test_no_driver_exits_1_with_the_message(tmp_path):
    result = runner.invoke(
        cli, ["agent", "--server", "http://127.0.0.1:9", "--token", "fw_0123456789ab_x", "--once",
              "--spool-dir", str(tmp_path / "spool")],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    try:
        import pynvml  # noqa: F401
    except ImportError:  # pragma: no cover - nvidia-ml-py is a test dependency here
        assert "pip install nvidia-ml-py" in result.output
    else:
        assert "no NVIDIA driver" in result.output
        assert "flopwise ingest nvidia-smi" in result.output  # and what to do instead
    assert "Traceback" not in result.output


def test_replay_once_pushes_to_an_in_process_server(server, tmp_path):
    app, client, token = server
    args = ["agent", "--server", "http://testserver", "--token", token, "--replay", str(FIXTURE), "--once",
            "--spool-dir", str(tmp_path / "spool"), "--region", "country:NL", "--json"]  # fmt: skip
    result = runner.invoke(cli, args, obj={"client": client})
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    # --once: one push interval (60 s) of the recording: each GPU's 11:59 minute
    assert out["records"] == out["records_inserted"] == 2 and out["batches_waiting"] == 0
    rows = _ledger(app)
    assert len(rows) == 2
    assert {r.x_device_type for r in rows} == {"h100-sxm", "a100-sxm-80gb"}
    assert all(r.region_id == "country:NL" and r.x_co2e_kg and r.x_co2e_kg > 0 for r in rows)
    assert all(r.cost_usd is not None and r.cost_usd > 0 for r in rows)
    h100 = next(r for r in rows if r.x_device_type == "h100-sxm")
    # the H100's energy counter rose 7,000,000 mJ every 10 s from 11:59:00 to 12:00:00: 42 MJ = 0.01167 kWh
    assert h100.energy_basis == "measured" and abs(h100.x_energy_kwh - 42e6 / 1e3 / 3.6e6) < 1e-9

    # the whole recording, run twice: the minute already sent is a duplicate, nothing is counted twice
    full = [a for a in args if a != "--once"]
    first = json.loads(runner.invoke(cli, full, obj={"client": client}).stdout)
    again = json.loads(runner.invoke(cli, full, obj={"client": client}).stdout)
    assert first["records_duplicate"] >= 1 and first["records_inserted"] >= 1
    assert (
        again["records_inserted"] == 0 and again["records_duplicate"] == again["records"] == first["records"]
    )
    assert len(_ledger(app)) == 2 + first["records_inserted"]
    assert first["samples_rejected"] == 1 and "not-a-time" in first["samples_rejected_first"][0]["reason"]


def test_unreachable_server_leaves_the_batches_spooled_and_exits_1(server, tmp_path):
    app, client, token = server

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    spool = tmp_path / "spool"
    args = ["agent", "--server", "http://testserver", "--token", token, "--replay", str(FIXTURE),
            "--spool-dir", str(spool)]  # fmt: skip
    result = runner.invoke(cli, args, obj={"transport": httpx.MockTransport(refuse)})
    assert result.exit_code == 1
    assert "could not be delivered" in result.output and str(spool) in result.output.replace("\n", "")
    assert list(spool.glob("*.jsonl"))
    # the server is back: the next run drains the spool first
    before = len(_ledger(app))
    empty = tmp_path / "empty.csv"
    empty.write_text(FIXTURE.read_text().splitlines()[0] + "\n")
    result = runner.invoke(cli, [*args[:6], str(empty), *args[7:], "--json"], obj={"client": client})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["records_delivered"] >= 1 and not list(spool.glob("*.jsonl"))
    assert len(_ledger(app)) >= before


def test_refused_token_exits_1_and_keeps_the_records(server, tmp_path):
    _app, client, _token = server
    spool = tmp_path / "spool"
    result = runner.invoke(
        cli, ["agent", "--server", "http://testserver", "--token", "fw_0123456789ab_wrong", "--replay", str(FIXTURE),
              "--spool-dir", str(spool)], obj={"client": client},
    )  # fmt: skip
    assert result.exit_code == 1
    assert "refused it (401" in result.output and list(spool.glob("*.jsonl"))


@pytest.mark.parametrize(
    ("extra", "match"),
    [(["--push-interval-s", "5"], "push_interval_s"), (["--max-spool-mb", "0"], "--max-spool-mb"),
     (["--region", "atlantis"], "atlantis")],
)  # fmt: skip
def test_bad_options_exit_2(tmp_path, extra, match):
    result = runner.invoke(
        cli, ["agent", "--server", "http://testserver", "--token", "fw_0123456789ab_x", "--replay", str(FIXTURE),
              "--spool-dir", str(tmp_path), *extra],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert match in result.output
