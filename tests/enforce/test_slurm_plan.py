"""The Slurm adapter's pure parts: configuration, the accounts and limits flopwise wants, drift and commands,
the cache text. (The real-Slurm behaviour is in test_slurm_real.py.)"""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from flopwise.client import FlopwiseClient, ServerUnreachableError
from flopwise.enforce.slurm import (
    HARD_QOS,
    SOFT_QOS,
    AccountSpec,
    SlurmAgent,
    account_name,
    billing_weights,
    desired_accounts,
    load_config,
    plan_sync,
    render_cache,
)
from flopwise.errors import InputError

CONFIG = load_config(
    {"cache": "/tmp/c.lua", "state_dir": "/tmp/s",
     "gpus": {"h100": {"device": "h100-sxm", "usd_per_h": "2.49"}, "a100": {"device": "a100-sxm4-80gb",
                                                                          "usd_per_h": "1.10"}}}
)  # fmt: skip
WINDOW = "2026-12-01T00:00:00Z"
TEAMS = [{"id": 1, "name": "Research"}]
PROJECTS = [{"id": 7, "team_id": 1, "name": "LLM pretrain"}, {"id": 8, "team_id": 1, "name": "eval"}]


def _budget(i: int, kind: str, scope: int, amount: str, hard: bool = True, unit: str = "usd") -> dict:
    return {"id": i, "name": f"b{i}", "scope_kind": kind, "scope_id": scope, "unit": unit, "amount": amount,
            "remaining": amount, "is_hard": hard, "current_window_start": WINDOW}  # fmt: skip


def test_account_names_are_slurm_safe() -> None:
    assert account_name("Research") == "research"
    assert account_name("Research", "LLM pretrain") == "research_llm_pretrain"


def test_billing_weights_are_cents_per_gpu_hour() -> None:
    assert billing_weights(CONFIG) == "CPU=0,Mem=0,GRES/gpu:h100=249,GRES/gpu:a100=110"


def test_desired_accounts_map_quotas_budgets_and_hardness() -> None:
    budgets = [_budget(1, "project", 7, "100.005"), _budget(2, "project", 7, "80"),
               _budget(3, "project", 8, "50", hard=False), _budget(4, "project", 8, "9", unit="kwh")]  # fmt: skip
    quotas = [
        {"scope_kind": "project", "scope_id": 7, "match_on": "device_class", "device": "gpu",
         "max_concurrent_devices": "16"},
        {"scope_kind": "project", "scope_id": 8, "match_on": "device_type", "device": "h100-*",
         "max_concurrent_devices": "4.5"},
    ]  # fmt: skip
    got = desired_accounts(TEAMS, PROJECTS, budgets, quotas, CONFIG)
    assert [(a.name, a.parent, a.qos) for a in got] == [
        ("research", "root", SOFT_QOS),
        ("research_llm_pretrain", "research", HARD_QOS),
        ("research_eval", "research", SOFT_QOS),
    ]
    # the tightest budget wins; cents rounded up, times 60 (billing-minutes at cents-per-hour weights)
    assert got[1].grp_tres == {"gres/gpu": 16} and got[1].grp_tres_mins == {"billing": 8000 * 60}
    assert got[2].grp_tres == {"gres/gpu:h100": 4} and got[2].grp_tres_mins == {"billing": 5000 * 60}


def test_plan_sync_reports_each_difference_and_clears_extra_limits() -> None:
    want = [AccountSpec("research", "root", qos=SOFT_QOS),
            AccountSpec("research_llm", "research", {"gres/gpu": 4}, {"billing": 600}, HARD_QOS, 7, 1)]  # fmt: skip
    have = {"research": AccountSpec("research", "root", qos=SOFT_QOS),
            "research_llm": AccountSpec("research_llm", "research", {"gres/gpu": 8, "cpu": 10}, {}, "normal"),
            "other": AccountSpec("other", "root", {"gres/gpu": 1})}  # fmt: skip
    drift, cmds = plan_sync(want, have, [HARD_QOS, SOFT_QOS, "normal"])
    assert [(d.field, d.slurm, d.flopwise) for d in drift] == [
        ("GrpTRES", "cpu=10,gres/gpu=8", "gres/gpu=4"),
        ("GrpTRESMins", "", "billing=600"),
        ("QOS", "normal", HARD_QOS),
    ]
    assert cmds == [["sacctmgr", "-i", "modify", "account", "where", "name=research_llm", "set",
                     "GrpTRES=cpu=-1,gres/gpu=4", "GrpTRESMins=billing=600", f"QOS={HARD_QOS}",
                     f"DefaultQOS={HARD_QOS}"]]  # fmt: skip
    assert plan_sync(want[:1], {}, [])[1][:3] == [
        ["sacctmgr", "-i", "add", "qos", HARD_QOS, "Flags=DenyOnLimit"],
        ["sacctmgr", "-i", "add", "qos", SOFT_QOS],
        ["sacctmgr", "-i", "add", "account", "research", "parent=root", "Description=flopwise team"],
    ]


def test_cache_lists_covering_budgets_in_micro_units() -> None:
    budgets = [_budget(1, "project", 7, "12.3456789"), _budget(2, "team", 1, "5", hard=False),
               _budget(3, "org", 1, "7", unit="device_hours"), _budget(4, "project", 8, "1"),
               _budget(5, "project", 7, "1", unit="kwh")]  # fmt: skip
    accounts = desired_accounts(TEAMS, PROJECTS, budgets, [], CONFIG)
    text = render_cache(accounts, budgets, CONFIG, ["1-1"], 1_700_000_000.5, {"1-2": {"1": 5}},
                        {"12": {"state": "pending", "account": "research_eval"}})  # fmt: skip
    assert text.startswith("-- flopwise decision cache generated_at=1700000000.5:")
    assert "[1] = {name = \"b1\", unit = \"usd\", hard = true, remaining_micro = 12345678}," in text
    assert '["research_llm_pretrain"] = {project_id = 7, budgets = {1, 2, 3}},' in text
    assert '["research_eval"] = {project_id = 8, budgets = {2, 3, 4}},' in text
    assert '["h100"] = 2490000' in text and "kwh" not in text
    assert 'decided = {["1-1"] = true},' in text and '["1-2"] = {[1] = 5},' in text
    assert '["12"] = {state = "pending", account = "research_eval"},' in text


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"cache": "c", "state_dir": "s"}, "config.gpus"),
        ({"cache": "c", "state_dir": "s", "gpus": {"h100": {"device": "x"}}}, "config.gpus.h100"),
        ({"cache": "c", "state_dir": "s", "gpus": {"h100": {"device": "x", "usd_per_h": "abc"}}},
         "config.gpus.h100.usd_per_h"),
        ({"cache": "c", "state_dir": "s", "gpus": {"h100": {"device": "x", "usd_per_h": "-1"}}},
         "config.gpus.h100.usd_per_h"),
        ({"cache": "c", "state_dir": "s", "max_cache_age_s": 0, "gpus": {"h": {"device": "x", "usd_per_h": 1}}},
         "config.max_cache_age_s"),
        ({"cache": "c", "state_dir": "s", "partiton": "gpu", "gpus": {}}, "config.partiton"),
    ],
)  # fmt: skip
def test_bad_config_names_the_field(data: dict, field: str) -> None:
    with pytest.raises(InputError) as err:
        load_config(data)
    assert err.value.field == field


def test_agent_with_flopwise_down_raises_and_leaves_the_cache_to_age(tmp_path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    config = load_config({"cache": str(tmp_path / "c.lua"), "state_dir": str(tmp_path),
                          "gpus": {"h100": {"device": "h100-sxm", "usd_per_h": "2.5"}}})  # fmt: skip
    client = FlopwiseClient(url="http://127.0.0.1:9", token="fw_x", transport=httpx.MockTransport(refuse))
    agent = SlurmAgent(client, config, lambda args: "")
    with pytest.raises(ServerUnreachableError):
        agent.step()
    assert not config.cache.exists()
    assert Decimal(CONFIG.gpus["h100"].usd_per_h) == Decimal("2.49")
