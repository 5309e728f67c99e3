"""parse_sacct on the real sacct outputs in tests/data/slurm, checked against XDMoD's expected records."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flopwise.catalog import load_catalog
from flopwise.errors import IngestError, InputError
from flopwise.meter.record import RejectedRow
from flopwise.meter.sacct import (
    SACCT_FORMATS,
    gpu_count_from_tres,
    parse_sacct,
    parse_slurm_duration_s,
)

SLURM = Path(__file__).resolve().parents[1] / "data" / "slurm"


def _need(name: str) -> Path:
    path = SLURM / name
    if not path.exists():
        pytest.skip(f"sample file {name} not found in {SLURM}")
    return path


def _parse(path: Path, **kw):
    rejected: list[RejectedRow] = []
    with path.open(encoding="utf-8") as f:
        records = list(parse_sacct(f, rejected=rejected, path=str(path), **kw))
    return records, rejected


def _reconcile(path: Path, records, rejected) -> dict[str, int]:
    """Every non-blank input line is a job line, a rolled-up step line or a rejected row, exactly once."""
    with path.open(encoding="utf-8") as f:
        data_lines = {i for i, line in enumerate(f, start=1) if line.strip()}
    job_lines = {r.x_extra["source_line"] for r in records}
    step_lines = [ln for r in records for ln in r.x_extra["step_lines"]]
    # an array spec line yields several records from one line: count its steps once
    step_set = set(step_lines)
    rejected_lines = [r.line for r in rejected]
    assert not (job_lines & step_set) and not (job_lines & set(rejected_lines))
    assert len(rejected_lines) == len(set(rejected_lines))
    assert job_lines | step_set | set(rejected_lines) == data_lines
    return {
        "lines": len(data_lines),
        "jobs": len(job_lines),
        "steps": len(step_set),
        "rejected": len(rejected),
    }


def test_hb_jobinfo_snowman_delimiter_reconciles():
    path = _need("hb-jobinfo-sacct.txt")
    records, rejected = _parse(path, fields="hb-jobinfo", assume_tz="UTC", catalog=load_catalog())
    counts = _reconcile(path, records, rejected)
    assert counts == {"lines": 242, "jobs": 87, "steps": 136, "rejected": 19}
    assert len(records) == 87
    reasons = [r.reason for r in rejected]
    assert sum("has not ended" in r for r in reasons) == 10  # 7 PENDING + 3 RUNNING jobs
    assert sum("never started" in r for r in reasons) == 3
    assert sum(r.startswith("step of job") for r in reasons) == 6  # the steps of the 3 running jobs
    assert len({r.source_key for r in records}) == len(records)
    for r in records:
        assert r.charge_period_start.tzinfo is not None and r.charge_period_end >= r.charge_period_start
        assert r.x_device_hours is not None and r.x_device_hours >= 0


def test_hb_jobinfo_gpu_counted_once_with_utilization_and_memory():
    path = _need("hb-jobinfo-sacct.txt")
    records, _ = _parse(path, fields="hb-jobinfo", assume_tz="UTC", catalog=load_catalog())
    by_id = {r.x_job_id: r for r in records}
    job = by_id["7965768"]  # AllocTRES billing=8,cpu=8,gres/gpu:v100=1,gres/gpu=1: one V100
    assert job.x_device_count == 1.0
    assert job.x_device_type == "v100-sxm2-32gb"
    assert job.x_extra["gpu_types"] == {"v100": 1}
    assert job.x_extra["state"] == "CANCELLED" and job.x_extra["cancelled_by_uid"] == "10314909"
    elapsed_s = 15 * 3600 + 28 * 60 + 22
    assert math.isclose(job.x_device_hours, elapsed_s / 3600, rel_tol=1e-12)
    assert math.isclose(
        job.x_gpu_utilization, 0.90, rel_tol=1e-12
    )  # .batch gres/gpuutil=90, .extern left out
    assert job.x_extra["gpu_mem_max_bytes"] == 20500736 * 1024
    assert job.x_extra["steps"] == 2
    assert job.x_energy_kwh is None  # energy=0: the cluster has no energy plugin
    two = by_id["8150389"]  # gres/gpu:a100=2,gres/gpu=2
    assert two.x_device_count == 2.0 and two.x_device_type == "a100-sxm-80gb"
    assert math.isclose(two.x_gpu_utilization, 0.5)  # gpuutil=100 summed over 2 GPUs
    array_task = by_id["5908801_3"]
    assert array_task.x_extra["array_job_id"] == "5908801" and array_task.x_extra["array_task_id"] == "3"
    assert array_task.x_device_count == 0.0  # a CPU-only job: zero GPUs is known, not missing
    assert math.isclose(array_task.x_extra["cpu_hours"], 8 * (28 * 3600 + 37 * 60 + 26) / 3600)


def test_without_assume_tz_every_job_is_rejected_with_the_fix():
    path = _need("xdmod-accounting-logs.log")
    records, rejected = _parse(path, fields="xdmod")
    assert records == []
    assert len(rejected) == 4
    assert all("no time zone" in r.reason and "assume_tz" in r.reason for r in rejected)


def test_unknown_time_zone_name_is_an_input_error():
    with pytest.raises(InputError, match="assume_tz"):
        list(parse_sacct(["x"], rejected=[], fields="xdmod", assume_tz="Mars/Olympus"))


def _epoch(iso: str | None) -> int | None:
    return None if iso is None else int(datetime.fromisoformat(iso).timestamp())


def test_xdmod_accounting_logs_match_expected_records():
    path = _need("xdmod-accounting-logs.log")
    expected = json.loads(_need("xdmod-accounting-logs.expected.json").read_text())
    records, rejected = _parse(path, fields=SACCT_FORMATS["xdmod"], assume_tz="UTC")
    assert rejected == []
    assert len(records) == len(expected)
    for rec, exp in zip(records, expected, strict=True):
        x = rec.x_extra
        assert rec.x_job_id == exp["job_id"] and x["job_id_raw"] == exp["job_id_raw"]
        assert rec.x_account == exp["account_name"] and rec.x_user == exp["user_name"]
        assert x["partition"] == exp["partition_name"] and x["qos"] == exp["qos_name"]
        assert x["group"] == exp["group_name"] and x["exit_code"] == exp["exit_code"]
        assert int(rec.charge_period_start.timestamp()) == exp["start_time"]
        assert int(rec.charge_period_end.timestamp()) == exp["end_time"]
        assert _epoch(x["submit"]) == exp["submit_time"]
        assert _epoch(x["eligible"]) == exp["eligible_time"]
        assert x["elapsed_s"] == exp["elapsed"]
        assert x["timelimit_s"] == exp["timelimit"]
        assert x["nnodes"] == int(exp["nnodes"]) and x["ncpus"] == int(exp["ncpus"])
        assert x["alloc_tres"] == exp["alloc_tres"] and x["req_tres"] == exp["req_tres"]
        assert x["node_list"] == exp["node_list"] and x["job_name"] == exp["job_name"]
        assert rec.x_device_count == exp["ngpus"]
        full_state = x["state"] + (f" by {x['cancelled_by_uid']}" if "cancelled_by_uid" in x else "")
        assert full_state == exp["state"]


def test_xdmod_job_arrays_expand_like_xdmod():
    path = _need("xdmod-accounting-logs-with-job-arrays.log")
    expected = json.loads(_need("xdmod-accounting-logs-with-job-arrays.expected.json").read_text())
    records, rejected = _parse(path, fields="xdmod", assume_tz="UTC")
    assert rejected == []
    by_line: dict[int, list[int]] = {}
    for r in records:
        by_line.setdefault(r.x_extra["source_line"], []).append(int(r.x_extra["array_task_id"]))
        assert r.x_extra["array_job_id"] == "4103947"
    assert [by_line[ln] for ln in sorted(by_line)] == expected
    assert len(records) == sum(map(len, expected))
    # the file lists some tasks on several lines; a task keeps one source_key, so the store counts it once
    assert len({r.source_key for r in records}) == len({i for task_ids in expected for i in task_ids})


@pytest.mark.parametrize("name", ["xdmod-non-ended-job-state", "xdmod-unknown-job-state"])
def test_xdmod_skipped_states_are_listed_not_lost(name):
    path = _need(f"{name}.log")
    expected = json.loads(_need(f"{name}.expected.json").read_text())
    records, rejected = _parse(path, fields="xdmod", assume_tz="UTC")
    assert records == []
    assert [r.line for r in rejected] == [1, 2] == list(range(1, len(expected) + 1))
    word = "has not ended" if "non-ended" in name else "unknown job state"
    assert all(word in r.reason for r in rejected)


def test_xdmod_utf8_multibyte_job_name():
    path = _need("xdmod-utf8-multibyte-chars.log")
    expected = json.loads(_need("xdmod-utf8-multibyte-chars.expected.json").read_text())
    records, _ = _parse(path, fields="xdmod", assume_tz="UTC")
    assert [r.x_extra["job_name"] for r in records] == [e["job_name"] for e in expected]


def test_every_xdmod_alloc_tres_gpu_count():
    cases = json.loads(_need("xdmod-alloc-tres-gpu-count.json").read_text())
    assert len(cases) == 9
    for tres, count in cases:
        assert gpu_count_from_tres(tres)[0] == count, tres


def test_gpu_types_and_usage_entries_are_not_gpus():
    assert gpu_count_from_tres("gres/gpu:v100=1,gres/gpu=1,gres/gpumem=20500736K,gres/gpuutil=90") == (
        1,
        {"v100": 1},
    )
    assert gpu_count_from_tres("gres/gpu:a100=2,gres/gpu:v100=1") == (3, {"a100": 2, "v100": 1})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3-00:00:00", 259200),
        ("1-04:33:44", 102824),
        ("14:00:49", 50449),
        ("00:00:00", 0),
        ("23:08.358", 23 * 60 + 8.358),
        ("00:00.001", 0.001),
        ("1-05", 86400 + 5 * 3600),
        ("UNLIMITED", None),
        ("", None),
    ],
)
def test_durations(text, seconds):
    got = parse_slurm_duration_s(text)
    assert got == seconds if seconds is None else math.isclose(got, seconds, rel_tol=1e-12)


def test_header_line_any_delimiter_and_bad_rows(tmp_path):
    text = (
        "JobID;JobName;Account;State;Start;End;Elapsed;AllocTRES\n"
        "10;train;ml;COMPLETED;2024-01-01T00:00:00;2024-01-01T02:00:00;02:00:00;cpu=8,gres/gpu:h100=4,gres/gpu=4\n"
        "10.batch;batch;ml;COMPLETED;2024-01-01T00:00:00;2024-01-01T02:00:00;02:00:00;cpu=8\n"
        "11;bad;ml;COMPLETED;2024-01-01T00:00:00\n"
        "12.0;orphan;ml;COMPLETED;2024-01-01T00:00:00;2024-01-01T02:00:00;02:00:00;\n"
        "13;late;ml;COMPLETED;2024-01-01T05:00:00;2024-01-01T04:00:00;00:00:00;gres/gpu=1\n"
        "14;zoned;ml;TIMEOUT;2024-01-01T00:00:00+02:00;2024-01-01T01:00:00+02:00;01:00:00;gres/gpu=2\n"
    )
    rejected: list[RejectedRow] = []
    records = list(
        parse_sacct(text.splitlines(True), rejected=rejected, catalog=load_catalog(), assume_tz="UTC")
    )
    assert [r.x_job_id for r in records] == ["10", "14"]
    assert records[0].x_device_type == "h100-sxm" and records[0].x_device_hours == 8.0
    assert records[0].x_extra["step_lines"] == [3]
    assert records[1].charge_period_start == datetime(2023, 12, 31, 22, tzinfo=UTC)  # its own offset kept
    assert [(r.line, r.reason.split(" ")[0]) for r in rejected] == [(4, "expected"), (5, "step"), (6, "job")]
    assert "before Start" in rejected[2].reason


def test_an_elapsed_longer_than_the_job_span_is_a_rejected_line(tmp_path):
    """A 20-digit ElapsedRaw made the ingest fail on the ledger's money column (a traceback); Slurm's elapsed time is
    never longer than End - Start, so such a line is refused with its reason. An hour of slack (a daylight-saving
    change between local times) is accepted."""
    text = (
        "JobID|State|Start|End|ElapsedRaw|AllocTRES\n"
        "20|COMPLETED|2024-01-01T00:00:00|2024-01-01T02:00:00|99999999999999999999|gres/gpu=4\n"
        "21|COMPLETED|2024-01-01T00:00:00|2024-01-01T02:00:00|10802|gres/gpu=4\n"
        "22|COMPLETED|2024-01-01T00:00:00|2024-01-01T02:00:00|10800|gres/gpu=4\n"
    )
    rejected: list[RejectedRow] = []
    records = list(
        parse_sacct(text.splitlines(True), rejected=rejected, catalog=load_catalog(), assume_tz="UTC")
    )
    assert [r.x_job_id for r in records] == ["22"] and records[0].x_device_hours == 12.0
    assert [r.line for r in rejected] == [2, 3]
    assert all("longer than End - Start" in r.reason for r in rejected)


def test_files_that_cannot_be_understood_fail_once():
    with pytest.raises(IngestError, match="no header line and no field list"):
        list(parse_sacct(["1|2|3\n"], rejected=[], path="x.txt"))
    with pytest.raises(IngestError, match=r"x.txt:1: cannot split"):
        list(parse_sacct(["a b c\n"], rejected=[], path="x.txt", fields="JobID,State,Start,End"))
    with pytest.raises(IngestError, match="lacks start, end"):
        list(parse_sacct(["JobID|State|User\n"], rejected=[], path="x.txt"))


def test_streams_without_reading_everything():
    def lines():
        yield "JobID|State|Start|End|AllocTRES\n"
        for i in range(10_000):
            yield f"{i}|COMPLETED|2024-01-01T00:00:00|2024-01-01T01:00:00|gres/gpu=1\n"
        raise AssertionError("read past what was asked")

    gen = parse_sacct(lines(), rejected=[], assume_tz="UTC")
    first = [next(gen) for _ in range(100)]
    assert first[0].x_job_id == "0" and first[-1].x_device_hours == 1.0


# --- the parser's output is pinned: speed-ups must not change a record --------------------------------------

#: sha256 of the reprs of every record (all fields, x_extra in order) and of every rejected row, as the parser
#: wrote them before its per-job work was cut (commit 5363fe7): (file, fields) -> (records, rejected, counts)
PINNED = {
    ("xdmod-accounting-logs-with-job-arrays.log", "xdmod"): (
        "586dae135428bf374de2099514ad1af541d9854a06320dad7a1deea25dc790a2",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        (23, 0),
    ),
    ("xdmod-accounting-logs.log", "xdmod"): (
        "6626415973608ca2c35693f978f89adae4f551851c592a3825ce73bc085b7c9c",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        (4, 0),
    ),
    ("xdmod-non-ended-job-state.log", "xdmod"): (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "0dc5d9d0391bbaec86d2e585be5fd61b6dd5b9272275ffdacb8b80e5b36da9bc",
        (0, 2),
    ),
    ("xdmod-unknown-job-state.log", "xdmod"): (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "7e6ad5eac37dfa65165d3964da1588c438e9905eaedcb1da0ccad55a4e5bee26",
        (0, 2),
    ),
    ("xdmod-utf8-multibyte-chars.log", "xdmod"): (
        "74b358d8540534edcccc67648e68fb0ae5fd5d0671dc648c694a20959d913bfd",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        (1, 0),
    ),
    ("hb-jobinfo-sacct.txt", "hb-jobinfo"): (
        "6ca4795ceef99a17694fb61b76dc067db55f50ef54aaab9ff3356e57f6feb3c4",
        "3dba2e78dbde56605af12795ddedd77aa491795f3ede3b2f1f6cb9dd8d03c5ab",
        (87, 19),
    ),
}


def _digest(items) -> str:
    return hashlib.sha256("\n".join(map(repr, items)).encode()).hexdigest()


@pytest.mark.parametrize(("name", "fields"), sorted(PINNED))
def test_records_and_rejections_are_unchanged(name, fields):
    path = _need(name)
    rejected: list[RejectedRow] = []
    with path.open(encoding="utf-8") as f:
        records = list(
            parse_sacct(
                f, rejected=rejected, path=name, fields=fields, catalog=load_catalog(), assume_tz="UTC"
            )
        )
    assert (_digest(records), _digest(rejected), (len(records), len(rejected))) == PINNED[(name, fields)]


def test_records_do_not_share_gpu_types_through_the_cache():
    lines = [
        "JobID|Cluster|State|Start|End|Elapsed|AllocTRES\n",
        "1|c|COMPLETED|2025-01-01T00:00:00|2025-01-01T01:00:00|01:00:00|gres/gpu:a100=2,gres/gpu=2\n",
        "2|c|COMPLETED|2025-01-01T00:00:00|2025-01-01T01:00:00|01:00:00|gres/gpu:a100=2,gres/gpu=2\n",
    ]
    first, second = parse_sacct(lines, rejected=[], assume_tz="UTC")
    first.x_extra["gpu_types"]["a100"] = 99
    assert second.x_extra["gpu_types"] == {"a100": 2}
    assert (second.x_device_count, second.x_device_hours) == (2.0, 2.0)
