"""The columnar FOCUS path (``meter.ingest_columnar`` + ``ledger_write.write_columns``) gives the ledger the row
path gives, row by row, with the same counts and the same rejects (line and reason): on the real FOCUS sample, on
a file made of every kind of bad or unusual row the row path knows, and for restatements; on both databases."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from sqlalchemy import select

from dbfixtures import empty_ledger, ledger_rows
from flopwise.catalog import load_catalog
from flopwise.meter.focus import KeyDeduper
from flopwise.meter.ingest import IngestOptions, ingest_source
from flopwise.meter.ingest_columnar import _SeenKeys, columnar_focus_plan
from flopwise.store import UsageRecordRow, read_session
from flopwise.store.ledger import UsageRecordHistory

pytest.importorskip("pyarrow")

DATA = Path(__file__).resolve().parents[1] / "data"
CAT = load_catalog()

HEADER = (
    "BilledCost,BillingCurrency,ChargePeriodStart,ChargePeriodEnd,ProviderName,RegionId,ResourceId,"
    "ServiceCategory,SkuId,EffectiveCost,ListCost,ConsumedQuantity,ConsumedUnit,ResourceType,Tags,"
    "SubAccountId,BillingPeriodStart"
)
#: rows that each exercise a rule of record_from_focus_row (comment: what the row path does with it)
ROWS = [
    "1.5,USD,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,AWS,us-east-1,i-1,Compute,p5,1.5,2,1,Hours,p5.48xlarge,"
    '"{""team"": ""a""}",acct-1,2025-01-01T00:00:00Z',  # a GPU row: devices, hours, energy, CO2e
    "1.5,USD,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,AWS,us-east-1,i-1,Compute,p5,1.5,2,1,Hours,p5.48xlarge,"
    '"{""team"": ""a""}",acct-1,2025-01-01T00:00:00Z',  # the same row again: a second charge (#2)
    "2.25,usd,2025-01-01 02:00:00,2025-01-01 03:00:00,AWS,us-east-1,i-2,Compute,m5,,,3,Hours,m5.large,,,",
    "3,EUR,2025-01-01T00:00:00+00:00,2025-01-01T01:00:00+00:00,Microsoft,westeurope,vm-3,Compute,D4,3,3,1,"
    "1 Hour,Standard_ND96isr_H100_v5,,sub-9,",  # another currency: no USD cost; +00:00 times
    "4,USD,2025-02-30T00:00:00Z,2025-03-01T00:00:00Z,AWS,us-east-1,i-4,Compute,x,,,,,,,,",  # no such date
    ",USD,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,AWS,us-east-1,i-5,Compute,x,,,,,,,,",  # no BilledCost
    "5,USD,2025-01-01T02:00:00Z,2025-01-01T01:00:00Z,AWS,us-east-1,i-6,Compute,x,,,,,,,,",  # ends before start
    "6,USD,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,AWS,us-east-1,i-7",  # too few fields
    "",  # a blank line: not a row
    "7,USD,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,AWS,us-east-1,i-8,Compute,x,,,abc,Hours,,,,",  # bad quantity
    "8,USD,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,AWS,us-east-1,i-9,Compute,x,,,-1,Hours,p5.48xlarge,,,",
    "-8,USD,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,AWS,us-east-1,i-9,Compute,x,,,-1,Hours,p5.48xlarge,,,",
    '9,USD,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,AWS,us-east-1,"i-10\nsecond line",Compute,x,,,,,,,,',
    "10.1234567,USD,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,AWS,us-east-1,i-11,Compute,x,,,,,,,,",  # 7 places
    "1e3,USD,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,AWS,us-east-1,i-12,Compute,x,,,,,,,,",
    "11, USD ,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,NULL,None,i-13,Compute,x,,,,,,,,",  # blanks, null words
    '12,USD,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,AWS,us-east-1,"i-""14""",Compute,x,,,,,,,,',  # a quote
    '13,USD,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,AWS,us-east-1,i-15,Compute,x,,,,,,"not json",,',
    "14,USD,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,AWS,us-east-1,i-16,Compute,x,,,,,,"
    '"""flopwise-request-id"": ""req-7"",""job-id"": ""j1""",,',  # Azure's brace-less tags, ids from tags
    "15,USD,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,AWS,us-east-1,i-17,Compute,x,,,,,,,,2025-13-01T00:00:00Z",
    "16,USD,2025-01-01T00:00:00.5Z,2025-01-01T01:00:00Z,AWS,us-east-1,i-18,Compute,é,,,,,,,,",  # fractional s
    "2000000000000,USD,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,AWS,us-east-1,i-19,Compute,x,,,,,,,,",  # > max
    "17,USD,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,AWS,us-east-1,i-20,Compute,x,,,,,,,,,extra",  # too many
]


def _both(factory, path: Path, **kw):
    """Ingest *path* columnar, snapshot, undo by deleting, ingest row by row, snapshot: (results, ledgers)."""


    out = []
    for columnar in (True, False):
        empty_ledger(factory)
        result = ingest_source(
            factory, "focus", path, catalog=CAT, options=IngestOptions(columnar=columnar, **kw)
        )
        out.append((result, ledger_rows(factory)))
    return out


def _same(a, b):
    (ra, la), (rb, lb) = a, b
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        assert x == y
    for name in ("status", "rows_read", "records_inserted", "records_duplicate", "rows_rejected", "cost_usd"):
        assert getattr(ra, name) == getattr(rb, name), name
    assert [(r.line, r.reason) for r in ra.rejects] == [(r.line, r.reason) for r in rb.rejects]
    assert ra.reconciles and rb.reconciles


def test_the_columnar_path_takes_plain_focus_csv_and_leaves_the_rest(tmp_path):
    plan, why = columnar_focus_plan(str(DATA / "focus/focus-1.0-sample.csv"), None)
    assert plan is not None and why == ""
    export = tmp_path / "export.csv"
    export.write_text(
        "ChargePeriodStart,ChargePeriodEnd,BilledCost,BillingCurrency,ProviderName,x_SourceKey\n"
    )
    assert columnar_focus_plan(str(export), None) == (None, "it carries flopwise's own x_ columns")
    assert columnar_focus_plan("https://example.org/bill.csv", None) == (None, "a URL")


def test_real_focus_sample_gives_the_row_paths_ledger(factory):
    columnar, rows = _both(factory, DATA / "focus/focus-1.0-sample.csv")
    _same(columnar, rows)
    assert columnar[0].records_inserted == 1000


@pytest.mark.parametrize("gz", [False, True])
def test_every_kind_of_row_gives_the_row_paths_ledger_and_rejects(factory, tmp_path, gz):
    text = HEADER + "\n" + "\n".join(ROWS) + "\n"
    path = tmp_path / ("edge.csv.gz" if gz else "edge.csv")
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    columnar, rows = _both(factory, path, batch_size=4)  # many batches: keys made unique across them
    _same(columnar, rows)
    result = columnar[0]
    assert result.rows_rejected >= 8 and result.records_inserted >= 12
    keys = [r["source_key"] for r in columnar[1]]
    assert any(k.endswith("#2") for k in keys)  # the repeated row is a second charge


def test_restatement_through_the_columnar_path_keeps_history(factory, tmp_path):
    first = tmp_path / "jan.csv"
    first.write_text(HEADER + "\n" + ROWS[0] + "\n" + ROWS[2] + "\n", encoding="utf-8")
    restated = tmp_path / "jan-restated.csv"
    restated.write_text(HEADER + "\n" + ROWS[0].replace("1.5,USD", "1.75,USD", 1) + "\n" + ROWS[2] + "\n")
    out = []
    for columnar in (True, False):


        empty_ledger(factory)
        opts = IngestOptions(columnar=columnar)
        ingest_source(factory, "focus", first, catalog=CAT, options=opts)
        again = ingest_source(factory, "focus", restated, catalog=CAT, options=opts)
        with read_session(factory) as s:
            history = s.execute(select(UsageRecordHistory.source_key, UsageRecordHistory.billed_cost)).all()
        out.append(
            (
                again.records_replaced,
                again.records_duplicate,
                again.restated_cost_usd,
                history,
                ledger_rows(factory),
            )
        )
    assert out[0] == out[1]
    assert out[0][0] == 1 and out[0][1] == 1 and len(out[0][3]) == 1


def test_seen_keys_number_repeats_as_the_key_deduper_does():
    dedupe = KeyDeduper()
    seen = _SeenKeys()
    keys = [f"k{i % 7}" for i in range(50)] + ["x", "x", "y"]
    expected = [dedupe(k) for k in keys]
    got = []
    for i in range(0, len(keys), 6):
        got += seen.unique(keys[i : i + 6])
    assert got == expected


def test_without_pyarrow_the_row_path_reads_it_and_says_so_once(factory, monkeypatch):
    import warnings

    from flopwise.meter import ingest_columnar

    monkeypatch.setattr(ingest_columnar, "pyarrow_available", lambda: False)
    monkeypatch.setattr(ingest_columnar, "_warned", [False])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = columnar_focus_plan(str(DATA / "focus/focus-1.0-sample.csv"), None)
        second = columnar_focus_plan(str(DATA / "focus/focus-1.0-sample.csv"), None)
    assert first == second == (None, "pyarrow is not installed")
    assert len([w for w in caught if "pyarrow is not installed" in str(w.message)]) == 1
    result = ingest_source(factory, "focus", DATA / "focus/focus-1.0-sample.csv", catalog=CAT)
    assert result.rows_read == 1000 and result.reconciles


def test_attribution_sees_what_the_row_path_shows_it(factory, tmp_path):
    """An attributor reading tags, account and resource gives each row the scope it gives on the row path."""

    from flopwise.store import Organization, write_session

    with write_session(factory) as s:
        org = s.scalar(select(Organization).where(Organization.name == "columnar-attribution"))
        if org is None:
            org = Organization(name="columnar-attribution")
            s.add(org)
            s.flush()
        org_id = org.id

    def owner(record):
        if record.tags.get("team") == "a" or record.x_account == "sub-9":
            return (org_id, None, None)
        return None

    path = tmp_path / "attr.csv"
    path.write_text(HEADER + "\n" + "\n".join(ROWS[:4]) + "\n", encoding="utf-8")
    ledgers = []
    for columnar in (True, False):
        empty_ledger(factory)
        ingest_source(
            factory, "focus", path, catalog=CAT, options=IngestOptions(columnar=columnar), attribute=owner
        )
        ledgers.append(ledger_rows(factory))
    assert ledgers[0] == ledgers[1]
    assert sorted(r["org_id"] is not None for r in ledgers[0]) == [False, True, True, True]


def test_a_key_a_concurrent_writer_commits_first_goes_through_the_staging_path(factory, engine, tmp_path):
    """PostgreSQL writes a batch none of whose keys is in the ledger by one COPY straight into the ledger. A writer
    that commits one of its keys after the lookup (here: holding it uncommitted until the COPY waits on it) makes
    that COPY fail on the unique key: it is rolled back (nothing of it stays) and the batch goes through the
    staging path, where that key is one already in the ledger (here with other values: a restatement of it)."""
    import threading
    import time

    from sqlalchemy import text

    from flopwise.meter.costing import Coster, CostingOptions
    from flopwise.meter.focus import ParseReport
    from flopwise.meter.ingest_columnar import focus_column_batches
    from flopwise.meter.ledger_write import write_columns
    from flopwise.store import write_session

    if engine.dialect.name != "postgresql":
        pytest.skip("the direct COPY is PostgreSQL's")
    empty_ledger(factory)
    path = tmp_path / "three.csv"
    path.write_text(HEADER + "\n" + ROWS[0] + "\n" + ROWS[2] + "\n" + ROWS[3] + "\n", encoding="utf-8")
    plan, _ = columnar_focus_plan(str(path), None)
    coster = Coster(CAT, CostingOptions())
    (table,) = focus_column_batches(
        str(path), plan, catalog=CAT, coster=coster, assume_tz="UTC", report=ParseReport(), rejected=[]
    )
    taken = table.column("source_key")[1].as_py()
    other = engine.connect()
    other.execute(
        text(
            "INSERT INTO usage_records (source, source_key, charge_period_start, charge_period_end, cost_basis, "
            "tags, energy_basis, x_extra, ingested_at) VALUES ('focus', :k, now(), now(), 'none', '{}', 'none', "
            "'{}', now())"
        ),
        {"k": taken},
    )
    released = threading.Timer(1.0, other.commit)
    released.start()
    try:
        t0 = time.perf_counter()
        with write_session(factory) as s:
            counts = write_columns(s, table, run_id=None, restate=True)
        assert time.perf_counter() - t0 >= 0.9  # it did wait on the other writer's key
    finally:
        released.join()
        other.close()
    assert (counts.inserted, counts.replaced, counts.unchanged) == (2, 1, 0)
    with read_session(factory) as s:
        keys = s.execute(select(UsageRecordRow.source_key)).scalars().all()
        history = s.execute(select(UsageRecordHistory.source_key)).scalars().all()
    assert sorted(keys) == sorted(table.column("source_key").to_pylist())
    assert history == [taken]


@pytest.mark.parametrize("columns", [0, 1, 3])
def test_wrapped_join_gives_the_pieces_of_the_values_present(columns):
    """The key text and x_extra builder: per row, the non-null values wrapped and joined, as plain Python would."""
    import random

    import pyarrow as pa

    from flopwise.meter.ingest_columnar import _wrapped_join

    rng = random.Random(7)
    m = 50
    values = [
        [rng.choice([None, "", "a", 'é"x', "v" * rng.randint(1, 9)]) for _ in range(m)]
        for _ in range(columns)
    ]
    values[0:1] = [[None] * m] if columns == 1 else values[0:1]  # a column with no value at all
    prefixes = [f'[{i},"' for i in range(columns)]
    got = _wrapped_join(
        [pa.array(v, pa.string()) for v in values], prefixes, '"]', ", ", "{", "}", m
    ).to_pylist()
    expected = [
        "{"
        + ", ".join(p + v[r] + '"]' for p, v in zip(prefixes, values, strict=True) if v[r] is not None)
        + "}"
        for r in range(m)
    ]
    assert got == expected


def test_row_path_copies_fresh_rows_straight_in_and_yields_to_a_concurrent_writer(factory, engine):
    """The row path's writer on PostgreSQL COPYs rows whose keys the lookup did not find straight into the ledger;
    a key a concurrent writer commits meanwhile fails that COPY, which is rolled back, and the staging path's
    ON CONFLICT DO NOTHING keeps the other writer's row and counts this one unchanged."""
    import threading
    import time
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    from sqlalchemy import text

    from flopwise.meter.costing import Coster, CostingOptions
    from flopwise.meter.ledger_write import ingest_records
    from flopwise.meter.record import UsageRecord

    if engine.dialect.name != "postgresql":
        pytest.skip("the direct COPY is PostgreSQL's")
    empty_ledger(factory)
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    records = [
        UsageRecord(
            source="focus",
            source_key=f"row-path-{i}",
            charge_period_start=t0 + timedelta(hours=i),
            charge_period_end=t0 + timedelta(hours=i + 1),
            billed_cost=Decimal("1.5"),
        )
        for i in range(3)
    ]
    coster = Coster(CAT, CostingOptions())
    with engine.connect() as other:
        other.execute(
            text(
                "INSERT INTO usage_records (source, source_key, charge_period_start, charge_period_end, "
                "cost_basis, tags, energy_basis, x_extra, ingested_at) VALUES ('focus', 'row-path-1', now(), "
                "now(), 'none', '{}', 'none', '{}', now())"
            )
        )
        released = threading.Timer(1.0, other.commit)
        released.start()
        try:
            start = time.perf_counter()
            inserted, unchanged, _ = ingest_records(factory, records, coster=coster, restate=True)
            assert time.perf_counter() - start >= 0.9  # it did wait on the other writer's key
        finally:
            released.join()
    assert (inserted, unchanged) == (2, 1)
    with read_session(factory) as s:
        rows = dict(s.execute(select(UsageRecordRow.source_key, UsageRecordRow.cost_basis)).all())
    assert rows == {"row-path-0": "billed", "row-path-1": "none", "row-path-2": "billed"}


def test_needs_row_path_matches_the_regex():
    """The byte scan that picks values for the row path gives what the regex gives, on slices and odd values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from flopwise.meter.ingest_columnar import _NEEDS_ROW_PATH_RE, _needs_row_path

    values = [
        "", "a", " a", "a ", " ", "\t", "a\tb", 'say "hi"', "back\\slash", "line\nbreak", "x\x00y", "\x1f", "\x7f",
        "naïve", "日本 ", " 日本", "é\u00a0", "\u2003x", "ok", "a\rb", "\x0b", "plain text with spaces inside", None,
    ]  # fmt: skip
    array = pa.array(values * 3, pa.string())
    for piece in (array, array.slice(5), array.slice(7, 20), array.slice(len(array)), pa.array([], pa.string())):
        want = pc.fill_null(pc.match_substring_regex(piece, _NEEDS_ROW_PATH_RE), False).to_numpy(
            zero_copy_only=False
        )
        assert _needs_row_path(piece).tolist() == want.tolist()


def test_a_batch_of_one_provider_with_a_quote_gives_the_row_paths_ledger(factory, tmp_path):
    # every row the same ProviderName (with a quote) and RegionId: constant columns, written as SQLite literals
    rows = [
        f"{i}.5,USD,2025-01-01T0{i}:00:00Z,2025-01-01T0{i}:30:00Z,O'Cloud,eu-'north',i-{i},Compute,x,,,,,,,,"
        for i in range(5)
    ]
    path = tmp_path / "quote.csv"
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    columnar, by_row = _both(factory, path)
    _same(columnar, by_row)
    assert {r["provider_name"] for r in columnar[1]} == {"O'Cloud"}


def test_sqlite_insert_stores_what_binding_every_value_stores():
    """The literal columns of ``_sqlite_insert`` give the same SQLite values and types as binding each row."""
    import sqlite3
    from datetime import UTC, datetime
    from decimal import Decimal

    import pyarrow as pa

    from flopwise.meter import ledger_write as lw

    n = 4
    when = datetime(2025, 1, 1, tzinfo=UTC)
    special = {  # constant values a literal must spell right, or must leave bound
        "source": ["it's"] * n,
        "cost_basis": ["a\x00b"] * n,  # NUL: bound
        "org_id": [-(2**63)] * n,  # no literal for int64's minimum: bound
        "team_id": [-5] * n,
        "project_id": [7, None, 7, 7],  # a NULL among equal values: bound
        "x_device_count": [1.1] * n,  # floats: always bound
        "ingested_at": [when] * n,
        "billed_cost": [Decimal("1.000001")] * n,
    }
    table = lw.UsageRecordRow.__table__
    arrays = {}
    for name in lw._COLUMNS:
        if name in special:
            values = special[name]
        elif name == "source_key":
            values = [f"k{i}" for i in range(n)]
        else:
            values = [None] * n
        kind = table.c[name].type
        if name in lw._TIME_COLUMNS:
            kind = pa.timestamp("us", tz="UTC")
        elif name in lw._MONEY_COLUMNS:
            kind = pa.decimal128(20, 6)
        else:
            kind = {float: pa.float64(), int: pa.int64()}.get(kind.python_type, pa.string())
        arrays[name] = pa.array(values, kind)
    batch = pa.table(arrays)
    con = sqlite3.connect(":memory:")
    cols = ", ".join(lw._COLUMNS)
    for t in ("a", "b"):
        con.execute(
            f"CREATE TABLE {t} ({', '.join(f'{c} {table.c[c].type.compile()}' for c in lw._COLUMNS)})"
        )
    sql, params = lw._sqlite_insert(batch)
    assert "'it''s'" in sql and "-5" in sql and "x00" not in sql
    con.executemany(
        sql.replace("usage_records", "a").replace(" ON CONFLICT (source_key) DO NOTHING", ""), params
    )
    con.executemany(
        f"INSERT INTO b ({cols}) VALUES ({', '.join('?' for _ in lw._COLUMNS)})", lw._sqlite_params(batch)
    )
    look = ", ".join(f"{c}, typeof({c})" for c in lw._COLUMNS)
    a = con.execute(f"SELECT {look} FROM a ORDER BY source_key").fetchall()
    b = con.execute(f"SELECT {look} FROM b ORDER BY source_key").fetchall()
    assert a == b and len(a) == n


def test_a_run_that_fails_mid_file_keeps_the_rejects_read_before_the_failure(factory, tmp_path):
    """A byte that is not UTF-8 three quarters into a 560 KB file (past the columnar path's first 256 KiB block)
    fails the run on both paths; the rejects of the records read before the failure are stored with the failed
    run (``ingest show RUN`` lists them) on the columnar path as on the row path: each a leading part of the
    rejects of the whole file without that byte (each path reads ahead of the failing line by its own block)."""

    from flopwise.store.ledger import IngestReject

    body = "\n".join(ROWS) + "\n"
    data = (HEADER + "\n" + body * 200).encode()
    cut = data.index(b"\n", len(data) * 3 // 4) + 1
    clean, path = tmp_path / "clean.csv", tmp_path / "bad-byte.csv"
    clean.write_bytes(data)
    path.write_bytes(data[:cut] + b"\xff" + data[cut:])
    out = {}
    for columnar, file in ((True, path), (False, path), (False, clean)):
        empty_ledger(factory)
        options = IngestOptions(columnar=columnar, batch_size=100)  # batches of 100 records
        result = ingest_source(factory, "focus", file, catalog=CAT, options=options)
        with read_session(factory) as s:
            rejects = [
                (r.line, r.reason)
                for r in s.execute(
                    select(IngestReject).where(IngestReject.ingest_run_id == result.run_id).order_by(IngestReject.id)
                ).scalars()
            ]
        out[columnar, file] = (result, rejects)
    whole = out[False, clean][1]
    assert out[False, clean][0].status == "partial" and len(whole) > 1000
    for columnar in (True, False):
        result, rejects = out[columnar, path]
        assert result.status == "failed" and "not UTF-8" in result.message, result.message
        assert len(rejects) > len(whole) // 2, columnar  # most of the first three quarters' rejects
        assert rejects == whole[: len(rejects)], columnar


def test_binary_copy_stores_what_the_text_of_each_value_stores(engine):
    """``_pg_copy_binary`` (PostgreSQL's binary COPY of a batch) stores the values that binding each one stores:
    money at the ends of NUMERIC(20, 6) and beyond 64-bit micro-units, negative and zero; times before and after
    PostgreSQL's epoch; floats; text that CSV would quote; JSON; NULLs of every kind, some and all of a column."""
    from datetime import UTC, datetime
    from decimal import Decimal

    import pyarrow as pa
    from sqlalchemy import text

    from flopwise.meter import ledger_write as lw

    if engine.dialect.name != "postgresql":
        pytest.skip("binary COPY is PostgreSQL's")
    money = ["0", "-0.000001", "0.5", "123456789012.345678", "99999999999999.999999", "-99999999999999.999999",
             "9223372036854.775808", "-9223372036854.775808", "-9223372036854.775809", None]  # fmt: skip
    n = len(money)
    times = [datetime(1970, 1, 1, tzinfo=UTC), datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
             datetime(2000, 1, 1, tzinfo=UTC), datetime(2025, 6, 30, 12, 0, 0, 123456, tzinfo=UTC)]  # fmt: skip
    texts = ['a "b", c', "l\nb", "b\\s", "", "üé €", "t\th", None]  # short: billing_currency is varchar(8)
    floats = [1.1, -0.0, 1e300, 5e-324, 0.1 + 0.2, None]
    ints = [1, None, 2**31 - 1, -(2**31)]
    table = lw.UsageRecordRow.__table__
    values = {}
    for name in lw._COLUMNS:
        kind = lw._PG_KINDS[name]
        if name == "source_key":
            column, arrow = [f"k{i}" for i in range(n)], pa.string()
        elif kind == "numeric":
            column, arrow = [None if m is None else Decimal(m) for m in money], pa.decimal128(20, 6)
        elif kind == "timestamptz":
            column, arrow = [times[i % len(times)] for i in range(n)], pa.timestamp("us", tz="UTC")
        elif kind == "float8":
            column, arrow = [floats[i % len(floats)] for i in range(n)], pa.float64()
        elif kind == "int4":
            column, arrow = [ints[i % len(ints)] for i in range(n)], pa.int64()
        elif name in lw._JSON_COLUMNS:
            column, arrow = ['{"a": "x\\"y", "b": [1, 2.5]}', "{}"] * (n // 2), pa.string()
        else:
            column, arrow = [texts[i % len(texts)] for i in range(n)], pa.string()
        if not table.c[name].nullable:
            column = [texts[0] if v is None else v for v in column]
        elif name in ("x_user", "idle_device_hours"):  # NULL on every row: laid out with the fixed columns
            column = [None] * n
        values[name] = pa.array(column, arrow)
    batch = pa.table(values).slice(1)  # an offset into every column's buffers, as a filtered batch has
    names = ", ".join(lw._COLUMNS)
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cursor:
            for t in ("via_binary", "via_bind"):
                cursor.execute(f"CREATE TEMPORARY TABLE {t} AS SELECT {names} FROM usage_records WITH NO DATA")
            order, data = lw._pg_copy_binary(batch)
            assert sorted(order) == sorted(lw._COLUMNS)
            with cursor.copy(f"COPY via_binary ({', '.join(order)}) FROM STDIN (FORMAT binary)") as copy:
                for part in data:
                    copy.write(part)
            marks = ", ".join(["%s"] * len(lw._COLUMNS))
            cursor.executemany(
                f"INSERT INTO via_bind ({names}) VALUES ({marks})",
                [[row[c] for c in lw._COLUMNS] for row in batch.to_pylist()],
            )
        look = ", ".join(f"{c}::text" for c in lw._COLUMNS)
        a = conn.execute(text(f"SELECT {look} FROM via_binary ORDER BY source_key")).all()
        b = conn.execute(text(f"SELECT {look} FROM via_bind ORDER BY source_key")).all()
        conn.rollback()
    assert a == b and len(a) == n - 1
    stored = sorted(r[lw._COLUMNS.index("billed_cost")] or "NULL" for r in a)
    assert stored == sorted(f"{Decimal(m):.6f}" if m else "NULL" for m in money[1:])


def test_a_tag_naming_a_compute_request_links_it_as_the_row_path_does(factory, seed, tmp_path):
    """A batch with a row whose request-id tag is an existing compute request's id: the link needs the database,
    so on PostgreSQL the writer thread makes the batch's COPY data after it (``prepare_columns`` leaves it out);
    the ledger is the row path's, the linked row carries the request, the others none."""
    from flopwise.store import write_session
    from flopwise.store.models import ComputeRequest

    with write_session(factory) as s:
        req = ComputeRequest(
            org_id=seed.org_id, requester_id=seed.user_id, project_id=seed.project_id, workload_kind="train",
            inputs={},
        )  # fmt: skip
        s.add(req)
        s.flush()
        request_id = req.id
    linked = (
        f"18,USD,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,AWS,us-east-1,i-21,Compute,x,,,,,,"
        f'"{{""flopwise-request-id"": ""{request_id}""}}",,'
    )
    path = tmp_path / "linked.csv"
    path.write_text(HEADER + "\n" + ROWS[0] + "\n" + linked + "\n" + ROWS[2] + "\n", encoding="utf-8")
    columnar, rows = _both(factory, path, assume_tz="UTC")
    _same(columnar, rows)
    links = sorted((r["resource_id"], r["request_id"]) for r in columnar[1])
    assert links == [("i-1", None), ("i-2", None), ("i-21", request_id)]


def test_a_ledger_column_of_a_type_without_a_binary_copy_form_fails_naming_it(monkeypatch):
    """``ledger_write._pg_kind`` maps each ledger column to its binary COPY form (checked for every column at
    import); a column of another type (a schema change the encoder does not know) is refused by name instead of
    being sent as text."""
    from sqlalchemy import Column, Integer, LargeBinary, MetaData, SmallInteger, Table

    from flopwise.meter import ledger_write as lw

    assert set(lw._PG_KINDS.values()) <= {"numeric", "timestamptz", "float8", "int4", "text"}
    table = Table("usage_records", MetaData(), Column("blob", LargeBinary), Column("small", SmallInteger),
                  Column("plain", Integer))  # fmt: skip
    monkeypatch.setattr(lw, "_TABLE", table)
    assert lw._pg_kind("plain") == "int4"
    for name in ("blob", "small"):  # SmallInteger is an Integer subclass of another width: refused too
        with pytest.raises(TypeError, match=f"usage_records.{name}: .* has no binary COPY form"):
            lw._pg_kind(name)
