"""The columnar sacct path (``meter.ingest_sacct_columnar`` + ``ledger_write.write_columns``) gives the ledger the
row path gives, row by row, with the same counts and the same rejects (line, reason, order): on the real sacct
samples and on fuzzed variants of them (odd durations, job steps, GRES/TRES forms, time zones, missing values,
truncated lines, repeated jobs, ``--parsable``'s trailing delimiter); on both databases."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from sqlalchemy import select

from dbfixtures import empty_ledger, ledger_rows
from flopwise.catalog import load_catalog
from flopwise.meter.ingest import IngestOptions, ingest_source
from flopwise.meter.ingest_sacct_columnar import sacct_plan
from flopwise.meter.sacct import SACCT_FORMATS
from flopwise.store import read_session, write_session
from flopwise.store.ledger import IngestReject, UsageRecordHistory

pytest.importorskip("pyarrow")

SLURM = Path(__file__).resolve().parents[1] / "data" / "slurm"
CAT = load_catalog()


def _all_rejects(factory, run_id):
    with read_session(factory) as s:
        return [
            (r.line, r.reason, r.raw)
            for r in s.execute(
                select(IngestReject).where(IngestReject.ingest_run_id == run_id).order_by(IngestReject.id)
            ).scalars()
        ]


def _both(factory, path: Path, **kw):
    out = []
    texts = []
    for columnar in (True, False):
        empty_ledger(factory)
        result = ingest_source(
            factory, "slurm", path, catalog=CAT, options=IngestOptions(columnar=columnar, **kw)
        )
        out.append((result, ledger_rows(factory), _all_rejects(factory, result.run_id)))
        texts.append(_json_texts(factory))
    assert texts[0] == texts[1]  # the stored JSON text too (PostgreSQL's restatement check compares text)
    return out


def _json_texts(factory):
    from sqlalchemy import text

    with read_session(factory) as s:
        return s.execute(
            text(
                "SELECT source_key, CAST(x_extra AS TEXT), CAST(tags AS TEXT) FROM usage_records ORDER BY source_key"
            )
        ).all()


def _same(a, b):
    (ra, la, ja), (rb, lb, jb) = a, b
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        assert x == y
    for name in (
        "status", "rows_read", "records_inserted", "records_duplicate", "rows_rejected", "rows_rolled_up",
        "records_expanded", "cost_usd", "message",
    ):  # fmt: skip
        assert getattr(ra, name) == getattr(rb, name), name
    # run totals: float sums over the same values, added in another order (the ledger rows are equal above)
    assert ra.device_hours == pytest.approx(rb.device_hours, rel=1e-12)
    assert ra.energy_kwh == pytest.approx(rb.energy_kwh, rel=1e-12)
    assert ja == jb
    assert ra.reconciles and rb.reconciles


def _pipe(path: Path, tmp_path: Path, header: bool = True, trailing: bool = False) -> Path:
    """The hb-jobinfo dump (``☃``, trailing delimiter) as ``--parsable2`` with ``|``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out = tmp_path / "sacct.txt"
    body = []
    for line in lines:
        fields = line.split("☃")[:-1]
        body.append("|".join(fields) + ("|" if trailing else ""))
    head = ["|".join(SACCT_FORMATS["hb-jobinfo"]) + ("|" if trailing else "")] if header else []
    out.write_text("\n".join(head + body) + "\n", encoding="utf-8")
    return out


def test_the_plan_takes_pipe_files_and_leaves_the_snowman(tmp_path):
    planned, why = sacct_plan(str(_pipe(SLURM / "hb-jobinfo-sacct.txt", tmp_path)), CAT, IngestOptions())
    assert planned is not None and why == ""
    planned, why = sacct_plan(str(SLURM / "hb-jobinfo-sacct.txt"), CAT, IngestOptions(fields="hb-jobinfo"))
    assert planned is None and "ASCII" in why


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("trailing", [False, True])
@pytest.mark.parametrize("tz", ["UTC", "Europe/Amsterdam", None])
def test_hb_jobinfo_gives_the_row_paths_ledger(factory, tmp_path, header, trailing, tz):
    path = _pipe(SLURM / "hb-jobinfo-sacct.txt", tmp_path, header=header, trailing=trailing)
    kw = {"assume_tz": tz, "cluster": "hb"}
    if not header:
        kw["fields"] = "hb-jobinfo"
    columnar, rows = _both(factory, path, **kw)
    _same(columnar, rows)
    if tz is not None:
        assert columnar[0].records_inserted > 50


@pytest.mark.parametrize(
    "name,fields",
    [
        ("xdmod-accounting-logs.log", "xdmod"),
        ("xdmod-accounting-logs-with-job-arrays.log", "xdmod"),
        ("xdmod-accounting-logs-with-gpu-gres.log", "xdmod-gres"),
        ("xdmod-non-ended-job-state.log", "xdmod"),
        ("xdmod-unknown-job-state.log", "xdmod"),
        ("xdmod-utf8-multibyte-chars.log", "xdmod"),
    ],
)
def test_xdmod_samples_give_the_row_paths_ledger(factory, name, fields):
    columnar, rows = _both(factory, SLURM / name, fields=fields, assume_tz="America/New_York")
    _same(columnar, rows)


#: values each field may be replaced by (what the row path accepts, rejects or reads otherwise)
_ODD = {
    "jobid": ["", " ", "99_[1-3]", "99_[2,5-6%2]", "98_7", " 97", "96.0", "96.batch", "abc", "95_x"],
    "state": ["COMPLETED+", "cancelled by 0", "RUNNING", "WEIRD", "TIMEOUT", " FAILED ", "CANCELLED by "],
    "start": ["Unknown", "None", "", "2023-02-30T01:00:00", "2023-03-26T02:30:00", "2023-10-29T02:30:00",
              "2023-09-01T05:51:10Z", "2023-09-01T05:51:10.5", "2023-09-01", "garbage", "2023-09-01 05:51:10"],
    "end": ["Unknown", "", "2023-10-29T02:59:59", "2023-10-29T03:00:00", "2023-03-26T03:00:00",
            "2031-01-01T00:00:00", "1999-01-01T00:00:00"],
    "submit": ["Unknown", "", "None", "2023-09-01T05:51:10+02:00", "bad", "2023-10-29T02:15:00"],
    "elapsed": ["1-02", "05:30", "12:34.567", "INVALID", "bad", "", "UNLIMITED", "7", "1-00:00:00.5", "99:99:99"],
    "timelimit": ["UNLIMITED", "Partition_Limit", "1-02:03", "x", ""],
    "totalcpu": ["00:01.5", "bad", "", "2-00:00:00"],
    "ncpus": ["", "x", "0", "007", "²", "12345678901234567890"],
    "nnodes": ["", "2", "a"],
    "alloctres": ["gres/gpu=2", "gres/gpu=1\x1f", "gres/gpu:a100=1,gres/gpu:v100=1", "gres/gpu=abc", "gres/gpu=1.5", "cpu",
                  "gres/gpu:h100=4", "gres/gpu=1e3", "gres/gpumem=40G,gres/gpu=1", "", "gres/gpu=100000",
                  "billing=8, gres/gpu=1", "gres/gpu=1,gres/gpu=2"],
    "tresusageintot": ["energy=5000,fs/disk=1G,gres/gpuutil=80", "energy=x", "fs/disk=1.5G", "gres/gpuutil=",
                       "gres/gpuutil=abc", "energy=12345678901234567", "fs/disk=bad", "cpu", "",
                       "energy=1,energy=2", "gres/gpumem=2M,gres/gpuutil=250", " energy=7"],
    "tresusageinmax": ["gres/gpumem=3G", "gres/gpumem=", "bad", ""],
    "tresusageouttot": ["fs/disk=77", "fs/disk=3K", "fs/disk=", "x"],
    "nodelist": ["None assigned", "", " n1 ", "n[1-3]"],
    "jobname": ['a "quoted" name', "back\\slash", "tab\there", "é☃", ""],
    "user": [" ", "ü", ""],
    "partition": [" ", "gpu ", "", "a\x1fb"],
    "comment": ["flopwise-request=42", "request_id: abc", ""],
    "reqmem": ["10G", ""],
}  # fmt: skip


def _fuzzed(seed: int, tmp_path: Path, trailing: bool) -> Path:
    rnd = random.Random(seed)
    fields = [f.lower() for f in SACCT_FORMATS["hb-jobinfo"]]
    src = (SLURM / "hb-jobinfo-sacct.txt").read_text(encoding="utf-8").splitlines()
    d = "|"
    header = d.join(SACCT_FORMATS["hb-jobinfo"]) + (d if trailing else "")
    out = [header]
    for copy in range(3):
        for line in src:
            parts = line.split("☃")[:-1]
            jid = parts[0]
            if jid[:1].isdigit():
                head, dot, rest = jid.partition(".")
                parts[0] = str(int(head.split("_")[0]) + copy * 10**7) + head[len(head.split("_")[0]) :]
                parts[0] += dot + rest
            roll = rnd.random()
            if roll < 0.25:
                for _ in range(rnd.randint(1, 3)):
                    name = rnd.choice(list(_ODD))
                    parts[fields.index(name)] = rnd.choice(_ODD[name])
            text = d.join(parts) + (d if trailing and rnd.random() < 0.95 else "")
            roll = rnd.random()
            if roll < 0.01:
                text = text[: rnd.randint(0, len(text))]  # truncated
            elif roll < 0.015:
                text = ""  # blank
            elif roll < 0.02:
                text = "   "
            elif roll < 0.025:
                text = d * (len(fields) - 1)
            elif roll < 0.03:
                text = header
            elif roll < 0.035:
                text = text + d + "extra"
            out.append(text)
            if rnd.random() < 0.01 and len(out) > 5:
                out.append(out[rnd.randint(1, len(out) - 1)])  # a line again, later
    path = tmp_path / f"fuzz{seed}.txt"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("seed", range(6))
def test_fuzzed_files_give_the_row_paths_ledger_and_rejects(factory, tmp_path, seed):
    tz = ["UTC", "Europe/Amsterdam", "America/New_York"][seed % 3]
    path = _fuzzed(seed, tmp_path, trailing=seed % 2 == 1)
    batch = 37 if seed >= 3 else 5000  # small batches: jobs, steps and rejects across batch boundaries
    columnar, rows = _both(factory, path, assume_tz=tz, cluster="hb" if seed % 2 else None, batch_size=batch)
    _same(columnar, rows)
    assert columnar[0].rows_rejected > 0


def test_open_job_window_repeats_and_late_steps(factory, tmp_path):
    """More jobs than the row parser keeps open (4096): a late step of an emitted job is rejected, one of a job
    still open rolls up; a repeated job line emits the first and keeps the second; a repeated key counts once."""
    lines = ["JobID|State|Start|End|AllocTRES|Elapsed|Submit|TRESUsageInTot"]
    for i in range(1, 4300):
        lines.append(
            f"{i}|COMPLETED|2024-01-01T00:00:00|2024-01-01T01:00:00|gres/gpu:a100={i % 3}|01:00:00|"
            f"2024-01-01T00:00:00|"
        )
        if i % 1000 == 0:
            lines.append(f"{i - 999}.0|COMPLETED|||||| energy=5,gres/gpuutil=50")  # emitted long ago
            lines.append(f"{i - 10}.batch|COMPLETED||||||energy=7,fs/disk=3K,gres/gpuutil=40")  # still open
            lines.append(lines[-3])  # the same job line again: the first is emitted
    lines.append("2.0|COMPLETED||||||energy=5")  # its job was emitted when job 4098 opened
    lines.append("12|COMPLETED|2024-01-01T00:00:00|2024-01-01T02:00:00||02:00:00|2024-01-01T00:00:00|")
    path = tmp_path / "window.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for batch in (5000, 700):
        columnar, rows = _both(factory, path, assume_tz="UTC", batch_size=batch)
        _same(columnar, rows)
        assert any("already emitted" in r[1] for r in columnar[2])
        assert columnar[0].rows_rolled_up > 0 and columnar[0].records_duplicate > 0


def test_float_text_is_reprs():
    import numpy as np

    from flopwise.meter.ingest_sacct_columnar import _float_text

    rnd = random.Random(7)
    values = [
        0.0,
        -0.0,
        1.0,
        3600.0,
        1e15,
        9999999999999998.0,
        1e16,
        2.0**60,
        0.5,
        1e-5,
        123.456,
        -3.0,
        1e300,
    ]
    values += [rnd.random() * 10 ** rnd.randint(-8, 20) for _ in range(500)]
    values += [float(rnd.randint(0, 2**53)) for _ in range(200)]
    present = np.array([i % 7 != 3 for i in range(len(values))])
    text = _float_text(np.array(values), present).to_pylist()
    assert text == [repr(v) if p else None for v, p in zip(values, present, strict=True)]


@pytest.mark.parametrize("form", ["gz", "crlf", "bom-noheader"])
def test_gzip_crlf_and_bom_give_the_row_paths_ledger(factory, tmp_path, form):
    import gzip

    path = _fuzzed(11, tmp_path, trailing=False)
    text = path.read_text(encoding="utf-8")
    kw = {}
    if form == "gz":
        path = tmp_path / "fuzz.txt.gz"
        path.write_bytes(gzip.compress(text.encode()))
    elif form == "crlf":
        path.write_bytes(text.replace("\n", "\r\n").encode())
    else:
        body = text.split("\n", 1)[1]
        path.write_bytes(("\ufeff" + body).encode())
        kw["fields"] = "hb-jobinfo"
    planned, why = sacct_plan(str(path), CAT, IngestOptions(assume_tz="UTC", **kw))
    assert planned is not None, why
    columnar, rows = _both(factory, path, assume_tz="UTC", cluster="hb", **kw)
    _same(columnar, rows)
    assert columnar[0].records_inserted > 100


def test_attribution_sees_what_the_row_path_shows_it(factory, tmp_path):
    """An attributor reading every field attribution rules read (source, account, user, partition from the tags
    or x_extra, resource, tags, request id, cluster) gives every ledger row the owner the row path gives it."""
    import hashlib

    from flopwise.meter.attribution import _partition
    from flopwise.store import Organization

    orgs = []
    with write_session(factory) as s:
        for i in range(5):
            name = f"sacct-columnar-attribution-{i}"
            org = s.scalar(select(Organization).where(Organization.name == name))
            if org is None:
                org = Organization(name=name)
                s.add(org)
                s.flush()
            orgs.append(org.id)

    def owner(record):
        seen = (record.source, record.x_account, record.x_user, _partition(record), record.resource_id,
                tuple(sorted(record.tags.items())), record.x_request_id, record.provider_name)  # fmt: skip
        digest = int(hashlib.sha256(repr(seen).encode()).hexdigest(), 16)
        return None if digest % 6 == 5 else (orgs[digest % 6 % 5], None, None)

    path = _fuzzed(5, tmp_path, trailing=False)
    out = []
    for columnar in (True, False):
        empty_ledger(factory)
        result = ingest_source(
            factory, "slurm", path, catalog=CAT, attribute=owner,
            options=IngestOptions(columnar=columnar, assume_tz="UTC"),
        )  # fmt: skip
        out.append((result, ledger_rows(factory), _all_rejects(factory, result.run_id)))
    _same(*out)
    assert {r["org_id"] for r in out[0][1]} - {None}


def test_a_restated_sacct_export_replaces_rows_as_the_row_path_does(factory, tmp_path):
    """The same jobs exported again with other values: the columnar path replaces the ledger rows (history kept)
    and counts replaced and unchanged as the row path does; the same file again changes nothing."""
    import os

    first = _pipe(SLURM / "hb-jobinfo-sacct.txt", tmp_path)
    text = first.read_text(encoding="utf-8")
    second = tmp_path / "again.txt"
    second.write_text(
        text.replace("|01:00:00|", "|01:00:01|").replace("gpushort", "gpu-short"), encoding="utf-8"
    )
    os.utime(second, (first.stat().st_mtime + 60, first.stat().st_mtime + 60))  # a later export
    out = []
    for columnar in (True, False):
        empty_ledger(factory)
        options = IngestOptions(columnar=columnar, assume_tz="UTC", cluster="hb")
        ingest_source(factory, "slurm", first, catalog=CAT, options=options)
        restated = ingest_source(factory, "slurm", second, catalog=CAT, options=options)
        again = ingest_source(factory, "slurm", second, catalog=CAT, options=options)
        with read_session(factory) as s:
            history = sorted(
                (h.source_key, json.dumps(h.changes, sort_keys=True, default=str))
                for h in s.execute(select(UsageRecordHistory)).scalars()
            )
        out.append((restated, again, ledger_rows(factory), history))
    (r1, a1, l1, h1), (r2, a2, l2, h2) = out
    assert l1 == l2 and h1 == h2 and h1
    for name in (
        "records_inserted",
        "records_replaced",
        "records_duplicate",
        "rows_rejected",
        "restated_cost_usd",
    ):
        assert getattr(r1, name) == getattr(r2, name), name
        assert getattr(a1, name) == getattr(a2, name), name
    assert r1.records_replaced > 0 and a1.records_replaced == 0 and a1.records_inserted == 0


_WIDE = ["JobID", "Cluster", "Partition", "QOS", "Account", "User", "Submit", "Eligible", "Start", "End",
         "ElapsedRaw", "Elapsed", "State", "NCPUS", "AllocCPUS", "AllocTRES", "AllocGRES", "ReqGRES",
         "ConsumedEnergyRaw", "Comment", "AdminComment", "TRESUsageInTot", "NodeList"]  # fmt: skip
_WIDE_VALUES = {
    "JobID": ["{j}", "{j}", "{j}_3", "{j}_[1-2]", "{j}.batch", "{j}.0", "{j}.extern"],
    "Cluster": ["c1", "", " c2 "],
    "Partition": ["gpu", "", " "],
    "QOS": ["normal", ""],
    "Account": ["acct", ""],
    "User": ["u1", "", "ü"],
    "Submit": ["2024-03-31T01:30:00", "Unknown", "2024-03-31T02:30:00", "bad"],
    "Eligible": ["2024-03-31T01:31:00", "None", ""],
    "Start": ["2024-03-31T01:45:00", "2024-10-27T02:15:00", "None", "2024-03-31T02:10:00"],
    "End": ["2024-03-31T03:10:00", "2024-10-27T02:45:00", "2024-10-27T03:20:00"],
    "ElapsedRaw": ["3600", "", "²", "x", "99999999", " 60 ", "99999999999999999999", "7200"],
    "Elapsed": ["01:00:00", "", "bad", "2-00:00:00"],
    "State": ["COMPLETED", "FAILED", "RUNNING", "CANCELLED by 5", "OUT_OF_MEMORY+"],
    "NCPUS": ["8", "", "x"],
    "AllocCPUS": ["16", "", "y"],
    "AllocTRES": ["", "gres/gpu:a100=2,gres/gpu=2", "gres/gpu=1", "cpu=4"],
    "AllocGRES": ["", "gpu:v100:2(IDX:0-1)", "gpu:2"],
    "ReqGRES": ["", "gpu:k80:4", "gpu:1"],
    "ConsumedEnergyRaw": ["", "0", "3600000", "²", "123456789012345678"],
    "Comment": ["", "flopwise-request=7", "request_id: r-9"],
    "AdminComment": ["", "flopwise_request=8"],
    "TRESUsageInTot": ["", "energy=100,gres/gpuutil=50", "gres/gpuutil=x", "fs/disk=12M,energy=9"],
    "NodeList": ["n1", "None assigned", "n[1-2]"],
}


@pytest.mark.parametrize("seed", range(4))
def test_wide_fuzzed_format_gives_the_row_paths_ledger(factory, tmp_path, seed):
    """Fields the hb-jobinfo dump lacks: Cluster, QOS, Eligible, ElapsedRaw, AllocCPUS after NCPUS, AllocGRES,
    ReqGRES, ConsumedEnergyRaw, comments with request ids; DST gaps and repeated hours in Europe/Amsterdam."""
    rnd = random.Random(100 + seed)
    lines = ["|".join(_WIDE)]
    for j in range(1, 400):
        for _ in range(rnd.randint(1, 3)):
            row = [rnd.choice(_WIDE_VALUES[f]) for f in _WIDE]
            row[0] = row[0].format(j=j if rnd.random() < 0.95 else j - 1)
            lines.append("|".join(row))
    path = tmp_path / "wide.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tz = ["Europe/Amsterdam", "UTC"][seed % 2]
    columnar, rows = _both(factory, path, assume_tz=tz, cluster="opt" if seed % 2 else None)
    _same(columnar, rows)
    assert columnar[0].records_inserted > 0


def test_a_run_that_fails_mid_file_keeps_the_rejects_read_before_the_failure(factory, tmp_path):
    """A byte that is not UTF-8 three quarters into the file fails the run on both paths; the rejects of the lines
    read before the failure are stored with the failed run (``ingest show RUN`` lists them) on the columnar path
    as on the row path: each a leading part of the rejects of the whole file without that byte (each path reads
    ahead of the line it fails on by a block: its own block size)."""
    clean = _fuzzed(11, tmp_path, trailing=False)
    data = clean.read_bytes()
    cut = data.index(b"\n", len(data) * 3 // 4) + 1
    path = tmp_path / "bad-byte.txt"
    path.write_bytes(data[:cut] + b"\xff" + data[cut:])
    out = {}
    for columnar, file in ((True, path), (False, path), (False, clean)):
        empty_ledger(factory)
        result = ingest_source(
            factory, "slurm", file, catalog=CAT,
            options=IngestOptions(columnar=columnar, assume_tz="UTC", cluster="hb", batch_size=100),
        )  # fmt: skip  (batches of 100 lines: the columnar path reads the file in blocks of ~6 KB)
        out[columnar, file] = (result, _all_rejects(factory, result.run_id))
    whole = out[False, clean][1]
    assert out[False, clean][0].status == "partial" and len(whole) > 30
    for columnar in (True, False):
        result, rejects = out[columnar, path]
        assert result.status == "failed" and "not UTF-8" in result.message, result.message
        assert len(rejects) >= 20, columnar  # 27 on the row path, 28 on the columnar path (read ahead)
        assert rejects == whole[: len(rejects)], columnar
        assert result.rows_rejected == len({line for line, _, _ in rejects})


def test_a_file_that_breaks_off_keeps_the_rejects_found_before_as_the_row_path_does(factory, tmp_path):
    """A gzip file cut short fails the run on both paths (nothing of it kept in the ledger); the lines rejected
    before the break stay with the failed run (they were lost on the columnar path). The columnar path keeps
    those it had found: the row path's, in its order, but for the lines of jobs it had not yet built (it
    validates a job once the job's lines are all read, in batches of 20,000 lines, and pyarrow's reader, reading
    ahead, meets the break sooner)."""
    import gzip

    text = _fuzzed(5, tmp_path, trailing=False).read_text(encoding="utf-8")
    head, body = text.split("\n", 1)
    lines = body.splitlines()
    big = "\n".join([head, *(lines * (60_000 // len(lines) + 1))]) + "\n"
    packed = gzip.compress(big.encode(), compresslevel=1)
    path = tmp_path / "cut.txt.gz"
    path.write_bytes(packed[: len(packed) * 3 // 4])
    planned, why = sacct_plan(str(path), CAT, IngestOptions(assume_tz="UTC"))
    assert planned is not None, why
    columnar, rows = _both(factory, path, assume_tz="UTC", cluster="hb")
    for result, ledger, _rejects in (columnar, rows):
        assert result.status == "failed" and "gzip" in result.message and ledger == []
    kept, wanted = columnar[2], rows[2]
    assert kept  # none were kept before
    assert kept == [r for r in wanted if r in kept]  # each one the row path's, in its order
