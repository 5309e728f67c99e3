"""``flopwise demo``: a realistic organization in a fresh database, so the dashboard's first look is not empty.

What it builds, through the same route functions the API serves (so every row is validated, authorized and
audited as in production):

* organization **acme** with three teams (research, applied, platform), five projects and five users, one per
  role: ada (admin), ben (approver on the organization), cho (member of research), dee (viewer on the
  organization), eve (member of applied), each with an API token;
* budgets (organization spend per month, research spend per month, a quarterly GPU-hour budget for
  llm-pretrain, organization kWh and CO2e per month), a quota on H100s, and a policy that lets runs up to
  $500 through and sends the rest to approval;
* a quarter (the 91 days up to now) of usage: the real GPU jobs of a university Slurm cluster
  (``demo_data/hb-jobinfo-sacct.txt.gz``: rug-cit-hpc/hb-jobinfo ``test/data/sacct.txt``, MIT) replayed day by
  day for research and applied (each day a seeded draw of real jobs: their GPU type, count and duration), and the
  FOCUS 1.0 sample bill (``demo_data/focus-1.0-sample.csv.gz``: FinOps-Open-Cost-and-Usage-Spec/FOCUS-Sample-Data,
  CC BY 4.0) replayed once per month for platform. sacct reports no GPU utilization, so each replayed job gets
  one drawn from a seeded Beta distribution per team (marked ``x_DemoUtilization: sampled`` in ``x_extra``);
  everything else (cost, energy, CO2e, idle) is computed by the ingest pipeline from the catalog;
* compute requests through ``POST /requests``: small ones approved by policy, larger ones pending approval, one
  denied with a reason (the requests are filed now, so no usage is linked to them: plan vs actual stays empty);
* budget actuals, alerts and calibration samples from :func:`flopwise.meter.burn.apply_actuals`.

Deterministic for a given ``now`` and ``seed``.
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = ["DEMO_DAYS", "DemoResult", "build_demo"]

DATA_DIR = Path(__file__).parent / "demo_data"
DEMO_DAYS = 91
#: jobs drawn per day (mean of a Poisson) and the Beta(a, b) of their GPU utilization, per team
TEAM_LOAD = {"research": (9.0, (6.0, 2.0)), "applied": (4.0, (2.0, 3.0))}
#: where the hb cluster is (Groningen): its usage's grid for energy's CO2e
CLUSTER_REGION = "country:NL"
SPEND_POLICY = """
name: spend
default: require_approval
rules:
  - id: small-runs
    when: {field: cost_usd, lte: "500"}
    effect: allow
"""


@dataclass
class DemoResult:
    """What the demo made: the organization, and each user's role and API token (shown once)."""

    org_id: int
    tokens: dict[str, str] = field(default_factory=dict)  # user name -> token
    roles: dict[str, str] = field(default_factory=dict)  # user name -> role summary
    usage_records: int = 0
    requests: dict[str, int] = field(default_factory=dict)  # state -> count


def _lines(name: str) -> Iterator[str]:
    with gzip.open(DATA_DIR / name, "rt", encoding="utf-8", newline="") as handle:
        yield from handle


def _sacct_gpu_jobs(catalog: Any) -> list[Any]:
    from flopwise.meter.sacct import parse_sacct

    records = parse_sacct(
        _lines("hb-jobinfo-sacct.txt.gz"), rejected=[], fields="hb-jobinfo", catalog=catalog,
        assume_tz="Europe/Amsterdam", cluster="hb",
    )  # fmt: skip
    return [r for r in records if r.x_device_type and (r.x_device_hours or 0) > 0]


def _focus_rows(catalog: Any) -> list[Any]:
    from flopwise.meter.focus import parse_focus

    return list(parse_focus(_lines("focus-1.0-sample.csv.gz"), catalog=catalog, assume_tz="UTC", rejected=[]))


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method; the means here are small
    limit, k, p = pow(2.718281828459045, -mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def build_demo(db: Any, catalog: Any, settings: Any, now: datetime, *, seed: int = 12) -> DemoResult:
    """Fill the (migrated, empty) database behind session factory *db* with the demo organization."""
    from flopwise.meter.burn import apply_actuals
    from flopwise.meter.costing import Coster, CostingOptions
    from flopwise.meter.ingest import ingest_records
    from flopwise.server.api.budgets import BudgetCreate, create_budget
    from flopwise.server.api.orgs import (
        ProjectCreate,
        TeamCreate,
        UserCreate,
        create_project,
        create_team,
        create_user,
    )
    from flopwise.server.api.policies import PolicyApply, apply_policy
    from flopwise.server.api.quotas import QuotaCreate, create_quota
    from flopwise.server.api.requests import DenyIn, RequestCreate, deny_request, new_request
    from flopwise.server.api.tokens import TokenCreate, create_token
    from flopwise.server.auth import principal_for_token
    from flopwise.server.bootstrap import bootstrap
    from flopwise.store import IngestRun, read_session, write_session

    rng = random.Random(seed)
    start = (now - timedelta(days=DEMO_DAYS)).replace(hour=0, minute=0, second=0, microsecond=0)
    org, _admin, admin_token = bootstrap(db, "acme", "ada", start, token_ttl_days=365)
    result = DemoResult(org_id=org.id, tokens={"ada": admin_token}, roles={"ada": "admin (organization)"})

    def clock() -> datetime:
        return now

    def principal(token: str) -> Any:
        with read_session(db) as s:
            return principal_for_token(s, token, now)

    ada = principal(admin_token)
    teams = {n: create_team(TeamCreate(name=n), db, clock, ada).id for n in ("research", "applied", "platform")}
    projects = {}
    for team, names in (("research", ("llm-pretrain", "eval")), ("applied", ("recsys", "vision")),
                        ("platform", ("inference",))):  # fmt: skip
        for n in names:
            projects[n] = create_project(teams[team], ProjectCreate(name=n), db, clock, ada).id
    people = (
        ("ben", "approver", "org", org.id, "approver (organization)"),
        ("cho", "member", "team", teams["research"], "member (team research)"),
        ("dee", "viewer", "org", org.id, "viewer (organization)"),
        ("eve", "member", "team", teams["applied"], "member (team applied)"),
    )
    for name, role, kind, scope_id, summary in people:
        user = create_user(
            UserCreate(name=name, roles=[{"role": role, "scope_kind": kind, "scope_id": scope_id}]), db, clock, ada
        )
        created = create_token(TokenCreate(name="demo", user_id=user.id, expires_in_days=365), db, clock, settings, ada)
        result.tokens[name], result.roles[name] = created.token, summary

    def budget(**kw: Any) -> None:
        create_budget(BudgetCreate.model_validate(kw), ada, db, clock)

    budget(name="acme monthly spend", scope_kind="org", scope_id=org.id, period="month", unit="usd",
           amount="30000", is_hard=False)  # fmt: skip
    budget(name="research monthly spend", scope_kind="team", scope_id=teams["research"], period="month",
           unit="usd", amount="12000", is_hard=True)  # fmt: skip
    budget(name="llm-pretrain GPU-hours", scope_kind="project", scope_id=projects["llm-pretrain"],
           period="quarter", unit="device_hours", amount="9000", is_hard=True)  # fmt: skip
    budget(name="acme monthly energy", scope_kind="org", scope_id=org.id, period="month", unit="kwh",
           amount="12000", is_hard=False)  # fmt: skip
    budget(name="acme monthly CO2e", scope_kind="org", scope_id=org.id, period="month", unit="co2e_kg",
           amount="4000", is_hard=False)  # fmt: skip
    create_quota(QuotaCreate(scope_kind="team", scope_id=teams["research"], match_on="device_type",
                             device="h100-sxm", max_concurrent_devices=Decimal(64)), ada, db, clock)  # fmt: skip
    apply_policy(PolicyApply(yaml=SPEND_POLICY), ada, db, clock)

    # compute requests (members file them; the policy decides; ben decides some)
    cho, eve, ben = (principal(result.tokens[n]) for n in ("cho", "eve", "ben"))
    asks = [
        (cho, "llm-pretrain", "train", "h100-sxm", 8, {"model": "llama-3.1-8b", "tokens": 2e9}),
        (cho, "eval", "serve", "l4", 1, {"model": "llama-3.1-8b", "duration_h": "48"}),
        (eve, "recsys", "serve", "l4", 2, {"model": "qwen3-8b", "duration_h": "24"}),
        (cho, "llm-pretrain", "train", "h100-sxm", 64, {"model": "llama-3.1-70b", "tokens": 5e10}),
        (eve, "vision", "fine-tune", "a100-sxm4-80gb", 8, {"model": "qwen3-32b", "tokens": 3e9, "method": "lora"}),
        (cho, "eval", "serve", "h100-sxm", 4, {"model": "llama-3.1-70b", "duration_h": "336"}),
        (eve, "recsys", "train", "h100-sxm", 16, {"model": "qwen3-8b", "tokens": 2e10}),
    ]
    made = []
    for who, project, workload, device, count, params in asks:
        body = RequestCreate.model_validate({"project_id": projects[project], "workload": workload, "device": device,
                                             "device_count": count, "params": params})  # fmt: skip
        made.append(new_request(body, None, who, db, clock, catalog, settings, None)[0])
    pending = [r for r in made if r.state == "pending"]
    if pending:
        deny_request(pending[-1].id, DenyIn(comment="Use the shared H100 reservation next month instead."), ben, db,
                     clock)  # fmt: skip

    # a quarter of usage
    coster = Coster(catalog, CostingOptions(default_region=CLUSTER_REGION))
    jobs = _sacct_gpu_jobs(catalog)
    bill = _focus_rows(catalog)
    team_projects = {"research": ("llm-pretrain", "eval"), "applied": ("recsys", "vision")}
    owners: dict[str, tuple[int, int, int]] = {}
    records = []
    for day in range(DEMO_DAYS):
        day_start = start + timedelta(days=day)
        for team, (rate, (a, b)) in TEAM_LOAD.items():
            weekday_factor = 0.5 if day_start.weekday() >= 5 else 1.0
            for n in range(_poisson(rng, rate * weekday_factor)):
                job = rng.choice(jobs)
                length = job.charge_period_end - job.charge_period_start
                begin = day_start + timedelta(seconds=rng.randrange(0, 86400))
                if begin + length > now:
                    continue
                project = rng.choice(team_projects[team])
                key = f"demo:{job.source_key}:{team}:{day}:{n}"
                records.append(replace(
                    job, source_key=key, charge_period_start=begin, charge_period_end=begin + length,
                    x_gpu_utilization=round(rng.betavariate(a, b), 3), region_id=CLUSTER_REGION,
                    x_user=f"{team}-{job.x_user}", x_account=team,
                    x_extra={**job.x_extra, "x_DemoUtilization": "sampled"},
                ))  # fmt: skip
                owners[key] = (org.id, teams[team], projects[project])
    month_starts = sorted({(start + timedelta(days=d)).replace(day=1) for d in range(DEMO_DAYS)})
    first = min(r.charge_period_start for r in bill)
    for m, month in enumerate(month_starts):
        for i, row in enumerate(bill):
            begin = month + (row.charge_period_start - first)
            if begin < start or begin + (row.charge_period_end - row.charge_period_start) > now:
                continue
            key = f"demo:{m}:{i}:{row.source_key}"
            records.append(replace(row, source_key=key, charge_period_start=begin,
                                   charge_period_end=begin + (row.charge_period_end - row.charge_period_start)))  # fmt: skip
            owners[key] = (org.id, teams["platform"], projects["inference"])
    with write_session(db) as s:
        run = IngestRun(source="slurm", path="demo: hb-jobinfo sacct jobs and the FOCUS 1.0 sample, replayed",
                        status="running", started_at=now)  # fmt: skip
        s.add(run)
        s.flush()
        run_id = run.id
    inserted, duplicate, _totals = ingest_records(
        db, records, coster=coster, run_id=run_id, attribute=lambda r: owners.get(r.source_key)
    )
    with write_session(db) as s:
        row = s.get(IngestRun, run_id)
        row.rows_read, row.records_inserted, row.records_duplicate = len(records), inserted, duplicate
        row.status, row.finished_at = "ok", now
        apply_actuals(s, now, org.id)
    result.usage_records = inserted
    with read_session(db) as s:
        from sqlalchemy import func, select

        from flopwise.store import ComputeRequest

        result.requests = dict(
            s.execute(select(ComputeRequest.state, func.count()).where(ComputeRequest.org_id == org.id)
                      .group_by(ComputeRequest.state)).all()  # fmt: skip
        )
    return result


def demo_now() -> datetime:
    """The demo's clock: now, to the second."""
    return datetime.now(UTC).replace(microsecond=0)
