"""flopwise enforcing budgets and quotas on a real Slurm (tests/enforce/slurmlab.py): real sacctmgr, sbatch,
slurmctld running flopwise's job_submit.lua, sacct, and a flopwise server reached through its client."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from flopwise.enforce.slurm import (
    HARD_QOS,
    SlurmAgent,
    SlurmConfig,
    load_config,
    read_accounts,
    subprocess_runner,
)


@dataclass
class Env:
    lab: Any
    agent: SlurmAgent
    fw: Any
    team_id: int

    def project(self, name: str, budget_usd: str | None, *, hard: bool = True) -> tuple[int, str, int | None]:
        """A project (its Slurm account synced, root allowed to use it) with an optional monthly usd budget."""
        p = self.fw.call("POST", f"/teams/{self.team_id}/projects", json_body={"name": name})
        budget_id = None
        if budget_usd is not None:
            budget_id = self.fw.create_budget(
                {"name": f"{name}-usd", "scope_kind": "project", "scope_id": p["id"], "period": "month",
                 "unit": "usd", "amount": budget_usd, "is_hard": hard}
            )["id"]  # fmt: skip
        self.agent.sync(dry_run=False)
        account = f"research_{name}"
        self.lab.run("sacctmgr", "-i", "add", "user", "root", f"account={account}")
        self.agent.step()
        return p["id"], account, budget_id

    def sbatch(self, account: str, gpus: int, minutes: int, *extra: str, cmd: str = "true") -> subprocess.CompletedProcess[str]:
        return self.lab.run(
            "sbatch", "-A", account, f"--gres=gpu:h100:{gpus}", f"--time={minutes}", *extra, "--wrap", cmd,
            check=False,
        )  # fmt: skip

    def wait_state(self, job: str, states: set[str], timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            out = self.lab.run("sacct", "-X", "-n", "-P", "-j", job, "--format=State", check=False).stdout.split()
            state = out[0] if out else ""
            if state in states:
                return state
            time.sleep(0.3)
        raise AssertionError(f"job {job} is {state!r}, not one of {states}")


def _job_id(r: subprocess.CompletedProcess[str]) -> str:
    m = re.search(r"Submitted batch job (\d+)", r.stdout)
    assert m, (r.returncode, r.stdout, r.stderr)
    return m.group(1)


@pytest.fixture(scope="module")
def env(lab: Any, server: Any, slurm_cache_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    fw = server.client()
    team = fw.call("POST", "/teams", json_body={"name": "research"})
    config: SlurmConfig = load_config(
        {"cache": str(slurm_cache_path), "state_dir": str(tmp_path_factory.mktemp("agent-state")),
         "partition": "gpu", "max_cache_age_s": 30,
         "gpus": {"h100": {"device": "h100-sxm", "usd_per_h": "2.50"}}}
    )  # fmt: skip
    agent = SlurmAgent(fw, config, subprocess_runner(lab.env))
    yield Env(lab, agent, fw, team["id"])
    fw.close()


def test_sync_creates_accounts_limits_and_qos_and_reports_drift(env: Env) -> None:
    pid, account, _ = env.project("sync", "100")
    env.fw.call(
        "POST", "/quotas",
        json_body={"scope_kind": "project", "scope_id": pid, "match_on": "device_class", "device": "gpu",
                   "max_concurrent_devices": "4"},
    )  # fmt: skip
    drift, cmds = env.agent.sync(dry_run=True)
    assert [(d.account, d.field) for d in drift] == [(account, "GrpTRES")]
    assert cmds == [["sacctmgr", "-i", "modify", "account", "where", f"name={account}", "set", "GrpTRES=gres/gpu=4"]]
    env.agent.sync(dry_run=False)
    held = read_accounts(subprocess_runner(env.lab.env))[account]
    # $100 = 10000 cents, x 60: billing-minutes at TRESBillingWeights GRES/gpu:h100=250 (cents per GPU-hour)
    assert held.grp_tres == {"gres/gpu": 4} and held.grp_tres_mins == {"billing": 600000}
    assert held.qos == HARD_QOS and held.parent == "research"
    part = env.lab.run("scontrol", "show", "partition", "gpu").stdout
    assert "TRESBillingWeights=CPU=0,Mem=0,GRES/gpu:h100=250" in part
    # somebody changes Slurm behind flopwise's back: reported, and put back
    env.lab.run("sacctmgr", "-i", "modify", "account", "where", f"name={account}", "set", "GrpTRES=gres/gpu=99")
    drift, _ = env.agent.sync(dry_run=True)
    assert [(d.account, d.field, d.slurm, d.flopwise) for d in drift] == [
        (account, "GrpTRES", "gres/gpu=99", "gres/gpu=4")
    ]
    env.agent.sync(dry_run=False)
    assert env.agent.sync(dry_run=True) == ([], [])


def test_admitted_job_is_tagged_then_settled_by_job_id(env: Env) -> None:
    _, account, budget_id = env.project("run", "100")
    r = env.sbatch(account, 2, 60, cmd="sleep 2")
    job = _job_id(r)
    comment = env.lab.run("squeue", "-h", "-j", job, "-o", "%k", check=False).stdout.strip()
    if not comment:
        comment = env.lab.run("sacct", "-X", "-n", "-P", "-j", job, "--format=Comment").stdout.strip()
    assert re.fullmatch(r"flopwise:adm=\d+-\d+", comment)
    env.wait_state(job, {"RUNNING", "COMPLETED"})
    first = env.agent.step()
    assert job in first.decided
    engine_id = f"{env.lab.cluster}.{job}"
    adm = env.fw.call("GET", f"/admission/slurm/{engine_id}")
    assert adm["admitted"] and adm["device_count"] == 2 and Decimal(adm["worst_case_cost_usd"]) == Decimal("5")
    env.wait_state(job, {"COMPLETED"})
    report = env.agent.step()
    assert job in first.settled + report.settled
    adm = env.fw.call("GET", f"/admission/slurm/{engine_id}")
    assert adm["state"] == "settled"
    budget = env.fw.get_budget(budget_id)
    # about 2 s x 2 GPUs x $2.50/h, not the $5 worst case
    assert Decimal(0) < Decimal(budget["settled"]) < Decimal("0.05") and Decimal(budget["reserved"]) == 0


def test_soft_budget_lets_the_job_in_with_a_warning_and_slurm_makes_it_pend(env: Env) -> None:
    _, account, _ = env.project("softcap", "1", hard=False)  # $1 = 6000 billing-minutes in GrpTRESMins
    r = env.sbatch(account, 2, 60, cmd="sleep 1")  # $5 worst case: over the soft budget
    job = _job_id(r)
    assert "flopwise: warning: soft budget 'softcap-usd' will be overrun by this job" in r.stderr
    deadline = time.monotonic() + 20
    reason = ""
    while time.monotonic() < deadline and reason != "AssocGrpBillingMinutes":
        reason = env.lab.run("squeue", "-h", "-j", job, "-o", "%r").stdout.strip()
        time.sleep(0.3)
    assert reason == "AssocGrpBillingMinutes"
    env.lab.run("scancel", job)


def test_spent_hard_budget_rejects_with_flopwise_reason(env: Env) -> None:
    _, account, _ = env.project("small", "10")
    r = env.sbatch(account, 8, 60)  # 8 x $2.50 x 1 h = $20 > $10
    assert r.returncode != 0
    assert "flopwise: hard budget 'small-usd' has $10.00 left; this job's worst case is $20.00" in r.stderr
    r = env.sbatch(account, 2, 60, "--hold")  # $5 fits
    _job_id(r)
    r2 = env.sbatch(account, 2, 90, "--hold")  # $7.50 no longer fits: $5 is counted by the plugin's ledger
    assert r2.returncode != 0 and "has $5.00 left" in r2.stderr


def test_a_job_without_account_is_charged_to_the_users_default_account(env: Env) -> None:
    _, account, _ = env.project("dflt", "10")
    env.lab.run("sacctmgr", "-i", "modify", "user", "root", "set", f"DefaultAccount={account}")
    try:
        r = env.lab.run("sbatch", "--gres=gpu:h100:8", "--time=60", "--wrap", "true", check=False)
        assert r.returncode != 0 and "hard budget 'dflt-usd' has $10.00 left" in r.stderr
    finally:
        env.lab.run("sacctmgr", "-i", "modify", "user", "root", "set", "DefaultAccount=root")


def test_a_user_cannot_raise_an_admitted_jobs_gpus_time_or_account(env: Env) -> None:
    _, account, _ = env.project("modify", "100")
    _, other, _ = env.project("modify2", "100")
    for acct in (account, other):
        env.lab.run("sacctmgr", "-i", "add", "user", "nobody", f"account={acct}")

    def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
        return env.lab.run("runuser", "-u", "nobody", "--", "env", f"SLURM_CONF={env.lab.env['SLURM_CONF']}",
                           *args, check=False)  # fmt: skip

    r = as_nobody("sbatch", "-A", account, "--hold", "--gres=gpu:h100:1", "--time=10", "--chdir=/tmp",
                  "--output=/dev/null", "--wrap", "true")  # fmt: skip
    job = _job_id(r)
    before = env.lab.run("squeue", "-h", "-j", job, "-o", "%b|%l|%a").stdout
    for change in ("gres=gpu:h100:8", "TimeLimit=5", f"Account={other}"):
        r = as_nobody("scontrol", "update", f"JobId={job}", change)
        # scontrol prints only "Unspecified error"; flopwise's reason is in slurmctld's log
        assert r.returncode != 0, (change, r.stderr)
    assert env.lab.run("squeue", "-h", "-j", job, "-o", "%b|%l|%a").stdout == before
    assert "resubmit the job to change them" in env.lab.log_tail("slurmctld", 20000)
    assert as_nobody("scontrol", "update", f"JobId={job}", "Comment=mine").returncode == 0
    env.lab.run("scancel", job)


def test_no_time_limit_is_refused_with_the_fix(env: Env) -> None:
    _, account, _ = env.project("notime", "10")
    r = env.lab.run("sbatch", "-A", account, "--gres=gpu:h100:1", "--wrap", "true", check=False)
    assert r.returncode != 0 and "give the job a time limit (sbatch --time=HH:MM:SS)" in r.stderr


def test_quota_makes_a_job_pend_with_slurms_reason(env: Env) -> None:
    pid, account, _ = env.project("quota", "1000")
    env.fw.call(
        "POST", "/quotas",
        json_body={"scope_kind": "project", "scope_id": pid, "match_on": "device_type", "device": "h100-*",
                   "max_concurrent_devices": "2"},
    )  # fmt: skip
    env.agent.sync(dry_run=False)
    first = _job_id(env.sbatch(account, 2, 10, cmd="sleep 30"))
    env.wait_state(first, {"RUNNING"})
    second = _job_id(env.sbatch(account, 2, 10, cmd="sleep 1"))
    deadline = time.monotonic() + 20
    reason = ""
    while time.monotonic() < deadline and not reason.startswith("AssocGrp"):
        reason = env.lab.run("squeue", "-h", "-j", second, "-o", "%r").stdout.strip()
        time.sleep(0.3)
    assert reason == "AssocGrpGRES"
    env.lab.run("scancel", first, second)


def test_stale_cache_fails_closed_for_hard_budgets_open_for_soft(env: Env) -> None:
    _, hard_account, _ = env.project("stalehard", "100")
    _, soft_account, _ = env.project("stalesoft", "100", hard=False)
    cache = env.agent.config.cache
    text = cache.read_text()
    now = int(time.time())
    cache.write_text(re.sub(r"generated_at( ?= ?)[\d.]+", lambda m: f"generated_at{m.group(1)}{now - 3600}", text))
    try:
        r = env.sbatch(hard_account, 1, 10, "--hold")
        assert r.returncode != 0
        assert "the decision cache is" in r.stderr and "hard budget 'stalehard-usd' fails closed" in r.stderr
        _job_id(env.sbatch(soft_account, 1, 10, "--hold"))
    finally:
        env.agent.refresh()
    _job_id(env.sbatch(hard_account, 1, 10, "--hold"))


def test_fifty_concurrent_submissions_never_overspend_a_hard_budget(env: Env) -> None:
    _, account, budget_id = env.project("burst", "50")

    def submit(_: int) -> subprocess.CompletedProcess[str]:
        return env.sbatch(account, 2, 60, "--hold")  # $5 each: exactly 10 fit in $50

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(submit, range(50)))
    accepted = [_job_id(r) for r in results if r.returncode == 0]
    refused = [r for r in results if r.returncode != 0]
    assert len(accepted) == 10, [r.stderr for r in refused[:3]]
    assert all("flopwise: hard budget 'burst-usd'" in r.stderr for r in refused)
    # the agent carries the held jobs' charges in the cache; the server has reserved nothing yet
    env.agent.step()
    assert Decimal(env.fw.get_budget(budget_id)["used"]) == 0
    assert env.sbatch(account, 1, 1, "--hold").returncode != 0
    # released, they run (at most 4 at once on 8 GPUs): each is decided, committed and settled by job id
    env.lab.run("scontrol", "release", *accepted)
    for job in accepted:
        env.wait_state(job, {"COMPLETED"}, timeout_s=120)
    reports = [env.agent.step(), env.agent.step()]
    budget = env.fw.get_budget(budget_id)
    assert not reports[0].errors + reports[1].errors
    done = reports[0].settled + reports[1].settled
    assert sorted(done) == sorted(accepted), (
        [r for r in env.agent._jobs() if r["job"] in accepted][:2], {j: env.agent.state["jobs"].get(j) for j in accepted}
    )
    assert Decimal(budget["used"]) <= Decimal("50") and Decimal(budget["reserved"]) == 0
    settled = [env.fw.call("GET", f"/admission/slurm/{env.lab.cluster}.{j}")["state"] for j in accepted]
    assert settled == ["settled"] * 10


def test_approval_required_holds_the_job_until_the_request_is_approved(env: Env, server: Any) -> None:
    pid, account, _ = env.project("approvals", "1000")
    env.fw.apply_policy(
        "name: big-slurm-jobs\ndefault: allow\nrules:\n  - id: eight-gpus\n"
        "    when: {field: device_count, gte: 8}\n    effect: require_approval\n    approvals: 1\n"
    )
    body = {"project_id": pid, "workload": "train", "device": "h100-sxm", "device_count": 8,
            "usd_per_device_h": "2.50", "plan": {"duration_h": "1"}}  # fmt: skip
    req = env.fw.create_request(body)
    assert req["state"] == "pending"
    r = env.sbatch(account, 8, 60, f"--comment=flopwise:request={req['id']}", cmd="sleep 1")
    job = _job_id(r)
    assert f"flopwise: held until compute request {req['id']} is approved" in r.stderr
    held_reason = {"JobHeldUser", "JobHeldAdmin"}  # Slurm shows a job_submit hold as the submitter's
    assert env.lab.run("squeue", "-h", "-j", job, "-o", "%r").stdout.strip() in held_reason
    env.agent.step()
    assert env.lab.run("squeue", "-h", "-j", job, "-o", "%r").stdout.strip() in held_reason
    approver = server.client(server.approver_token)
    approver.approve_request(req["id"], "ok")
    assert job in env.agent.step().released
    env.wait_state(job, {"COMPLETED"})
    # a denied request: its held job is cancelled, and a new job naming it is rejected with the reason
    req2 = env.fw.create_request(body)
    held = _job_id(env.sbatch(account, 8, 60, f"--comment=flopwise:request={req2['id']}"))
    approver.deny_request(req2["id"], "not this week")
    assert held in env.agent.step().cancelled
    env.wait_state(held, {"CANCELLED"})
    again = env.sbatch(account, 8, 60, f"--comment=flopwise:request={req2['id']}")
    assert again.returncode != 0 and f"compute request {req2['id']} is denied" in again.stderr
    # the owner releases the hold of a job whose request is still pending: the agent cancels it once it runs
    req3 = env.fw.create_request(body)
    sneaky = _job_id(env.sbatch(account, 8, 60, f"--comment=flopwise:request={req3['id']}", cmd="sleep 30"))
    env.lab.run("scontrol", "release", sneaky)
    env.wait_state(sneaky, {"RUNNING"})
    assert sneaky in env.agent.step().cancelled
    env.wait_state(sneaky, {"CANCELLED"})
    approver.close()


def _cli_config(env: Env, tmp_path: Path) -> Path:
    path = tmp_path / "slurm.yaml"
    path.write_text(
        f"cache: {env.agent.config.cache}\nstate_dir: {env.agent.config.state_dir}\npartition: gpu\n"
        "gpus:\n  h100: {device: h100-sxm, usd_per_h: '2.50'}\n"
    )
    return path


def test_cli_sync_dry_run_prints_the_sacctmgr_commands(
    env: Env, server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from flopwise.cli.main import app

    for key in ("SLURM_CONF", "PATH"):
        monkeypatch.setenv(key, env.lab.env[key])
    env.fw.call("POST", f"/teams/{env.team_id}/projects", json_body={"name": "clinew"})
    config = _cli_config(env, tmp_path)
    args = ["enforce", "slurm", "sync", "--config", str(config), "--url", "http://testserver",
            "--token", server.admin_token]  # fmt: skip
    runner = CliRunner()
    dry = runner.invoke(app, [*args, "--dry-run", "--json"], obj={"transport": server.transport})
    assert dry.exit_code == 0, dry.output
    out = json.loads(dry.stdout)
    assert "sacctmgr -i add account research_clinew parent=research 'Description=flopwise project'" in out["commands"]
    assert {"account": "research_clinew", "field": "account", "slurm": "missing", "flopwise": "parent=research"} in out["drift"]
    assert "research_clinew" not in env.lab.run("sacctmgr", "-n", "-P", "show", "account", "format=Account").stdout
    applied = runner.invoke(app, args, obj={"transport": server.transport})
    assert applied.exit_code == 0, applied.output
    assert "research_clinew" in env.lab.run("sacctmgr", "-n", "-P", "show", "account", "format=Account").stdout
    once = runner.invoke(
        app, ["enforce", "slurm", "agent", "--once", "--json", "--config", str(config), "--url", "http://testserver",
              "--token", server.admin_token], obj={"transport": server.transport},
    )  # fmt: skip
    assert once.exit_code == 0, once.output
    assert set(json.loads(once.stdout)) >= {"decided", "settled", "errors"}


def test_cli_bad_config_names_the_field(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flopwise.cli.main import app

    path = tmp_path / "bad.yaml"
    path.write_text("cache: /tmp/c.lua\nstate_dir: /tmp/s\ngpu: {}\n")
    r = CliRunner().invoke(app, ["enforce", "slurm", "sync", "--config", str(path), "--dry-run"])
    assert r.exit_code == 2
    assert "bad.yaml.gpu" in r.stderr and "did you mean gpus?" in r.stderr
