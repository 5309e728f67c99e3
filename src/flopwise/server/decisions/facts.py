"""From a request body to :class:`flopwise.govern.RequestFacts`: the requester's scope, the device, price and
grid from the catalog, and a chosen plan or the server's own estimate (registry models or an uploaded config)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from flopwise import govern, money, vocab
from flopwise.catalog import Catalog
from flopwise.catalog.types import Device, Region
from flopwise.errors import InputError, UnsupportedError
from flopwise.server.decisions.inputs import (
    MAX_AMOUNT,
    AdmissionIn,
    EstimateParams,
    WorkloadIn,
)
from flopwise.server.errors import ApiError
from flopwise.store import (
    Organization,
    Project,
    RoleBinding,
    Team,
    User,
)
from flopwise.units import G_PER_KG, J_PER_KWH, PRICE_STEP, S_PER_H, W_PER_KW

__all__ = [
    "EstimatedFacts",
    "DEFAULT_REGION",
    "RequestScope",
    "admission_request_facts",
    "authorized_scope",
    "scope_of_row",
    "load_scope",
    "request_facts",
    "to_jsonable",
]

#: the grid used when neither the request nor its price says where the work runs (as ``flopwise.api``)
DEFAULT_REGION = "country:US"
#: FLOPs of one forward pass per parameter per token (2N, Kaplan et al. 2020, https://arxiv.org/abs/2001.08361)
_FORWARD_FLOPS_PER_PARAM_TOKEN = 2.0


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
    """The facts policy decides on, the estimate shown, and the unit price it was made at (USD per device-hour,
    with the retrieval date of the catalog row it came from; None when the caller gave the price)."""

    facts: govern.RequestFacts
    device: Device
    estimate: dict[str, Any]
    usd_per_device_h: Decimal | None = None
    price_retrieved: str | None = None


_PLAIN = frozenset({str, int, bool, type(None)})
#: dataclass type -> its field names (``dataclasses.fields`` is slow to ask on every value of every trace)
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
#: type -> how its values become JSON values, learned on first sight (one dict lookup per value after that)
_CONVERTERS: dict[type, Any] = {}


def to_jsonable(value: Any) -> Any:
    """Dataclasses, Decimals (as strings), datetimes (ISO 8601), Fractions and tuples as JSON values.

    Dataclasses are walked field by field (as ``dataclasses.asdict``, without its deep copies: this runs on
    every decision trace of the write path); each type's conversion is looked up once per type, not found by a
    chain of ``isinstance`` checks per value."""
    convert = _CONVERTERS.get(type(value))
    if convert is None:
        convert = _converter(type(value), value)
    return convert(value)


def _same(value: Any) -> Any:
    return value


def _finite_float(value: float) -> float | None:
    return None if value != value else value  # NaN never reaches JSON


def _mapping(value: Any) -> dict[str, Any]:
    return {str(k): to_jsonable(v) for k, v in value.items()}


def _sequence(value: Any) -> list[Any]:
    return [to_jsonable(v) for v in value]


def _dataclass(names: tuple[str, ...]) -> Any:
    def convert(value: Any) -> dict[str, Any]:
        return {name: to_jsonable(getattr(value, name)) for name in names}

    return convert


def _other(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return to_jsonable(value.item())
    return value


def _converter(kind: type, value: Any) -> Any:
    """The conversion of values of type *kind* (*value* one of them), remembered for the next ones."""
    convert: Any
    if kind in _PLAIN:
        convert = _same
    elif kind is float:
        convert = _finite_float
    elif is_dataclass(value) and not isinstance(value, type):
        names = _FIELD_NAMES[kind] = tuple(f.name for f in fields(value))
        convert = _dataclass(names)
    elif isinstance(value, Mapping):
        convert = _mapping
    elif isinstance(value, (list, tuple, set, frozenset)):
        convert = _sequence
    elif isinstance(value, (Decimal, Fraction)):
        convert = str
    elif isinstance(value, (datetime, date)):
        convert = kind.isoformat
    else:
        return _other  # not remembered: numpy scalars and the unexpected are checked each time
    _CONVERTERS[kind] = convert
    return convert


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


def _scope_query() -> Any:
    return (
        select(Project.id, Project.name, Team.id, Team.name, Organization.id, Organization.name)
        .join(Team, Team.id == Project.team_id)
        .join(Organization, Organization.id == Team.org_id)
        .where(Project.id == bindparam("project_id"))
    )


def _team_names_query() -> Any:
    bound_projects = select(Project.team_id).where(Project.id.in_(bindparam("project_ids", expanding=True)))
    return select(Team.name).where(
        Team.id.in_(bindparam("team_ids", expanding=True)) | Team.id.in_(bound_projects.scalar_subquery())
    )


_SCOPE_QUERY = _scope_query()
_TEAM_NAMES_QUERY = _team_names_query()


def authorized_scope(session: Session, principal: Any, project_id: int, min_role: str) -> RequestScope:
    """:func:`flopwise.server.auth.authorize` (``project``) and :func:`load_scope` in one statement: the project,
    its team and organization joined, the caller's role read from its bindings (already loaded with the
    principal), and its teams' names in a second statement only when it holds roles on teams or projects.

    The same answers as the two: 404 for a project that does not exist or is in another organization, 403
    naming the role needed when the caller's role is too weak.
    """
    # Core statements on the session's connection: no ORM execution machinery on the hot path
    row = session.connection().execute(_SCOPE_QUERY, {"project_id": project_id}).first()
    return scope_of_row(session, principal, project_id, min_role, row)


def scope_of_row(session: Session, principal: Any, project_id: int, min_role: str, row: Any) -> RequestScope:
    """:func:`authorized_scope` from the row of its statement (project id and name, team id and name,
    organization id and name; None when the project does not exist), read by the caller, maybe with more
    columns (``flopwise.server.decisions.deciding.scope_and_context``)."""
    from flopwise.server.auth import ROLE_RANK

    if row is None or row[4] != principal.org_id:
        raise ApiError(404, f"project {project_id} not found")
    role = principal.best_role([("project", row[0]), ("team", row[2]), ("org", row[4])])
    if role is None or ROLE_RANK[role] < ROLE_RANK[min_role]:
        raise ApiError(403, f"needs role {min_role!r} on project {project_id}; you have {role or 'no role'}")
    team_ids = sorted({sid for _r, kind, sid in principal.bindings if kind == "team"})
    project_ids = sorted({sid for _r, kind, sid in principal.bindings if kind == "project"})
    names = {row[3]}
    if team_ids or project_ids:
        names.update(
            session.connection().scalars(
                _TEAM_NAMES_QUERY, {"team_ids": team_ids, "project_ids": project_ids}
            )
        )
    return RequestScope(
        row[4], row[5], row[2], row[3], row[0], row[1], principal.user_id, principal.user_name,
        tuple(sorted(names)),
    )  # fmt: skip


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
) -> tuple[Decimal, Region | None, str, str | None]:
    """Price per device-hour: the body's override, else the cheapest catalog price of the pricing kind; with the
    region, the price's description and the retrieval date of the catalog row it came from (None when given)."""
    from flopwise.catalog.pricing import quote_price

    if body.usd_per_device_h is not None:
        return body.usd_per_device_h, region, "given", None
    try:
        quote = quote_price(
            catalog.offerings,
            catalog.onprem.get(device.id),
            device.id,
            body.pricing,
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
        price = money.from_float(usd_per_h, "usd_per_device_h", PRICE_STEP)
        return price, region, quote.describe(), quote.onprem.retrieved or None
    assert quote.usd_per_device_h is not None and quote.offering is not None
    return quote.usd_per_device_h, region or quote.region, quote.describe(), quote.offering.retrieved or None


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
    price, region, price_basis, retrieved = _price(catalog, device, body, region)
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
        co2e = plan.co2e_kg if plan.co2e_kg is not None else energy * grid.grid_gco2e_per_kwh / G_PER_KG
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
    return EstimatedFacts(facts, device, to_jsonable(estimate), price, retrieved)


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
    if body.workload in vocab.TRAINING_WORKLOADS:
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
    energy = float(est.power_per_device_w) * body.device_count * float(hours) * grid.pue / W_PER_KW
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
    return flops, duration_s, cost, energy, energy * grid.grid_gco2e_per_kwh / G_PER_KG, detail


def admission_request_facts(catalog: Catalog, body: AdmissionIn, scope: RequestScope) -> EstimatedFacts:
    """The worst case of a scheduler job: every device busy at full power for the maximum duration."""
    device = _device_of(catalog, body.device)
    region = _region_of(catalog, body.region)
    price, region, price_basis, retrieved = _price(catalog, device, body, region)
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
    return EstimatedFacts(facts, device, to_jsonable({**estimate, "region": grid.id}), price, retrieved)
