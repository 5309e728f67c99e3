"""The agent loop against a fake server (``httpx.MockTransport``): pushes, outages, restarts, 4xx vs 5xx, the spool.

The sampler is a scripted :class:`GpuSampler` (two GPUs, one sample every 10 s, energy counters rising), and the
agent runs with ``time_from_samples=True``: no sleeping, the backoff clock is the samples' own time, so each
test is deterministic and takes milliseconds.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from flopwise.errors import InputError
from flopwise.meter.agent import (
    Agent,
    AgentConfig,
    Spool,
    default_spool_dir,
    record_to_json,
    usage_url,
)
from flopwise.meter.nvml import GpuSample, GpuSampler, aggregate_samples

TOKEN = "fw_0123456789ab_secret"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
STEP_S = 10.0


class ScriptedSampler(GpuSampler):
    """Two GPUs sampled every STEP_S from T0 (+ *offset_ticks*); H100 at 700 W, A100 at 300 W."""

    def __init__(self, ticks: int, offset_ticks: int = 0) -> None:
        super().__init__()
        self.ticks = ticks
        self.offset = offset_ticks
        self.taken = 0

    def batch(self, i: int) -> list[GpuSample]:
        t = T0 + timedelta(seconds=STEP_S * i)
        return [
            GpuSample(t, 0, "GPU-aaaa", "NVIDIA H100 80GB HBM3", power_w=700.0, energy_mj=700_000.0 * STEP_S * i,
                      gpu_util_frac=0.9),
            GpuSample(t, 1, "GPU-bbbb", "NVIDIA A100-SXM4-80GB", power_w=300.0, gpu_util_frac=0.5),
        ]  # fmt: skip

    def all_samples(self) -> list[GpuSample]:
        return [s for i in range(self.offset, self.offset + self.ticks) for s in self.batch(i)]

    def sample(self) -> list[GpuSample]:
        if self.taken >= self.ticks:
            return []
        self.taken += 1
        return self.batch(self.offset + self.taken - 1)


class FakeServer:
    """An idempotent intake: records stored once per source_key, in arrival order; *status* decides each answer."""

    def __init__(self, status: Callable[[int], int | Exception] = lambda n: 200) -> None:
        self.status = status
        self.stored: dict[str, dict] = {}
        self.requests = 0
        self.bodies: list[list[dict]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        answer = self.status(self.requests)
        if isinstance(answer, Exception):
            raise answer
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return httpx.Response(
                401, json={"ok": False, "status": 401, "error": "invalid token", "errors": []}
            )
        if answer != 200:
            return httpx.Response(answer, json={"ok": False, "status": answer, "error": f"status {answer}",
                                                "errors": [{"field": "records.0", "message": "bad"}]})  # fmt: skip
        records = json.loads(request.content)["records"]
        self.bodies.append(records)
        inserted = 0
        for r in records:
            if r["source_key"] not in self.stored:
                self.stored[r["source_key"]] = r
                inserted += 1
        return httpx.Response(
            200, json={"inserted": inserted, "duplicate": len(records) - inserted, "rejected": 0}
        )

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler))


def _config(tmp_path: Path, **kw) -> AgentConfig:
    base = dict(server_url="http://flopwise.test", token=TOKEN, spool_dir=tmp_path / "spool", interval_s=STEP_S,
                push_interval_s=60.0, source_prefix="node1")  # fmt: skip
    return AgentConfig(**{**base, **kw})


def _agent(sampler, server, tmp_path, token=TOKEN, **kw) -> Agent:
    return Agent(sampler, server.client(), _config(tmp_path, token=token, **kw), time_from_samples=True,
                 rng=lambda: 0.5)  # fmt: skip


def _expected_keys(samples, push_interval_s=60.0) -> list[str]:
    return [r.source_key for r in aggregate_samples(samples, push_interval_s, max_gap_s=5 * STEP_S,
                                                    source_prefix="node1")]  # fmt: skip


def test_normal_push_delivers_every_record_once(tmp_path):
    sampler, server = ScriptedSampler(ticks=19), FakeServer()  # 0..180 s: three whole minutes
    stats = _agent(sampler, server, tmp_path).run()
    assert list(server.stored) == _expected_keys(sampler.all_samples())
    assert stats.records == stats.records_delivered == stats.records_inserted == len(server.stored) == 6
    assert stats.batches_spooled == 0 and stats.push_failures == 0
    assert server.requests == 3  # one push per closed minute, the last one at the end of the run
    h100 = [r for r in server.stored.values() if r["resource_id"] == "GPU-aaaa"]
    # 700 W for the whole three minutes from the energy counter: 700 * 180 s = 0.035 kWh
    assert math.isclose(sum(r["x_energy_kwh"] for r in h100), 700 * 180 / 3.6e6, rel_tol=1e-9)
    assert all(r["source"] == "nvml" and r["source_key"].startswith("nvml:node1:") for r in h100)
    assert h100[0]["charge_period_start"] == "2024-05-01T12:00:00+00:00"
    assert len(Spool(tmp_path / "spool")) == 0


def test_server_down_for_three_ticks_then_up_every_record_arrives_once_in_order(tmp_path):
    """Push every tick; the server refuses connections while ticks 2-4 are pushed, then comes back."""
    sampler = ScriptedSampler(ticks=12)
    down = {2, 3, 4}
    state = {"tick": 0}

    def status(_n: int) -> int | Exception:
        return httpx.ConnectError("connection refused") if state["tick"] in down else 200

    server = FakeServer(status)
    agent = _agent(sampler, server, tmp_path, push_interval_s=STEP_S)
    original = sampler.sample

    def counting_sample():
        state["tick"] += 1
        return original()

    sampler.sample = counting_sample
    stats = agent.run()
    expected = _expected_keys(sampler.all_samples(), push_interval_s=STEP_S)
    assert list(server.stored) == expected  # every record, in order
    sent = [r["source_key"] for body in server.bodies for r in body]
    assert sent == expected  # and none sent twice
    assert stats.batches_spooled >= 1 and stats.push_failures >= 1
    assert stats.records_delivered == stats.records == len(expected)
    assert len(agent.spool) == 0


def test_lost_answer_is_resent_and_counted_duplicate(tmp_path):
    """The server stores the batch but the answer is lost: the agent retries, the intake says duplicate."""
    sampler = ScriptedSampler(ticks=7)
    server = FakeServer()
    calls = {"n": 0}
    inner = server.handler

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        response = inner(request)
        if calls["n"] == 1:
            raise httpx.ReadTimeout("timed out", request=request)
        return response

    agent = Agent(sampler, httpx.Client(transport=httpx.MockTransport(flaky)), _config(tmp_path),
                  time_from_samples=True, rng=lambda: 0.5)  # fmt: skip
    stats = agent.run()
    assert list(server.stored) == _expected_keys(sampler.all_samples())
    # the first answer was lost after the server stored the minute: the resend is all duplicates
    assert (stats.records_inserted, stats.records_duplicate, len(server.stored)) == (0, 2, 2)
    assert stats.records_delivered == stats.records == 2


def test_restart_with_a_non_empty_spool_drains_it_first(tmp_path):
    down = FakeServer(lambda n: httpx.ConnectError("refused"))
    first = ScriptedSampler(ticks=19)
    stats1 = _agent(first, down, tmp_path).run()
    spool = Spool(tmp_path / "spool")
    assert stats1.records_delivered == 0 and spool.records() == stats1.records == 6

    server = FakeServer()
    second = ScriptedSampler(ticks=13, offset_ticks=30)  # the agent restarts two minutes later
    stats2 = _agent(second, server, tmp_path).run()
    expected = _expected_keys(first.all_samples()) + _expected_keys(second.all_samples())
    assert list(server.stored) == expected
    assert stats2.records_delivered == len(expected) and len(spool) == 0


def test_5xx_is_retried_and_4xx_is_dropped_with_the_reason(tmp_path, caplog):
    answers = {1: 503, 2: 422}
    server = FakeServer(lambda n: answers.get(n, 200))
    sampler = ScriptedSampler(ticks=19)
    with caplog.at_level(logging.WARNING, logger="flopwise.agent"):
        stats = _agent(sampler, server, tmp_path).run()
    keys = _expected_keys(sampler.all_samples())
    # minute 1: 503, spooled; the retry of minute 1 gets 422: dropped for good, never retried
    assert list(server.stored) == keys[2:]
    assert stats.batches_dropped == 1 and stats.records_dropped == 2
    assert stats.push_failures == 1
    assert "HTTP 422" in caplog.text and "records.0: bad" in caplog.text and "dropped" in caplog.text
    assert server.requests == 4  # 503, 422, then minutes 2 and 3: the dropped batch was sent no more
    assert len(Spool(tmp_path / "spool")) == 0


def test_refused_token_keeps_the_records_and_fails_the_run(tmp_path):
    server = FakeServer()
    sampler = ScriptedSampler(ticks=19)
    with pytest.raises(InputError, match=r"refused it \(401: invalid token\).*kept in"):
        _agent(sampler, server, tmp_path, token="fw_wrongwrong00_x").run()
    spooled = Spool(tmp_path / "spool").records()
    assert spooled >= 2 and not server.stored
    # the agent stopped sampling at once rather than going on with a token that cannot work
    assert sampler.taken < sampler.ticks
    stats = _agent(ScriptedSampler(ticks=0), server, tmp_path).run()
    assert len(server.stored) == spooled == stats.records_delivered


def test_once_stops_after_one_push_interval(tmp_path):
    sampler, server = ScriptedSampler(ticks=100), FakeServer()
    stats = _agent(sampler, server, tmp_path).run(once=True)
    assert sampler.taken == 7  # 0, 10, ..., 60 s
    assert stats.records == len(server.stored) == 2  # one minute per GPU


def test_real_sleep_paces_the_ticks(tmp_path):
    sleeps: list[float] = []
    now = {"t": 1000.0}

    def sleep(s: float) -> None:
        sleeps.append(s)
        now["t"] += s

    sampler = ScriptedSampler(ticks=10)
    original = sampler.sample

    def slow_sample():  # NVML takes 2 s: the next tick still comes STEP_S after the previous one
        now["t"] += 2.0
        return original()

    sampler.sample = slow_sample
    agent = Agent(sampler, FakeServer().client(), _config(tmp_path), sleep=sleep, clock=lambda: now["t"])
    agent.run(max_ticks=4)
    assert sleeps == [STEP_S - 2.0] * 3


def test_spool_bound_drops_the_oldest_with_a_warning(tmp_path, caplog):
    down = FakeServer(lambda n: 503)
    agent = _agent(ScriptedSampler(ticks=40), down, tmp_path, push_interval_s=STEP_S, max_spool_bytes=3000)
    with caplog.at_level(logging.WARNING, logger="flopwise.agent"):
        stats = agent.run()
    assert stats.batches_dropped > 0 and stats.records_dropped == 2 * stats.batches_dropped
    assert "over its bound" in caplog.text and "--max-spool-mb" in caplog.text
    spool = Spool(tmp_path / "spool")
    assert spool.size_bytes() <= 3000 or len(spool) == 1
    assert spool.records() + stats.records_dropped == stats.records  # every record is either kept or counted


def test_spool_is_atomic_locked_and_survives_a_damaged_file(tmp_path, caplog):
    d = tmp_path / "spool"
    d.mkdir()
    (d / ".tmp-00000000000000000001-0000001-000001.jsonl").write_text('{"half": ')  # a crash mid-write
    spool = Spool(d)
    assert not list(d.glob(".tmp-*"))
    first = spool.append([{"source_key": "a"}])
    second = spool.append([{"source_key": "b"}, {"source_key": "c"}])
    assert spool.batches() == [first, second] and spool.records() == 3
    first.write_text("{not json\n")
    with caplog.at_level(logging.ERROR, logger="flopwise.agent"):
        assert spool.read(first) == []
    assert "moved aside" in caplog.text and spool.batches() == [second]
    spool.lock()
    try:
        with pytest.raises(InputError, match="another flopwise agent"):
            Spool(d).lock()
    finally:
        spool.unlock()
    Spool(d).lock()  # free again


def test_urls_and_default_spool_dir():
    assert usage_url("https://fw.example.org/") == "https://fw.example.org/api/v1/usage"
    assert usage_url("https://fw.example.org/api/v1") == "https://fw.example.org/api/v1/usage"
    with pytest.raises(InputError, match="server"):
        usage_url("fw.example.org")
    linux = default_spool_dir("https://fw.example.org", env={"HOME": "/home/ada"}, platform="linux")
    assert linux.parent == Path("/home/ada/.local/state/flopwise/agent") and len(linux.name) == 12
    xdg = default_spool_dir(
        "https://fw.example.org", env={"HOME": "/h", "XDG_STATE_HOME": "/s"}, platform="linux"
    )
    assert xdg.parent == Path("/s/flopwise/agent") and xdg.name == linux.name
    other = default_spool_dir("https://other.example.org", env={"HOME": "/home/ada"}, platform="linux")
    assert other.name != linux.name  # batches spooled for one server never go to another
    mac = default_spool_dir("https://fw.example.org", env={"HOME": "/Users/ada"}, platform="darwin")
    assert mac.parent == Path("/Users/ada/Library/Application Support/flopwise/agent")


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("interval_s", 0, "positive"), ("push_interval_s", 5.0, "at least interval_s"),
     ("max_spool_bytes", 0, "positive"), ("token", " ", "API token")],
)  # fmt: skip
def test_config_names_the_bad_field(tmp_path, field, value, match):
    with pytest.raises(InputError, match=match) as info:
        _config(tmp_path, **{field: value})
    assert info.value.field == field


def test_record_json_is_exact_and_finite():
    from decimal import Decimal

    from flopwise.meter.record import UsageRecord

    rec = UsageRecord("nvml", "k", T0, T0 + timedelta(minutes=1), billed_cost=Decimal("0.100000"),
                      x_gpu_utilization=float("nan"), x_extra={"pids": (1, 2)})  # fmt: skip
    out = record_to_json(rec)
    assert (
        out["billed_cost"] == "0.100000"
        and out["x_gpu_utilization"] is None
        and out["x_extra"]["pids"] == [1, 2]
    )
    assert out["charge_period_start"] == "2024-05-01T12:00:00+00:00"
    json.dumps(out, allow_nan=False)


def test_a_sampler_failure_still_delivers_what_was_measured(tmp_path):
    from flopwise.errors import UnsupportedError

    sampler, server = ScriptedSampler(ticks=19), FakeServer()
    original = sampler.sample

    def failing():
        if sampler.taken == 9:
            raise UnsupportedError("NVML failed at nvmlDeviceGetPowerUsage: GPU is lost.")
        return original()

    sampler.sample = failing
    agent = _agent(sampler, server, tmp_path)
    with pytest.raises(UnsupportedError, match="GPU is lost"):
        agent.run()
    measured = [s for i in range(9) for s in sampler.batch(i)]  # 0..80 s
    assert list(server.stored) == _expected_keys(measured)  # the closed minute and the open one, both sent
