"""parse_opencost_allocation on a handmade /allocation/compute response in OpenCost's real shape."""

from __future__ import annotations

import copy
import json
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from flopwise.catalog import load_catalog
from flopwise.errors import IngestError
from flopwise.meter.focus import ParseReport
from flopwise.meter.opencost import parse_opencost_allocation, parse_opencost_file

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "meter" / "opencost-allocation-handmade.json"
TRAIN = "gpu-cluster-1/ip-10-0-1-17.ec2.internal/llm-train/pretrain-7b-worker-0/trainer"
SERVE = "gpu-cluster-1/ip-10-0-2-33.ec2.internal/search/rerank-7c9f8d-abcde/server"


@pytest.fixture(scope="module")
def body() -> dict:
    return json.loads(FIXTURE.read_text(), parse_float=Decimal)


@pytest.fixture(scope="module")
def parsed():
    report = ParseReport()
    records = list(parse_opencost_file(FIXTURE, catalog=load_catalog(), report=report))
    return records, report


def test_every_allocation_becomes_a_record(parsed, body, capsys):
    records, report = parsed
    with capsys.disabled():
        print(
            f"\n{FIXTURE.name}: rows={report.rows_read} records={report.records} rejected={len(report.rejected)}",
            file=sys.stderr,
        )
    allocations = [a for step in body["data"] for a in step.values()]
    assert report.rows_read == len(allocations) == 8 == report.records + len(report.rejected)
    assert report.rejected == []
    assert len({r.source_key for r in records}) == 8
    # totals are the exact decimal sum of the JSON's totalCost values
    assert sum(r.billed_cost for r in records) == sum(a["totalCost"] for a in allocations)
    assert all(r.effective_cost == r.billed_cost and r.billing_currency == "USD" for r in records)


def test_gpu_training_pod(parsed):
    records, _ = parsed
    train = [r for r in records if r.resource_id == TRAIN]
    assert [r.charge_period_start for r in train] == [
        datetime(2025, 3, 10, 0, tzinfo=UTC),
        datetime(2025, 3, 10, 1, tzinfo=UTC),
    ]
    first = train[0]
    assert (first.x_device_type, first.x_device_count, first.x_device_hours) == ("h100-sxm", 8.0, 8.0)
    assert first.x_gpu_utilization == pytest.approx(7.12 / 8) and train[1].x_gpu_utilization == pytest.approx(
        0.8
    )
    assert first.provider_name == "AWS" and first.service_category == "Compute"
    assert first.x_account == "llm-train" and first.tags["team"] == "llm"
    assert first.x_request_id == "req-0042" and first.x_job_id == "pretrain-7b"
    assert first.x_extra["gpuCost"] == "92.16" and first.x_extra["k8s_namespace"] == "llm-train"
    assert first.x_extra["k8s_annotations"] == {"kubernetes.io/psp": "eks.privileged"}


def test_shared_gpu_is_a_fraction(parsed):
    records, _ = parsed
    serve = next(r for r in records if r.resource_id == SERVE)
    assert (serve.x_device_type, serve.x_device_count, serve.x_device_hours) == ("l4", 0.5, 0.5)
    assert serve.x_gpu_utilization == pytest.approx(0.42) and serve.x_extra["x_IsGpuShared"] is True


def test_idle_and_cpu_only_allocations(parsed):
    records, _ = parsed
    idle = [r for r in records if r.resource_id == "__idle__"]
    assert len(idle) == 2 and all(r.x_extra["x_OpenCostSpecial"] == "idle" for r in idle)
    assert idle[0].x_device_hours == 0.5 and idle[0].x_device_type is None and idle[0].x_account is None
    cpu = [r for r in records if "coredns" in r.resource_id]
    assert cpu and all(r.x_device_count is None and r.x_device_hours is None for r in cpu)


def test_idempotent_keys_and_decoded_input(body, parsed):
    records, _ = parsed
    again = list(parse_opencost_allocation(body))
    assert [r.source_key for r in again] == [r.source_key for r in records]
    from_text = list(parse_opencost_allocation(FIXTURE.read_text()))
    assert [r.billed_cost for r in from_text] == [r.billed_cost for r in records]
    # a restated cost keeps the key: the allocation name, cluster and window identify it
    restated = copy.deepcopy(body)
    restated["data"][0][TRAIN]["totalCost"] = Decimal("90")
    changed = list(parse_opencost_allocation(restated))
    assert changed[0].source_key == records[0].source_key and changed[0].billed_cost == Decimal("90")


def test_money_is_exact():
    text = json.dumps(
        {
            "code": 200,
            "data": [
                {
                    "a": {"start": "2025-01-01T00:00:00Z", "end": "2025-01-01T01:00:00Z", "totalCost": 0.1},
                    "b": {"start": "2025-01-01T00:00:00Z", "end": "2025-01-01T01:00:00Z", "totalCost": 0.2},
                }
            ],
        }
    )
    records = list(parse_opencost_allocation(text))
    assert sum(r.billed_cost for r in records) == Decimal("0.3")


def test_bad_allocations_are_rejected_by_position(body):
    bad = copy.deepcopy(body)
    step = bad["data"][0]
    step[TRAIN]["totalCost"] = Decimal("-1")
    del step[SERVE]["start"], step[SERVE]["end"], step[SERVE]["window"]
    step["__idle__"]["gpuHours"] = "NaN"
    report = ParseReport()
    records = list(parse_opencost_allocation(bad, report=report))
    assert len(records) == 5 and report.reconciles
    reasons = {r.line: r.reason for r in report.rejected}
    assert sorted(reasons) == [1, 2, 4]
    assert "totalCost -1 is negative" in reasons[1]
    assert "no start/end" in reasons[2]
    assert "gpuHours 'NaN' is not a number" in reasons[4]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<html>502 Bad Gateway</html>", "not JSON"),
        ('{"code": 500, "message": "Prometheus unreachable", "data": null}', "code 500"),
        ('{"items": []}', 'expected a JSON object with "data"'),
        ('{"code": 200, "data": "nope"}', "expected a list of allocation sets"),
    ],
)
def test_not_an_allocation_response_is_one_clear_error(text, message):
    with pytest.raises(IngestError, match=message):
        list(parse_opencost_allocation(text, path="alloc.json"))


def test_empty_window_gives_nothing():
    report = ParseReport()
    assert list(parse_opencost_allocation('{"code": 200, "data": [null]}', report=report)) == []
    assert report.rows_read == 0 and report.reconciles


def test_missing_file():
    with pytest.raises(IngestError, match="no such file"):
        list(parse_opencost_file(FIXTURE.with_name("absent.json")))
