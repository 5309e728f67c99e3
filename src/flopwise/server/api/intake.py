"""Usage intake: ``POST /usage`` takes a batch of usage records (what ``flopwise agent`` pushes) into the ledger.

The body mirrors :class:`flopwise.meter.record.UsageRecord` field for field (money as decimal strings, times
with a zone)::

    {"records": [{"source": "nvml", "source_key": "nvml:node1:GPU-...:2024-05-01T12:00:00+00:00",
                  "charge_period_start": "2024-05-01T12:00:00+00:00", "charge_period_end": "...",
                  "x_device_type": "h100-sxm", "x_device_count": 1.0, "x_device_hours": 0.0167,
                  "x_energy_kwh": 0.0117, ...}],
     "project_id": 7}                         # optional: the project the usage belongs to

Who: a member (or stronger) of the organization, or of ``project_id`` when given. The records belong to the
caller's organization; their team and project come from ``project_id``, else from the request they name
(``x_request_id``) when it is one of the organization's, else from the organization's attribution rules, else
they stay unattributed below the organization (reported as such, never dropped).

Idempotent: the records go through the ingestion pipeline's ``INSERT ... ON CONFLICT (source_key) DO NOTHING``
(:func:`flopwise.meter.ingest.ingest_records`), in one transaction per batch; the stored key is
``org:<org id>:<source_key>``, so the same batch posted twice inserts nothing the second time, and one
organization can never shadow another's keys. Costing (billed cost, else the catalog's price per device-hour;
energy; CO2e; idle) is the pipeline's. Each POST is recorded as an ingest run whose counts reconcile:
``received == inserted + duplicate + rejected``.

A body that does not fit the schema is a 422 with one message per field (``records.3.x_device_hours``), and
nothing is written. A record that fits the schema but cannot be taken (its costing fails, or it names a
request outside the organization) is rejected alone, with its index and reason, and the rest are inserted.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.functional_validators import BeforeValidator

from flopwise import vocab
from flopwise.server.auth import authorize
from flopwise.server.deps import CatalogDep, CurrentPrincipal, DbDep

__all__ = [
    "MAX_RECORDS_PER_POST",
    "UsageBatchIn",
    "UsageIntakePublic",
    "UsageRecordIn",
    "UsageRejectPublic",
    "router",
    "stored_source_key",
]

router = APIRouter(prefix="/usage", tags=["usage"])

#: records per POST (the agent sends at most 1,000); larger batches are split by the client
MAX_RECORDS_PER_POST = 5000
#: bounds that keep every computed cost inside NUMERIC(20, 6) and every quantity physical
MAX_DEVICE_COUNT = 1e7
MAX_DEVICE_HOURS = 1e9
MAX_ENERGY_KWH = 1e12
MAX_CO2E_KG = 1e13
#: bytes of JSON one record's tags and x_extra may take together
MAX_EXTRA_BYTES = 16_384
_KEY_MAX = 400  # usage_records.source_key is 512 characters; the org prefix takes the rest
_TEXT_MAX = 200

#: what a record is (FOCUS 1.0 ``ChargeCategory``, lower case): usage costs are >= 0; a credit, refund or
#: adjustment may be negative and only admins of the scope it lands in may post one
ChargeCategory = Literal["usage", "credit", "refund", "adjustment"]
#: ``flopwise.vocab.INGEST_SOURCES``; other spellings (``nvidia_smi``, ``sacct``) are input aliases
Source = Annotated[Literal[vocab.INGEST_SOURCES], BeforeValidator(vocab.ingest_source)]  # type: ignore[valid-type]
Text = Annotated[str, Field(max_length=_TEXT_MAX)]


def stored_source_key(org_id: int, source_key: str) -> str:
    """The ledger key of a record posted by organization *org_id*: keys are unique per organization."""
    return f"org:{org_id}:{source_key}"


def _no_nul(value: Any, where: str) -> None:
    """PostgreSQL text cannot hold NUL characters; refuse them anywhere (strings, keys, nested JSON)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{where} contains a NUL character; remove it")
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_nul(k, where)
            _no_nul(v, where)
    elif isinstance(value, list):
        for v in value:
            _no_nul(v, where)


class UsageRecordIn(BaseModel):
    """One usage record, as :class:`flopwise.meter.record.UsageRecord` (``agent.record_to_json`` writes it)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    source: Source
    charge_category: ChargeCategory = "usage"
    source_key: str = Field(min_length=1, max_length=_KEY_MAX)
    charge_period_start: AwareDatetime
    charge_period_end: AwareDatetime
    billed_cost: Decimal | None = None
    effective_cost: Decimal | None = None
    list_cost: Decimal | None = None
    billing_currency: str | None = Field(default=None, min_length=3, max_length=8)
    provider_name: Text | None = None
    region_id: Text | None = None
    resource_id: str | None = Field(default=None, max_length=1000)
    service_category: Text | None = None
    sku_id: Text | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    x_device_type: Text | None = None
    x_device_count: float | None = Field(default=None, ge=0, le=MAX_DEVICE_COUNT)
    x_device_hours: float | None = Field(default=None, ge=0, le=MAX_DEVICE_HOURS)
    x_gpu_utilization: float | None = Field(default=None, ge=0, le=1)
    x_energy_kwh: float | None = Field(default=None, ge=0, le=MAX_ENERGY_KWH)
    x_co2e_kg: float | None = Field(default=None, ge=0, le=MAX_CO2E_KG)
    x_job_id: Text | None = None
    x_request_id: Text | None = None
    x_user: Text | None = None
    x_account: Text | None = None
    x_extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("billed_cost", "effective_cost", "list_cost")
    @classmethod
    def _money(cls, value: Decimal | None, info: Any) -> Decimal | None:
        from flopwise.store.types import to_money

        if value is None:
            return None
        from flopwise.server.decisions import exact_places

        exact_places(value)
        try:
            return to_money(value, info.field_name)
        except ArithmeticError:  # quantize of a huge exponent: decimal.InvalidOperation
            raise ValueError(
                f"{info.field_name}: {value!r} does not fit NUMERIC(20, 6); keep |value| below 1e14"
            ) from None

    @field_validator("charge_period_start", "charge_period_end")
    @classmethod
    def _utc(cls, value: datetime, info: Any) -> datetime:
        try:
            return value.astimezone(UTC)
        except (OverflowError, ValueError):
            raise ValueError(f"{info.field_name} {value!r} is outside the years 1-9999 in UTC") from None

    @model_validator(mode="after")
    def _check(self) -> UsageRecordIn:
        if self.charge_period_end < self.charge_period_start:
            raise ValueError(
                f"charge_period_end {self.charge_period_end.isoformat()} is before charge_period_start "
                f"{self.charge_period_start.isoformat()}; a period ends after it starts"
            )
        if self.charge_category == "usage":
            for name in ("billed_cost", "effective_cost", "list_cost"):
                value = getattr(self, name)
                if value is not None and value < 0:
                    raise ValueError(
                        f"{name} {value} is negative; usage costs are 0 or more. Send a credit or refund as its "
                        "own record with charge_category 'credit' or 'refund' (admins of the scope only)"
                    )
        for name in ("source_key", "provider_name", "region_id", "resource_id", "service_category", "sku_id",
                     "x_device_type", "x_job_id", "x_request_id", "x_user", "x_account", "billing_currency",
                     "tags", "x_extra"):  # fmt: skip
            _no_nul(getattr(self, name), name)
        try:
            size = len(json.dumps([self.tags, self.x_extra], allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"x_extra must be plain JSON ({exc})") from None
        if size > MAX_EXTRA_BYTES:
            raise ValueError(f"tags and x_extra take {size} bytes of JSON; keep them under {MAX_EXTRA_BYTES}")
        return self

    def to_record(self, org_id: int) -> Any:
        """The :class:`UsageRecord` stored for organization *org_id* (its key namespaced by the organization)."""
        from flopwise.meter.record import UsageRecord

        data = self.model_dump()
        category = data.pop("charge_category")
        if category != "usage":
            data["x_extra"] = {**data["x_extra"], "charge_category": category}
        data["source_key"] = stored_source_key(org_id, self.source_key)
        return UsageRecord(**data)


class UsageBatchIn(BaseModel):
    """What ``POST /usage`` takes: the records, and optionally the project they belong to."""

    model_config = ConfigDict(extra="forbid")

    records: list[UsageRecordIn] = Field(min_length=1, max_length=MAX_RECORDS_PER_POST)
    project_id: int | None = Field(default=None, ge=1, le=2**63 - 1)


class UsageRejectPublic(BaseModel):
    index: int
    source_key: str
    reason: str


class UsageIntakePublic(BaseModel):
    """Counts that reconcile: ``received == inserted + duplicate + rejected``."""

    ingest_run_id: int
    received: int
    inserted: int
    duplicate: int
    rejected: int
    unattributed: int
    rejects: list[UsageRejectPublic]


def _coster(request: Request, catalog: Any) -> Any:
    """One Coster per app (its device, price and region lookups are memoized)."""
    from flopwise.meter.costing import Coster

    state = request.app.state
    coster = getattr(state, "intake_coster", None)
    if coster is None or coster.catalog is not catalog:
        coster = state.intake_coster = Coster(catalog)
    return coster


def _org_rules(session: Any, org_id: int) -> list[Any]:
    """The organization's attribution rules as :class:`flopwise.meter.attribution.AttributionRule`; a stored
    rule whose match no longer validates is skipped rather than failing every push."""
    from sqlalchemy import select

    from flopwise.errors import FlopwiseError
    from flopwise.meter.attribution import AttributionRule, Scope
    from flopwise.store import Project
    from flopwise.store.ledger import AttributionRule as RuleRow

    rules = []
    for row in session.scalars(select(RuleRow).where(RuleRow.org_id == org_id)):
        team_id = row.team_id
        if row.project_id is not None and team_id is None:
            project = session.get(Project, row.project_id)
            team_id = project.team_id if project is not None else None
        try:
            rules.append(
                AttributionRule(row.id, row.priority, row.match, Scope(org_id, team_id, row.project_id))
            )
        except (FlopwiseError, ValueError, TypeError):
            continue
    return rules


def _request_scopes(session: Any, org_id: int, ids: set[int]) -> dict[int, Any]:
    """Scopes of the organization's compute requests among *ids* (other organizations' are not visible)."""
    if not ids:
        return {}
    from sqlalchemy import select

    from flopwise.meter.attribution import Scope
    from flopwise.store import ComputeRequest, Project

    rows = session.execute(
        select(ComputeRequest.id, ComputeRequest.project_id, Project.team_id)
        .join(Project, Project.id == ComputeRequest.project_id)
        .where(ComputeRequest.org_id == org_id, ComputeRequest.id.in_(ids))
    ).all()
    return {rid: Scope(org_id, team_id, project_id) for rid, project_id, team_id in rows}


def _request_refusal(
    principal: Any,
    request_id: int | None,
    scopes: dict[int, Any],
    fixed: tuple[int, int | None, int | None] | None,
) -> str | None:
    """Why a record naming compute request *request_id* may not be taken, or None when it may.

    Usage naming a request settles that request's reservations, so the caller must be allowed to write to it:
    the request is the organization's, the caller holds member or more on its project (or above), and with a
    ``project_id`` in the body the request belongs to that project.
    """
    from flopwise.server.auth import ROLE_RANK

    if request_id is None:
        return None
    scope = scopes.get(request_id)
    if scope is None:
        return f"names compute request {request_id}, which is not found in your organization"
    if fixed is not None and fixed[2] != scope.project_id:
        return f"names compute request {request_id} of project {scope.project_id}, not of project {fixed[2]}"
    role = principal.best_role(
        [("project", scope.project_id), ("team", scope.team_id), ("org", scope.org_id)]
    )
    if role is None or ROLE_RANK[role] < ROLE_RANK["member"]:
        return (
            f"names compute request {request_id}: settling it needs role 'member' on project {scope.project_id}; "
            f"you have {role or 'no role'}"
        )
    return None


@router.post("", response_model=UsageIntakePublic)
def post_usage(
    body: UsageBatchIn, request: Request, principal: CurrentPrincipal, db: DbDep, catalog: CatalogDep
) -> UsageIntakePublic:
    """Take a batch of usage records into the ledger (idempotent on ``source_key``); needs role member on the
    organization, or on ``project_id`` when given. Answers the counts inserted, duplicate and rejected."""
    from sqlalchemy import update

    from flopwise.errors import FlopwiseError
    from flopwise.meter.attribution import attribute, record_request_id
    from flopwise.meter.ingest import ingest_records
    from flopwise.store import Project, read_session, to_money, write_session
    from flopwise.store.ledger import IngestReject, IngestRun

    org_id = principal.org_id
    fixed_scope: tuple[int, int | None, int | None] | None = None
    with read_session(db) as session:
        if body.project_id is not None:
            authorize(session, principal, "member", "project", body.project_id)
            project = session.get_one(Project, body.project_id)
            fixed_scope = (org_id, project.team_id, project.id)
        else:
            authorize(session, principal, "member", "org", org_id)
        if any(r.charge_category != "usage" for r in body.records):
            # a credit lowers what a budget has used: only an admin of the scope it lands in may grant one
            if body.project_id is not None:
                authorize(session, principal, "admin", "project", body.project_id)
            else:
                authorize(session, principal, "admin", "org", org_id)
        rules = _org_rules(session, org_id) if fixed_scope is None else []
        named_by = [record_request_id(r.to_record(org_id)) for r in body.records]
        scopes = _request_scopes(session, org_id, {i for i in named_by if i is not None})

    coster = _coster(request, catalog)
    accepted: list[Any] = []
    rejects: list[UsageRejectPublic] = []
    for index, item in enumerate(body.records):
        reason = _request_refusal(principal, named_by[index], scopes, fixed_scope)
        if reason is None:
            record = item.to_record(org_id)
            try:
                costed = coster.cost(record)
                for value in (costed.cost_usd, costed.idle_cost_usd):
                    if value is not None:
                        to_money(value, "cost_usd")
                if costed.record.x_energy_kwh is not None and not math.isfinite(costed.record.x_energy_kwh):
                    raise ValueError(f"energy {costed.record.x_energy_kwh} is not finite")
            except (FlopwiseError, ValueError, ArithmeticError) as exc:
                reason = f"cannot be costed: {exc}"
            else:
                accepted.append(record)
        if reason is not None:
            rejects.append(UsageRejectPublic(index=index, source_key=item.source_key, reason=reason))

    unattributed = 0

    def owner(record: Any) -> tuple[int, int | None, int | None]:
        nonlocal unattributed
        if fixed_scope is not None:
            return fixed_scope
        found = attribute(record, rules, scopes)
        if found.scope is None or found.scope.project_id is None:
            unattributed += 1
        if found.scope is None:
            return (org_id, None, None)
        return (org_id, found.scope.team_id, found.scope.project_id)

    sources = {r.source for r in body.records}
    with write_session(db) as session:
        run = IngestRun(
            source=sources.pop() if len(sources) == 1 else "api",
            path=f"POST /api/v1/usage by user:{principal.user_id}",
            status="running",
            rows_read=len(body.records),
        )
        session.add(run)
        session.flush()
        run_id = run.id
    try:
        inserted, duplicate, totals = ingest_records(
            db, accepted, coster=coster, run_id=run_id, batch_size=MAX_RECORDS_PER_POST, attribute=owner
        )
    except Exception:
        with write_session(db) as session:  # one transaction per POST: nothing of it was written
            session.execute(
                update(IngestRun)
                .where(IngestRun.id == run_id)
                .values(finished_at=request.app.state.clock(), status="failed", message="the insert failed")
            )
        raise
    with write_session(db) as session:
        if rejects:
            session.execute(
                IngestReject.__table__.insert(),
                [{"ingest_run_id": run_id, "line": r.index, "reason": r.reason[:2000], "raw": r.source_key}
                 for r in rejects],
            )  # fmt: skip
        session.execute(
            update(IngestRun)
            .where(IngestRun.id == run_id)
            .values(
                finished_at=request.app.state.clock(),
                records_inserted=inserted,
                records_duplicate=duplicate,
                rows_rejected=len(rejects),
                status="partial" if rejects else "ok",
            )
        )
    if inserted:
        # new actuals: settle the organization's requests they belong to and raise budget alerts now (delivery to
        # webhooks happens outside request handling: `flopwise ingest` or `flopwise alerts deliver`). The pass is
        # this POST's run only, as after `flopwise ingest`: its rows attributed, the requests they name settled,
        # the budget windows they fall in checked; not every earlier row of the organization again (which made
        # a one-record POST cost 1.6 s over 20,000 unattributed rows, growing with the ledger)
        from flopwise.meter.burn import apply_actuals

        with write_session(db) as session:
            apply_actuals(
                session, request.app.state.clock(), org_id, touched=totals["counts"].touched, run_id=run_id
            )
    return UsageIntakePublic(
        ingest_run_id=run_id,
        received=len(body.records),
        inserted=inserted,
        duplicate=duplicate,
        rejected=len(rejects),
        unattributed=unattributed,
        rejects=rejects,
    )
