"""Atomic runs: a run whose process died (kill -9) is closed and undone by the next ingest, SIGTERM and Ctrl-C undo
the run and mark it interrupted, a corrupt .gz is one clear message, and a killed-then-rerun ingest leaves the ledger
equal, row by row, to a clean run's. ``ingest runs`` and ``ingest show RUN`` (also --csv) list runs and rejects."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from flopwise.catalog import load_catalog
from flopwise.cli.main import app
from flopwise.meter.ingest import IngestInterrupted, IngestOptions, close_stale_runs, ingest_source
from flopwise.store import (
    IngestRun,
    UsageRecordRow,
    make_engine,
    make_session_factory,
    read_session,
    write_session,
)

CAT = load_catalog()
BILL = Path(__file__).resolve().parents[1] / "fixtures" / "meter" / "focus-gpu-handmade.csv"
runner = CliRunner()


def _big_bill(path: Path, copies: int, restate: str | None = None) -> Path:
    """The handmade bill, then its rows again *copies* - 1 times under other invoice ids (new charges); with
    *restate*, the first row of each copy has that BilledCost."""
    rows = list(csv.DictReader(io.StringIO(BILL.read_text(encoding="utf-8"))))
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for i in range(copies):
            for j, row in enumerate(rows):
                out = dict(row)
                if i:  # the first copy is the bill itself
                    out["InvoiceId"] = f"INV-{i:06d}"
                if restate is not None and j == 0:
                    out["BilledCost"] = restate
                writer.writerow(out)
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _ledger(f) -> dict[str, tuple]:
    with read_session(f) as s:
        return {
            r.source_key: (r.billed_cost, r.cost_usd, r.x_device_hours, r.charge_period_start, r.x_extra)
            for r in s.scalars(select(UsageRecordRow))
        }


def test_stale_running_run_is_undone_and_marked_interrupted(factory, tmp_path):
    import socket

    first = ingest_source(factory, "focus", BILL, catalog=CAT)
    before = _ledger(factory)
    dead = _dead_pid()
    restated = ingest_source(factory, "focus", _big_bill(tmp_path / "r.csv", 2, restate="1.25"), catalog=CAT)
    assert (restated.records_replaced, restated.records_inserted, restated.records_duplicate) == (1, 7, 6)
    # pretend its process was killed mid-run: still "running", owned by a process that is gone
    with write_session(factory) as s:
        run = s.get(IngestRun, restated.run_id)
        run.status, run.owner, run.finished_at = "running", f"{socket.gethostname()[:180]}:{dead}", None
        live = IngestRun(
            source="focus", path="x", status="running", owner=f"{socket.gethostname()[:180]}:{os.getpid()}"
        )
        remote = IngestRun(source="focus", path="y", status="running", owner="another-host:1")
        s.add_all([live, remote])
        s.flush()
        live_id, remote_id = live.id, remote.id
    assert close_stale_runs(factory) == [restated.run_id]
    assert _ledger(factory) == before  # the replacement restored, the inserted rows gone
    with read_session(factory) as s:
        run = s.get(IngestRun, restated.run_id)
        assert run.status == "interrupted" and "undone" in run.message and run.finished_at is not None
        assert {s.get(IngestRun, i).status for i in (live_id, remote_id)} == {"running"}
        assert s.get(IngestRun, first.run_id).status == "ok"
    with write_session(factory) as s:
        for i in (live_id, remote_id):
            s.get(IngestRun, i).status = "failed"


def test_ctrl_c_undoes_the_run(factory, tmp_path):
    big = _big_bill(tmp_path / "big.csv", 50)
    before = _ledger(factory)
    batches = 0

    def progress(done, total):
        nonlocal batches
        batches += 1
        if batches == 3:
            raise KeyboardInterrupt

    try:
        ingest_source(
            factory, "focus", big, catalog=CAT, options=IngestOptions(batch_size=20), progress=progress
        )
    except IngestInterrupted as stop:
        run_id = stop.run_id
    else:
        raise AssertionError("not interrupted")
    assert _ledger(factory) == before
    with read_session(factory) as s:
        assert s.get(IngestRun, run_id).status == "interrupted"


def _cli(db: str, *args: str):
    return runner.invoke(app, [*args, "--database-url", db])


def test_kill_9_then_rerun_equals_a_clean_run(tmp_path):
    """kill -9 after a random number of committed batches (the seed is in the failure message; set
    FLOPWISE_TEST_SEED to replay one), then a rerun: the ledger equals a clean run's, row by row."""
    import random

    seed = int(os.environ.get("FLOPWISE_TEST_SEED", str(time.time_ns())))
    at_least = random.Random(seed).randrange(500, 12_001, 500)  # rows committed before the kill
    # 35,000 rows (7 per copy): after the latest kill point (12,000 rows) 23,000 are left, many batches more than
    # the 20 ms poll can miss; three ingests of it (clean, killed, rerun) instead of 210,000 rows each (~200 s)
    big = _big_bill(tmp_path / "big.csv", 5_000)
    clean_db = f"sqlite:///{tmp_path / 'clean.db'}"
    assert _cli(clean_db, "ingest", "focus", str(big), "--no-burn").exit_code == 0
    db = f"sqlite:///{tmp_path / 'killed.db'}"
    env = {**os.environ, "FLOPWISE_DATABASE_URL": db}
    cmd = [
        sys.executable,
        "-c",
        "from flopwise.cli.main import app; app()",
        "ingest",
        "focus",
        str(big),
        "--batch-size",
        "500",
        "--no-burn",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    eng = make_engine(db)
    f = make_session_factory(eng)
    deadline = time.monotonic() + 60
    written = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with read_session(f) as s:
                written = s.scalar(select(func.count()).select_from(UsageRecordRow)) or 0
        except Exception:  # noqa: BLE001 - the tables may not exist yet
            written = 0
        if written >= at_least:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert written >= at_least, f"the ingest did not get far enough to be killed mid-run (seed {seed})"
    with read_session(f) as s:
        (run,) = s.scalars(select(IngestRun)).all()
        assert run.status == "running"  # left behind by kill -9
        run_id = run.id
    rerun = _cli(db, "ingest", "focus", str(big), "--no-burn", "--json")
    assert rerun.exit_code == 0, rerun.output
    with read_session(f) as s:
        assert s.get(IngestRun, run_id).status == "interrupted"
    clean_engine = make_engine(clean_db)
    assert _ledger(f) == _ledger(make_session_factory(clean_engine)), f"seed {seed}"
    eng.dispose()
    clean_engine.dispose()


def test_sigterm_undoes_the_run_and_exits_130(tmp_path):
    # 210,000 rows: the columnar path ingests 21,000 before the signal can arrive on a quiet machine
    big = _big_bill(tmp_path / "big.csv", 30_000)
    db = f"sqlite:///{tmp_path / 'term.db'}"
    env = {**os.environ, "FLOPWISE_DATABASE_URL": db}
    cmd = [
        sys.executable,
        "-c",
        "from flopwise.cli.main import app; app()",
        "ingest",
        "focus",
        str(big),
        "--batch-size",
        "500",
        "--no-burn",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    eng = make_engine(db)
    f = make_session_factory(eng)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with read_session(f) as s:
                if len(s.scalars(select(UsageRecordRow.id).limit(500)).all()) >= 500:
                    break
        except Exception:  # noqa: BLE001 - the tables may not exist yet
            pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    with read_session(f) as s:
        assert s.scalars(select(UsageRecordRow.id)).all() == []
        assert [r.status for r in s.scalars(select(IngestRun))] == ["interrupted"]
    eng.dispose()


def test_corrupt_gz_is_one_clear_message(tmp_path):
    data = _big_bill(tmp_path / "b.csv", 2000).read_bytes()
    packed = gzip.compress(data)
    truncated = tmp_path / "t.csv.gz"
    truncated.write_bytes(packed[: len(packed) // 2])
    db = f"sqlite:///{tmp_path / 'g.db'}"
    result = _cli(db, "ingest", "focus", str(truncated))
    assert result.exit_code == 2  # the input cannot be read: bad input in the exit-code table
    assert "not a readable gzip file: it ends early (truncated?)" in result.stderr
    assert "Traceback" not in result.output and "Aborted" not in result.output


def test_runs_and_show_list_every_reject(tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    lines = BILL.read_text(encoding="utf-8").splitlines(keepends=True)
    bad = tmp_path / "bad.csv"
    bad.write_text(
        lines[0] + lines[1] + "1,2,3\n" + lines[2].replace("2025-03-10T02:00:00Z", "not a time", 1)
    )
    ingested = json.loads(_cli(db, "ingest", "focus", str(bad), "--json").stdout)
    assert ingested["rows_rejected"] == 2
    runs = json.loads(_cli(db, "ingest", "runs", "--json").stdout)
    assert [(r["id"], r["status"], r["rows_rejected"]) for r in runs] == [(ingested["run_id"], "partial", 2)]
    shown = _cli(db, "ingest", "show", str(ingested["run_id"]), "--csv")
    rows = list(csv.reader(io.StringIO(shown.stdout)))
    assert rows[0] == ["line", "reason", "raw"] and [r[0] for r in rows[1:]] == ["3", "4"]
    assert "fields" in rows[1][1]
    text = _cli(db, "ingest", "show", str(ingested["run_id"]))
    assert "line 3:" in text.stdout and "line 4:" in text.stdout
    assert _cli(db, "ingest", "show", "999").exit_code == 2
    assert _cli(db, "ingest", "runs", "--source", "focsu").exit_code == 2


def test_ingest_group_takes_options_first_and_still_shows_its_help(tmp_path):
    db = f"sqlite:///{tmp_path / 'o.db'}"
    first = runner.invoke(app, ["ingest", "--json", "--no-burn", "focus", str(BILL), "--database-url", db])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["records_inserted"] == 7
    explicit = runner.invoke(
        app, ["ingest", "from", "focus", str(BILL), "--database-url", db, "--json", "--no-burn"]
    )
    assert json.loads(explicit.stdout)["records_duplicate"] == 7
    helped = runner.invoke(app, ["ingest", "--help"])
    assert helped.exit_code == 0 and "runs" in helped.stdout and "show" in helped.stdout


def test_disk_full_leaves_the_ledger_as_it_was(tmp_path):
    """SQLite limited to 1.2 MB (a full disk): the run fails on a batch, what it wrote is undone, the
    run says why, and the ledger equals what it was before, row by row."""
    import sqlite3

    from sqlalchemy import event

    from flopwise.store import upgrade

    url = f"sqlite:///{tmp_path / 'full.db'}"
    upgrade(url)
    eng = make_engine(url)
    f = make_session_factory(eng)
    ingest_source(f, "focus", BILL, catalog=CAT)
    before = _ledger(f)

    @event.listens_for(eng, "connect")
    def tiny_disk(dbapi_connection, _record):
        page = dbapi_connection.execute("PRAGMA page_size").fetchone()[0]
        dbapi_connection.execute(f"PRAGMA max_page_count = {300 * 4096 // page}")  # 1.2 MB

    eng.dispose()  # new connections get the limit
    big = Path(__file__).resolve().parents[1] / "data" / "focus" / "focus-1.0-sample.csv"
    try:
        ingest_source(f, "focus", big, catalog=CAT, options=IngestOptions(batch_size=100))
    except sqlite3.OperationalError as err:  # from the bulk writer, straight from the driver
        assert "full" in str(err)
    else:
        raise AssertionError("the tiny disk did not fill up")
    assert _ledger(f) == before
    with read_session(f) as s:
        last = s.scalars(select(IngestRun).order_by(IngestRun.id.desc())).first()
        assert last.status == "failed" and "full" in last.message
    eng.dispose()


def test_a_lost_sigterm_raise_still_stops_the_run_at_the_next_batch():
    """CPython drops an exception raised while it runs a weakref or import-lock callback; the SIGTERM handler
    also records the request, and the progress report the ingest makes after every batch raises it then."""
    from flopwise.cli.ingest_cmd import _sigterm_as_interrupt

    seen: list[tuple[int, int | None]] = []
    with _sigterm_as_interrupt() as stop:
        report = stop.checked(lambda done, total: seen.append((done, total)))
        report(10, 100)
        stop.requested = True  # as the handler leaves it when its own raise was swallowed
        with pytest.raises(KeyboardInterrupt):
            report(20, 100)
    assert seen == [(10, 100)]


def test_background_writer_writes_in_order_and_hands_errors_to_the_caller():
    from flopwise.meter.ledger_write import BackgroundWriter

    written: list[int] = []
    with BackgroundWriter(written.append) as writer:
        for i in range(50):
            writer.submit(i)
    assert written == list(range(50))

    def fail_at_3(i: int) -> None:
        if i == 3:
            raise OSError("disk full")
        written.append(i)

    written.clear()
    writer = BackgroundWriter(fail_at_3)
    with pytest.raises(OSError, match="disk full"):
        for i in range(50):
            writer.submit(i)
        writer.close()
    writer.abort()  # what ingest_source's error path does; returns at once, the thread has ended
    assert written == [0, 1, 2]  # nothing after the failed batch

    written.clear()
    release = __import__("threading").Event()

    def slow(i: int) -> None:
        release.wait(5)
        written.append(i)

    writer = BackgroundWriter(slow)
    writer.submit(0)
    timer = __import__("threading").Timer(0.2, release.set)
    timer.start()
    writer.submit(1)  # handed over once 0 is written
    assert written == [0]
    writer.abort()  # 1 is skipped if not started yet, else written whole: never half-written
    assert written in ([0], [0, 1])
    timer.join()


@pytest.mark.parametrize(
    ("source", "name", "options"),
    [
        ("focus", None, IngestOptions(batch_size=20)),
        ("slurm", "hb-jobinfo-sacct.txt", IngestOptions(assume_tz="Europe/Amsterdam", cluster="hb", fields="hb-jobinfo", batch_size=17)),
    ],
)  # fmt: skip
def test_overlapped_writes_give_the_ledger_of_one_thread(tmp_path, tmp_path_factory, source, name, options):
    """PostgreSQL, where batches are written by a background thread: the same ledger and counts as one thread,
    and an interrupt in the reading thread undoes everything, the batch being written included."""
    from dataclasses import replace

    from flopwise.store import upgrade
    from pgutil import throwaway_database_url

    path = (
        _big_bill(tmp_path / "b.csv", 40)
        if name is None
        else Path(__file__).parents[1] / "data" / "slurm" / name
    )
    ledgers, counts = [], []
    for overlap in (True, False):
        with throwaway_database_url("postgresql", tmp_path_factory, "overlap") as url:
            eng = make_engine(url)
            upgrade(eng)
            f = make_session_factory(eng)
            r = ingest_source(f, source, path, catalog=CAT, options=replace(options, overlap=overlap))
            again = ingest_source(f, source, path, catalog=CAT, options=replace(options, overlap=overlap))
            assert r.reconciles and again.records_inserted == 0
            ledgers.append(_ledger(f))
            counts.append((r.records_inserted, r.records_duplicate, r.rows_rejected, again.records_duplicate))
            if overlap:
                calls = 0

                def progress(done, total):
                    nonlocal calls
                    calls += 1
                    if calls == 3:
                        raise KeyboardInterrupt

                with pytest.raises(IngestInterrupted):
                    ingest_source(f, "focus", _big_bill(tmp_path / "c.csv", 60, restate="9.5"), catalog=CAT,
                                  options=IngestOptions(batch_size=20, overlap=True), progress=progress)  # fmt: skip
                assert _ledger(f) == ledgers[0]
            eng.dispose()
    assert ledgers[0] == ledgers[1] and len(ledgers[0]) > 80
    assert counts[0] == counts[1]
