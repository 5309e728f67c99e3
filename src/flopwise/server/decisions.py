"""The one decision path of the server: compute requests and scheduler admission both go through here.

1. **Facts.** :func:`request_facts` turns a workload into :class:`flopwise.govern.RequestFacts`: from a chosen
   plan (duration, optionally FLOPs / cost / energy) or from parameters the server estimates itself with
   ``flopwise.api.estimate_training`` / ``estimate_serving`` and the catalog; :func:`admission_request_facts`
   takes the worst case (device count x maximum duration x price) through ``govern.admission_facts``.
2. **Decision.** :func:`decide` reads the budgets covering the project and their usage in the current window,
   the quotas and the devices they hold, the thresholds, the acceptable-use policy and its acceptance, and the
   enabled policies, and calls :func:`flopwise.govern.decide`. Without quotas on the project it runs in a read
   transaction before the write one, taking no lock; with quotas it runs in the write transaction under the
   budget and quota locks (the devices held must not move).
3. **Reservation.** :func:`reserve`, in the caller's write transaction, locks the covering budget rows and
   reserves the decision's amounts with ``store.reserve_against_budgets``, which re-reads each hard budget's
   spent sum under its lock (hard budgets fail closed, soft ones fail open): concurrent callers reserve one
   after the other and a hard budget is never overspent, while the locks are held only from the reservation
   to the commit.

**Lock order** of a write (the same everywhere, so no two writers wait on each other in a cycle): the request
or admission job row, the budget rows in ascending id, the quota rows, the organization's audit chain head
last. Expiring stale requests is its own transaction before (it writes audit entries without budget locks).
The caller stores the request (or admission job) with :func:`trace_json`, appends the audit entry, commits and
only then builds its response.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, is_dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flopwise import govern
from flopwise.catalog import Catalog
from flopwise.catalog.types import Device, Region
from flopwise.errors import InputError, UnsupportedError
from flopwise.server.api.aup import aup_status
from flopwise.server.errors import ApiError
from flopwise.store import (
    AdmissionJob,
    Budget,
    BudgetReservation,
    ComputeRequest,
    Organization,
    Policy,
    Project,
    Quota,
    RoleBinding,
    Team,
    User,
    budgets_covering,
    lock_budgets,
    reserve_against_budgets,
    to_money,
)
from flopwise.units import J_PER_KWH, S_PER_H

__all__ = [
    "DEFAULT_REGION",
    "MAX_AMOUNT",
    "MAX_ID",
    "IdPath",
    "GOVERN_WORKLOAD",
    "STORE_WORKLOAD",
    "AdmissionIn",
    "BodyModel",
    "DecisionResult",
    "EstimateParams",
    "PlanIn",
    "RequestScope",
    "WorkloadIn",
    "admission_request_facts",
    "audit",
    "budget_usage",
    "current_policies",
    "decide_and_reserve",
    "load_scope",
    "request_facts",
    "to_jsonable",
    "trace_json",
    "window_for",
]

Workload = Literal["train", "fine-tune", "serve", "batch-inference"]
Pricing = Literal["on_demand", "spot", "reserved", "on-prem"]
#: govern spelling -> store spelling of the workload kinds (the store's CHECK uses underscores)
STORE_WORKLOAD = {
    "train": "train",
    "fine-tune": "fine_tune",
    "serve": "serve",
    "batch-inference": "batch_inference",
}
GOVERN_WORKLOAD = {v: k for k, v in STORE_WORKLOAD.items()}
#: govern pricing kind -> catalog pricing kind (``flopwise.catalog.pricing.PRICING_KINDS``)
_CATALOG_PRICING = {"on_demand": "on-demand", "spot": "spot", "reserved": "reserved", "on-prem": "onprem"}
#: the grid used when neither the request nor its price says where the work runs (as ``flopwise.api``)
DEFAULT_REGION = "country:US"
_G_PER_KG = 1000.0
_W_PER_KW = 1000.0
#: the largest row id (the store's integer keys are 32-bit on PostgreSQL)
MAX_ID = 2**31 - 1
#: a row id in a path: 1 .. MAX_ID, so an out-of-range id is a 422, not a database overflow
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
#: FLOPs of one forward pass per parameter per token (2N, Kaplan et al. 2020, https://arxiv.org/abs/2001.08361)
_FORWARD_FLOPS_PER_PARAM_TOKEN = 2.0


#: the store keeps amounts exactly to 6 decimal places (NUMERIC(20, 6))
_PLACES = Decimal("0.000001")


def exact_places(value: Decimal) -> Decimal:
    """*value* when it has at most 6 decimal places (what the store keeps), else ``ValueError``: an amount is
    stored exactly or refused, never rounded (0.0000005 would become 0 on one database and stay on another)."""
    try:
        inexact = value.is_finite() and value != value.quantize(_PLACES, rounding="ROUND_DOWN")
    except ArithmeticError:  # quantize of a huge exponent (1e40): decimal.InvalidOperation
        raise ValueError(f"{value} is too large to keep exactly; keep it below 1e14") from None
    if inexact:
        raise ValueError(
            f"{value} has more than 6 decimal places; amounts are kept exactly to 6 decimal places"
        )
    return value


class BodyModel(BaseModel):
    """A request body: unknown fields are refused, and so is text with NUL characters (PostgreSQL cannot store
    them) and a decimal with more places than the store keeps, each as a 422 naming the field."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("text may not contain NUL (\\x00) characters")
        if isinstance(value, Decimal):
            exact_places(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, Decimal):
                    exact_places(item)
        return value


class PlanIn(BodyModel):
    """A chosen plan (e.g. from ``flopwise plan train --json``): how long, and what it was estimated to cost.

    Left-out amounts are derived: cost = devices x duration x price per device-hour; energy = devices x TDP x
    duration x PUE (every device busy at full power, an upper bound); FLOPs = devices x peak x duration.
    """

    model_config = ConfigDict(extra="forbid")

    duration_h: Decimal = Field(gt=0, le=Decimal(100_000), description="wall-clock hours of the run")
    flops: float | None = Field(default=None, ge=0, le=1e40, description="total FLOPs of the run")
    cost_usd: Decimal | None = Field(default=None, ge=0, le=Decimal(10) ** 12)
    energy_kwh: float | None = Field(default=None, ge=0, le=1e12)
    co2e_kg: float | None = Field(default=None, ge=0, le=1e12)


class EstimateParams(BodyModel):
    """Parameters the server estimates from: a model and, for training, tokens; for serving, a duration."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="a model of the server's registry, by id or Hugging Face name (never a path on the server)",
    )  # fmt: skip
    config: dict[str, Any] | None = Field(
        default=None,
        description="a Hugging Face config.json, uploaded, for a model the registry does not have",
    )
    tokens: float | None = Field(
        default=None, gt=0, le=1e16, description="training tokens (train, fine-tune)"
    )
    method: Literal["full", "lora", "qlora"] | None = None
    precision: str | None = Field(default=None, max_length=20)
    duration_h: Decimal | None = Field(
        default=None, gt=0, le=Decimal(100_000), description="hours of serving (serve, batch-inference)"
    )
    batch: int = Field(default=1, ge=1, le=100_000)
    input_tokens: int = Field(default=512, ge=1, le=10_000_000)
    output_tokens: int = Field(default=256, ge=1, le=10_000_000)

    @model_validator(mode="after")
    def _model_or_config(self) -> EstimateParams:
        if (self.model is None) == (self.config is None):
            raise ValueError("give exactly one of 'model' (a registry name) or 'config' (a config.json body)")
        return self


class WorkloadIn(BodyModel):
    """What a compute request asks for: the workload, where it runs and either a plan or parameters."""

    model_config = ConfigDict(extra="forbid")

    project_id: int = Field(ge=1, le=MAX_ID)
    workload: Workload
    device: str = Field(
        min_length=1, max_length=120, description="catalog device id or name, e.g. 'h100-sxm'"
    )
    device_count: int = Field(default=1, ge=1, le=1_000_000)
    pricing: Pricing = "on_demand"
    provider: str | None = Field(default=None, max_length=60)
    region: str | None = Field(default=None, max_length=120)
    usd_per_device_h: Decimal | None = Field(
        default=None, ge=0, le=Decimal(1_000_000), description="price override (else the catalog's)"
    )
    data_classification: str = Field(default="internal", min_length=1, max_length=60)
    base_model_flops: float | None = Field(default=None, gt=0, le=1e40)
    plan: PlanIn | None = None
    params: EstimateParams | None = None

    @model_validator(mode="after")
    def _plan_or_params(self) -> WorkloadIn:
        if (self.plan is None) == (self.params is None):
            raise ValueError("give exactly one of 'plan' (a chosen plan) or 'params' (the server estimates)")
        return self


class AdmissionIn(BodyModel):
    """A scheduler job asking to start: its engine and id, and the most it can use."""

    model_config = ConfigDict(extra="forbid")

    engine: str = Field(min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    engine_job_id: str = Field(min_length=1, max_length=200, pattern=r"^[^/\x00]+$")
    project_id: int = Field(ge=1, le=MAX_ID)
    workload: Workload = "train"
    device: str = Field(min_length=1, max_length=120)
    device_count: int = Field(ge=1, le=1_000_000)
    max_duration_h: Decimal = Field(gt=0, le=Decimal(100_000), description="the job's time limit in hours")
    pricing: Pricing = "on_demand"
    provider: str | None = Field(default=None, max_length=60)
    region: str | None = Field(default=None, max_length=120)
    usd_per_device_h: Decimal | None = Field(default=None, ge=0, le=Decimal(1_000_000))
    data_classification: str = Field(default="internal", min_length=1, max_length=60)


@dataclass(frozen=True)
class RequestScope:
    """Who asks, for which project: the names govern's facts, budgets and quotas compare."""

    org_id: int
    org_name: str
    team_id: int
    team_name: str
    project_id: int
    project_name: str
    user_id: int
    user_name: str
    user_team_names: tuple[str, ...]


@dataclass(frozen=True)
class EstimatedFacts:
    facts: govern.RequestFacts
    device: Device
    estimate: dict[str, Any]


@dataclass(frozen=True)
class DecisionResult:
    """What was decided and what was reserved (store reservation ids), with the budgets' store ids."""

    decision: govern.Decision
    outcome: str
    reasons: tuple[str, ...]
    reservation_ids: tuple[int, ...]
    budget_ids: tuple[int, ...]


# ---------------------------------------------------------------------------------------------- helpers


def to_jsonable(value: Any) -> Any:
    """Dataclasses, Decimals (as strings), datetimes (ISO 8601), Fractions and tuples as JSON values."""
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Fraction):
        return str(value)
    if isinstance(value, float) and value != value:  # NaN never reaches JSON
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return to_jsonable(value.item())
    return value


def trace_json(
    decision: govern.Decision, facts: govern.RequestFacts, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """The stored decision trace: outcome, reasons, approvals needed, warnings, the facts and govern's trace."""
    return to_jsonable(
        {
            "outcome": decision.outcome,
            "reasons": decision.reasons,
            "approvals_required": decision.approvals_required,
            "approver_role": decision.approver_role,
            "warnings": decision.warnings,
            "reservations": decision.reservations,
            "facts": facts,
            "trace": decision.trace,
            **extra,
        }
    )


@functools.cache
def _thresholds() -> tuple[govern.Threshold, ...]:
    return govern.load_thresholds()


@functools.lru_cache(maxsize=256)
def _parsed_policy(policy_id: int, yaml_text: str) -> govern.Policy:
    return govern.parse_policy(yaml_text)


def load_scope(session: Session, project_id: int, user_id: int) -> RequestScope:
    """The project's team and organization and the requester's name and teams; 404 for an unknown project."""
    row = session.execute(
        select(Project.id, Project.name, Team.id, Team.name, Organization.id, Organization.name)
        .join(Team, Team.id == Project.team_id)
        .join(Organization, Organization.id == Team.org_id)
        .where(Project.id == project_id)
    ).first()
    if row is None:
        raise ApiError(404, f"project {project_id} not found")
    user = session.get(User, user_id)
    assert user is not None
    team_ids = set(
        session.scalars(
            select(RoleBinding.scope_id).where(
                RoleBinding.user_id == user_id, RoleBinding.scope_kind == "team"
            )
        )
    )
    team_ids.update(
        session.scalars(
            select(Project.team_id)
            .join(RoleBinding, RoleBinding.scope_id == Project.id)
            .where(RoleBinding.user_id == user_id, RoleBinding.scope_kind == "project")
        )
    )
    names = set(session.scalars(select(Team.name).where(Team.id.in_(team_ids)))) if team_ids else set()
    names.add(row[3])
    return RequestScope(
        row[4], row[5], row[2], row[3], row[0], row[1], user.id, user.name, tuple(sorted(names))
    )


def _region_of(catalog: Catalog, name: str | None, field: str = "region") -> Region | None:
    if not name:
        return None
    try:
        return catalog.region(name)
    except InputError:
        raise
    except Exception as err:  # UnknownRegionError: name the field for the 422
        raise InputError(field, name, str(err)) from None


def _device_of(catalog: Catalog, name: str) -> Device:
    try:
        return catalog.device(name)
    except Exception as err:  # UnknownAcceleratorError, with its suggestions
        raise InputError("device", name, str(err)) from None


def _price(
    catalog: Catalog, device: Device, body: WorkloadIn | AdmissionIn, region: Region | None
) -> tuple[Decimal, Region | None, str]:
    """Price per device-hour: the body's override, else the cheapest catalog price of the pricing kind."""
    from flopwise.catalog.pricing import quote_price

    if body.usd_per_device_h is not None:
        return body.usd_per_device_h, region, "given"
    try:
        quote = quote_price(
            catalog.offerings,
            catalog.onprem.get(device.id),
            device.id,
            _CATALOG_PRICING[body.pricing],
            regions=dict(catalog.regions),
            region_id=region.id if region else None,
            provider=body.provider,
        )
    except UnsupportedError as err:
        raise InputError("usd_per_device_h", None, f"{err} Or give usd_per_device_h.") from None
    if quote.onprem is not None:
        from flopwise.estimate.cost import onprem_usd_per_device_h

        # at full power (TDP), the owned device's worst case; the profile's PUE, as the estimator does
        usd_per_h = onprem_usd_per_device_h(quote.onprem, device.tdp_w, quote.onprem.pue)
        return Decimal(repr(float(usd_per_h))).quantize(Decimal("0.0001")), region, quote.describe()
    assert quote.usd_per_device_h is not None
    return quote.usd_per_device_h, region or quote.region, quote.describe()


def _context(body: WorkloadIn | AdmissionIn, scope: RequestScope, region: Region | None) -> dict[str, Any]:
    provider = body.provider or (region.provider if region and region.provider != "country" else "")
    return {
        "provider": provider or "",
        "region": region.id if region else "",
        "pricing": body.pricing,
        "data_classification": body.data_classification,
        "requester": scope.user_name,
        "requester_teams": scope.user_team_names,
        "project": scope.project_name,
        "org": scope.org_name,
    }


def _grid(catalog: Catalog, region: Region | None) -> Region:
    return region or catalog.regions[DEFAULT_REGION]


def request_facts(
    catalog: Catalog, body: WorkloadIn, scope: RequestScope, catalog_dir: str | None
) -> EstimatedFacts:
    """The facts of a compute request, from its chosen plan or estimated from its parameters."""
    device = _device_of(catalog, body.device)
    region = _region_of(catalog, body.region)
    price, region, price_basis = _price(catalog, device, body, region)
    grid = _grid(catalog, region)
    peak = govern.device_peak_flop_per_s(device)
    count = body.device_count
    if body.plan is not None:
        plan = body.plan
        duration_s = float(plan.duration_h) * S_PER_H
        device_hours = count * duration_s / S_PER_H
        cost = plan.cost_usd if plan.cost_usd is not None else Decimal(count) * plan.duration_h * price
        energy = (
            plan.energy_kwh
            if plan.energy_kwh is not None
            else count * device.tdp_w * duration_s * grid.pue / J_PER_KWH
        )
        co2e = plan.co2e_kg if plan.co2e_kg is not None else energy * grid.grid_gco2e_per_kwh / _G_PER_KG
        flops = plan.flops if plan.flops is not None else count * peak * duration_s
        estimate = {"basis": "plan", "price_usd_per_device_h": price, "price": price_basis, "region": grid.id}
    else:
        assert body.params is not None
        flops, duration_s, cost, energy, co2e, estimate = _estimated(
            body, body.params, device, price, grid, catalog_dir
        )
        device_hours = count * duration_s / S_PER_H
        estimate = {**estimate, "price": price_basis}
    facts = govern.RequestFacts(
        workload=body.workload,
        flops=float(flops),
        device_type=device.id,
        device_class=device.kind,
        device_count=count,
        duration_s=float(duration_s),
        device_hours=float(device_hours),
        cost_usd=Decimal(cost),
        energy_kwh=float(energy),
        co2e_kg=float(co2e),
        base_model_flops=body.base_model_flops,
        peak_flop_per_s_per_device=peak,
        **_context(body, scope, region),
    )
    _check_fits(facts)
    return EstimatedFacts(facts, device, to_jsonable(estimate))


#: the largest amount a request may carry in any budget unit (the store keeps money to 6 places in 64 bits)
MAX_AMOUNT = Decimal(10) ** 12


def _check_fits(facts: govern.RequestFacts) -> None:
    for field, value in (
        ("cost_usd", facts.cost_usd),
        ("device_hours", facts.device_hours),
        ("energy_kwh", facts.energy_kwh),
        ("co2e_kg", facts.co2e_kg),
    ):
        if Decimal(repr(value) if isinstance(value, float) else value) >= MAX_AMOUNT:
            raise InputError(
                field, value, f"the request is too large to account for (at most {MAX_AMOUNT:.0e})"
            )


_MODEL_SOURCES = (
    "The server takes a model from its registry by name (`flopwise models list`) or from a config.json uploaded "
    "in params.config; it never opens a path."
)


def _model_of(params: EstimateParams) -> Any:
    """The architecture of *params*: a registry entry by name, or parsed from the uploaded config body.

    Names are only looked up in the registry (``ModelRegistry.resolve``), never opened as files, so a request
    cannot make the server read ``/etc/shadow`` or a 300 MB file.
    """
    from flopwise.models import load_models
    from flopwise.models.hf import parse_hf_config

    if params.config is not None:
        try:
            return parse_hf_config(dict(params.config)).arch
        except Exception as err:  # ConfigError and friends: the uploaded body does not describe a model
            raise InputError("params.config", None, f"is not a usable config.json: {err}") from None
    name = params.model or ""
    try:
        return load_models().resolve(name)
    except Exception as err:  # UnknownModelError, with its suggestions
        raise InputError("params.model", name, f"{err} {_MODEL_SOURCES}") from None


def _estimated(
    body: WorkloadIn,
    params: EstimateParams,
    device: Device,
    price: Decimal,
    grid: Region,
    catalog_dir: str | None,
) -> tuple[float, float, Decimal, float, float, dict[str, Any]]:
    """(flops, duration_s, cost_usd, energy_kwh, co2e_kg, estimate JSON) from the estimator."""
    from flopwise.api import estimate_training

    options: dict[str, Any] = {
        "price_usd_per_device_h": price,
        "grid_gco2e_per_kwh": grid.grid_gco2e_per_kwh,
        "pue": grid.pue,
    }
    if body.workload in ("train", "fine-tune"):
        if params.tokens is None:
            raise InputError("params.tokens", None, f"a {body.workload} request needs the training tokens")
        if params.method:
            options["method"] = params.method
        elif body.workload == "fine-tune":
            options["method"] = "lora"
        if params.precision:
            options["precision"] = params.precision
        report = estimate_training(
            _model_of(params), device, tokens=params.tokens, device_count=body.device_count, catalog_dir=catalog_dir,
            region=grid.id, **options,
        )  # fmt: skip
        est = report.estimate
        if not bool(est.fits):
            raise InputError(
                "params.model",
                params.model,
                f"does not fit in {body.device_count} x {device.id} memory; ask for more or larger devices",
            )
        duration_s = float(est.wall_clock_hours) * S_PER_H
        return (
            float(est.train_flops),
            duration_s,
            Decimal(est.cost_usd),
            float(est.energy_kwh),
            float(est.co2e_kg),
            {"basis": "estimate_training", **report.to_dict()},
        )
    if params.duration_h is None:
        raise InputError("params.duration_h", None, f"a {body.workload} request needs the hours it runs")
    if params.precision:
        options["quant"] = params.precision
    from flopwise.estimate import estimate_serve

    arch = _model_of(params)
    est = estimate_serve(
        arch, device, device_count=body.device_count, batch=params.batch, input_tokens=params.input_tokens,
        output_tokens=params.output_tokens, **options,
    )  # fmt: skip
    if not bool(est.fits):
        raise InputError(
            "params.model", params.model, f"does not fit in {body.device_count} x {device.id} memory"
        )
    hours = params.duration_h
    duration_s = float(hours) * S_PER_H
    cost = Decimal(est.cost_per_hour_usd) * hours
    energy = float(est.power_per_device_w) * body.device_count * float(hours) * grid.pue / _W_PER_KW
    # forward FLOPs: 2 x active parameters per token processed (prompt and generated) over the run
    assumptions = est.assumptions
    requests_per_s = params.batch / float(assumptions["request_batch_s"])
    tokens = requests_per_s * (params.input_tokens + params.output_tokens) * duration_s
    flops = _FORWARD_FLOPS_PER_PARAM_TOKEN * float(assumptions["params_active"]) * tokens
    detail = {
        "basis": "estimate_serve",
        "model": arch.id,
        "device": device.id,
        "region": grid.id,
        **est.to_dict(),
    }
    return flops, duration_s, cost, energy, energy * grid.grid_gco2e_per_kwh / _G_PER_KG, detail


def admission_request_facts(catalog: Catalog, body: AdmissionIn, scope: RequestScope) -> EstimatedFacts:
    """The worst case of a scheduler job: every device busy at full power for the maximum duration."""
    device = _device_of(catalog, body.device)
    region = _region_of(catalog, body.region)
    price, region, price_basis = _price(catalog, device, body, region)
    grid = _grid(catalog, region)
    facts = govern.admission_facts(
        workload=body.workload,
        device_type=device.id,
        device_class=device.kind,
        device_count=body.device_count,
        max_duration_s=float(body.max_duration_h) * S_PER_H,
        usd_per_device_h=price,
        device_power_w=device.tdp_w,
        pue=grid.pue,
        grid_gco2e_per_kwh=grid.grid_gco2e_per_kwh,
        peak_flop_per_s_per_device=govern.device_peak_flop_per_s(device),
        **_context(body, scope, region),
    )
    estimate = {"basis": "admission worst case", "price_usd_per_device_h": price, "price": price_basis}
    _check_fits(facts)
    return EstimatedFacts(facts, device, to_jsonable({**estimate, "region": grid.id}))


# ---------------------------------------------------------------------------------------------- deciding


def _scope_names(scope: RequestScope | None) -> dict[str, str]:
    # govern compares a budget's or quota's scope_id with the request's org / team / project names (the ones
    # policies read too); the store has already picked the rows covering the project, so each gets its name
    if scope is None:
        return {"org": "-", "team": "-", "project": "-"}
    return {"org": scope.org_name, "team": scope.team_name, "project": scope.project_name}


def _govern_budget(budget: Budget, scope: RequestScope | None = None) -> govern.Budget:
    custom = budget.period == "custom"
    alerts = tuple(Decimal(str(a)) for a in budget.alert_thresholds or ())
    return govern.Budget(
        id=str(budget.id),
        scope_kind=budget.scope_kind,
        scope_id=_scope_names(scope)[budget.scope_kind],
        period=budget.period,
        unit=budget.unit,
        amount=budget.amount,
        is_hard=budget.is_hard,
        alerts_frac=alerts or govern.budget.DEFAULT_ALERTS_FRAC,
        window_start=budget.window_start if custom else None,
        window_end=budget.window_end if custom else None,
        name=budget.name,
    )


def window_for(budget: Budget, now: datetime) -> tuple[datetime, datetime] | None:
    """The window of *budget* containing *now*, or None when *now* is outside its outer limits."""
    if budget.window_start is not None and now < budget.window_start:
        return None
    if budget.window_end is not None and now >= budget.window_end:
        return None
    if budget.period == "custom":
        return budget.window_start, budget.window_end  # type: ignore[return-value]
    return govern.budget_window(_govern_budget(budget), now)


def budget_usage(
    session: Session, budget_id: int, window: tuple[datetime, datetime], budget: Budget | None = None
) -> govern.BudgetUsage:
    """Reserved, committed and settled amounts of a budget whose ``counted_at`` falls in *window*; metered usage in
    the budget's scope that no reservation holds (``meter.burn.metered_unreserved``) counts as settled, so budgets
    burn by actuals too. Credits in the ledger lower the settled amount down to zero at most."""
    from flopwise.meter.burn import metered_unreserved

    rows = session.execute(
        select(BudgetReservation.state, func.sum(BudgetReservation.amount))
        .where(
            BudgetReservation.budget_id == budget_id,
            BudgetReservation.state.in_(("reserved", "committed", "settled")),
            BudgetReservation.counted_at >= window[0],
            BudgetReservation.counted_at < window[1],
        )
        .group_by(BudgetReservation.state)
    ).all()
    by_state = {state: to_money(total) for state, total in rows if total is not None}
    metered = metered_unreserved(
        session, budget if budget is not None else session.get(Budget, budget_id), window
    )
    # credits (negative ledger amounts) lower what was settled, never below zero: a budget cannot be "un-used"
    settled = max(by_state.get("settled", Decimal(0)) + metered, Decimal(0))
    return govern.BudgetUsage(
        reserved=by_state.get("reserved", Decimal(0)),
        committed=by_state.get("committed", Decimal(0)),
        settled=settled,
    )


def _quota_states(
    session: Session,
    catalog: Catalog,
    scope: RequestScope,
    now: datetime,
    exclude: tuple[int | None, int | None],
    *,
    lock: bool = True,
) -> list[govern.QuotaState]:
    stmt = select(Quota).where(
        ((Quota.scope_kind == "org") & (Quota.scope_id == scope.org_id))
        | ((Quota.scope_kind == "team") & (Quota.scope_id == scope.team_id))
        | ((Quota.scope_kind == "project") & (Quota.scope_id == scope.project_id))
    )
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    quotas = list(session.scalars(stmt.order_by(Quota.id)))
    if not quotas:
        return []
    held = _devices_held(session, catalog, scope, now, exclude)
    out = []
    for quota in quotas:
        gq = govern.Quota(
            id=str(quota.id),
            scope_kind=quota.scope_kind,
            scope_id=_scope_names(scope)[quota.scope_kind],
            max_devices=quota.max_concurrent_devices,
            device_type=quota.device if quota.match_on == "device_type" else "",
            device_class=quota.device if quota.match_on == "device_class" else "",
        )
        in_use = Decimal(0)
        for (kind_ids, device_type, device_class), count in held.items():
            if not _in_scope(quota.scope_kind, kind_ids, scope):
                continue
            target = device_type if quota.match_on == "device_type" else device_class
            if fnmatch.fnmatchcase(target, quota.device):
                in_use += count
        out.append(govern.QuotaState(gq, in_use))
    return out


def _in_scope(kind: str, ids: tuple[int, int], scope: RequestScope) -> bool:
    team_id, project_id = ids
    if kind == "org":
        return True
    if kind == "team":
        return team_id == scope.team_id
    return project_id == scope.project_id


def _devices_held(
    session: Session,
    catalog: Catalog,
    scope: RequestScope,
    now: datetime,
    exclude: tuple[int | None, int | None],
) -> dict[tuple[tuple[int, int], str, str], Decimal]:
    """Devices held now in the organization, by (team, project), device type and class.

    A pending or approved request holds its devices from its creation for its duration; an admitted or
    committed admission job holds them until it is released or settled.
    """
    held: dict[tuple[tuple[int, int], str, str], Decimal] = {}

    def add(team_id: int, project_id: int, device_type: str | None, count: int) -> None:
        if not device_type:
            return
        device = catalog.devices.get(device_type)
        key = ((team_id, project_id), device_type, device.kind if device else "")
        held[key] = held.get(key, Decimal(0)) + Decimal(count)

    requests = session.execute(
        select(ComputeRequest.id, ComputeRequest.device_type, ComputeRequest.device_count,
               ComputeRequest.created_at, ComputeRequest.duration_h, Project.team_id, Project.id)
        .join(Project, Project.id == ComputeRequest.project_id)
        .where(ComputeRequest.org_id == scope.org_id, ComputeRequest.state.in_(("pending", "approved")))
    ).all()  # fmt: skip
    for request_id, device_type, count, created_at, duration_h, team_id, project_id in requests:
        if request_id == exclude[0]:
            continue
        if duration_h is not None and created_at + timedelta(hours=float(duration_h)) <= now:
            continue
        add(team_id, project_id, device_type, count)
    jobs = session.execute(
        select(AdmissionJob.id, AdmissionJob.device_type, AdmissionJob.device_count, Project.team_id, Project.id)
        .join(Project, Project.id == AdmissionJob.project_id)
        .where(AdmissionJob.org_id == scope.org_id, AdmissionJob.state.in_(("admitted", "committed")))
    ).all()  # fmt: skip
    for job_id, device_type, count, team_id, project_id in jobs:
        if job_id != exclude[1]:
            add(team_id, project_id, device_type, count)
    return held


def current_policies(session: Session, org_id: int) -> list[Policy]:
    """The latest version of each named policy of the organization, enabled ones only, by name."""
    latest = (
        select(Policy.name, func.max(Policy.version).label("version"))
        .where(Policy.org_id == org_id)
        .group_by(Policy.name)
        .subquery()
    )
    rows = session.scalars(
        select(Policy)
        .join(latest, (Policy.name == latest.c.name) & (Policy.version == latest.c.version))
        .where(Policy.org_id == org_id)
        .order_by(Policy.name)
    )
    return [p for p in rows if p.is_enabled]


@dataclass(frozen=True)
class Decided:
    """A decision and what it needs reserved, before anything is reserved (see :func:`decide`)."""

    decision: govern.Decision
    outcome: str
    reasons: tuple[str, ...]
    windows: dict[int, tuple[datetime, datetime]]


def has_quotas(session: Session, scope: RequestScope) -> bool:
    """Whether any quota covers the project (then the decision is taken under the quota locks)."""
    return (
        session.scalar(
            select(Quota.id)
            .where(
                ((Quota.scope_kind == "org") & (Quota.scope_id == scope.org_id))
                | ((Quota.scope_kind == "team") & (Quota.scope_id == scope.team_id))
                | ((Quota.scope_kind == "project") & (Quota.scope_id == scope.project_id))
            )
            .limit(1)
        )
        is not None
    )


def decide(
    session: Session,
    catalog: Catalog,
    estimated: EstimatedFacts,
    scope: RequestScope,
    now: datetime,
    *,
    lock: bool,
    exclude: tuple[int | None, int | None] = (None, None),
) -> Decided:
    """Decide *estimated*: budgets' usage in their current windows, quotas and the devices held, the acceptable
    use policy, the organization's policies and the regulatory thresholds, through :func:`flopwise.govern.decide`.

    ``lock=False`` reads without locks (a read transaction, before the write one, for a project no quota
    covers: :func:`has_quotas`): :func:`reserve` re-checks
    every hard budget under its row lock, so a decision taken on usage that moved meanwhile can only turn into a
    deny, never an overspend. ``lock=True`` (needed when quotas cover the project: the devices held must not
    move before the job is counted) locks the budgets, then the quotas, in the caller's write transaction.
    """
    facts = estimated.facts
    covering = budgets_covering(session, scope.project_id)
    if lock and covering:
        covering = lock_budgets(session, [b.id for b in covering])
    states: list[govern.BudgetState] = []
    windows: dict[int, tuple[datetime, datetime]] = {}
    for budget in covering:
        window = window_for(budget, now)
        if window is None:
            continue
        windows[budget.id] = window
        states.append(
            govern.BudgetState(
                _govern_budget(budget, scope), budget_usage(session, budget.id, window, budget)
            )
        )
    # without the locks the caller has checked has_quotas() first: no quota covers the project
    quotas = _quota_states(session, catalog, scope, now, exclude, lock=lock) if lock else []
    is_accepted, aup_version = aup_status(session, scope.org_id, scope.user_id)
    policies = [_parsed_policy(p.id, p.yaml_text) for p in current_policies(session, scope.org_id)]
    decision = govern.decide(
        facts, policies, states, quotas, _thresholds(), is_accepted, now, device=estimated.device
    )
    reasons = decision.reasons
    if aup_version is not None and not is_accepted:
        reasons = tuple(
            r.replace("the current acceptable-use policy", f"acceptable-use policy version {aup_version}")
            for r in reasons
        )
    return Decided(decision, decision.outcome, reasons, windows)


def reserve(
    session: Session,
    decided: Decided,
    now: datetime,
    *,
    request_id: int | None = None,
    admission_job_id: int | None = None,
) -> DecisionResult:
    """Reserve what *decided* needs, in the caller's write transaction: the budget rows are locked (ascending id)
    and each hard budget's spent sum is read again under the lock, so concurrent callers reserve one after the
    other and a hard budget is never overspent. A reservation the store refuses turns the outcome into deny."""
    decision, outcome, reasons = decided.decision, decided.outcome, decided.reasons
    reservation_ids: tuple[int, ...] = ()
    if outcome != "deny" and decision.reservations:
        result = reserve_against_budgets(
            session,
            [int(r.budget_id) for r in decision.reservations],
            [r.amount for r in decision.reservations],
            request_id=request_id,
            admission_job_id=admission_job_id,
            counted_at=now,
            window_for=lambda b: decided.windows.get(b.id),
        )
        if not result.ok:
            outcome = "deny"
            reasons = tuple(
                f"budget {c.budget_id} is hard: {c.amount} {c.unit} needed, {c.limit - c.spent_before} remains"
                for c in result.refused
            )
        else:
            reservation_ids = result.reservation_ids
    return DecisionResult(decision, outcome, reasons, reservation_ids, tuple(decided.windows))


def decide_and_reserve(
    session: Session,
    catalog: Catalog,
    estimated: EstimatedFacts,
    scope: RequestScope,
    now: datetime,
    *,
    request_id: int | None = None,
    admission_job_id: int | None = None,
) -> DecisionResult:
    """:func:`decide` under the locks and :func:`reserve`, in the caller's one write transaction."""
    decided = decide(
        session, catalog, estimated, scope, now, lock=True, exclude=(request_id, admission_job_id)
    )
    return reserve(session, decided, now, request_id=request_id, admission_job_id=admission_job_id)


def audit(
    session: Session,
    principal: Any,
    action: str,
    payload: Mapping[str, Any],
    now: datetime,
    org_id: int | None,
) -> None:
    """Append one audit entry (actor ``user:<id>``, or ``system`` when *principal* is None)."""
    from flopwise.server.api.audit import record_audit

    actor = "system" if principal is None else f"user:{principal.user_id}"
    record_audit(session, actor=actor, action=action, payload=to_jsonable(payload), at=now, org_id=org_id)
