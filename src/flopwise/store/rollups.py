"""Pre-aggregated usage: the ledger summed per UTC hour (and per UTC day) x scope x user x device x
provider/region x service x source x charge category x request (migration ``0008_rollups``), so reports, the
dashboard and budget draw-down over millions of ledger rows read thousands of rollup rows instead.

**Tables.** ``usage_rollups`` holds one row per bucket: the hour (``charge_period_start`` truncated to the UTC
hour); the keys reports and the usage explorer group and filter by (organization, team, project, user, device,
provider, region, service category, FOCUS ServiceName and ChargeCategory, sub-account, source) and the compute
request (budget draw-down leaves out the requests a budget holds); the sums of every measure they report, the
utilization histogram's deciles included as summed columns. Money keeps the ledger's exact ``Money`` type
(``NUMERIC(20, 6)`` on PostgreSQL, integer micro-dollars on SQLite), so sums of sums are exact.
``usage_rollups_daily`` is the same summed per UTC day and over users (``x_user`` NULL), recomputed from the
hourly buckets. ``usage_rollup_dirty`` lists the hours whose ledger rows changed since their buckets were
computed.

**Kept current.** Database triggers on ``usage_records`` mark the hour of every updated (old and new hour) and
deleted row in ``usage_rollup_dirty`` - whichever path wrote it: a restatement, attribution, an undone run, the
usage API, or SQL by hand. On PostgreSQL inserts are marked the same way; the triggers are statement-level, over
the transition tables (one ``INSERT ... SELECT DISTINCT`` per statement, ``COPY`` included). On SQLite the row
triggers add an hour once, and inserted rows are found by id above the mark in ``usage_rollup_state`` (one
writer at a time, so ids grow in commit order; an insert trigger would inflate the connection's change count,
which ingestion reads to count what it inserted). :func:`refresh_rollups`, called by the post-ingest step
(:func:`flopwise.meter.burn.apply_actuals`), recomputes exactly the buckets of the dirty hours (and of any
*windows* it is given) from the ledger, set-based: one ``DELETE`` and one ``INSERT ... SELECT ... GROUP BY``
per run of nearby hours, then their days from the hours. It is idempotent, serialized (a PostgreSQL advisory
lock; SQLite's single writer), and a restated row that moved to another hour changes both buckets.

**Read.** :func:`choose_rollup` picks the table that answers a window exactly: the daily one for whole UTC days
without a user key, the hourly one for whole UTC hours; none with ``--as-of``, a window off the hour, or a dirty
hour inside it. Then the reader falls back to the ledger and says why in its answer's ``notes``; the answers are
the same either way (tests hold them equal, money exactly).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Index,
    Integer,
    String,
    case,
    delete,
    exists,
    func,
    literal,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from flopwise.store.ledger import UsageRecordRow
from flopwise.store.models import Base
from flopwise.store.totals import has_edges, window_params
from flopwise.store.types import Money, UTCDateTime, to_money

__all__ = [
    "HOUR",
    "UTIL_BINS",
    "UsageRollup",
    "UsageRollupDaily",
    "UsageRollupDirty",
    "UsageRollupState",
    "rebuild_rollups",
    "refresh_rollups",
    "choose_rollup",
    "rollup_coverage",
    "scope_sum",
    "rollup_keys",
    "trigger_ddl",
]

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
#: the utilization histogram's bins kept in the rollups (deciles: 0-10 %, ..., 90-100 %)
UTIL_BINS = 10
#: hours apart that one refresh statement still spans (recomputing a clean hour in between is exact, and cheaper
#: than another statement)
_MERGE_GAP = timedelta(hours=24)
#: key of the PostgreSQL advisory lock that serializes refreshes (two refreshers of one hour would double it)
_LOCK_KEY = 7_320_051_907
_ZERO = to_money(0)
U = UsageRecordRow


class _RollupColumns:
    """The columns of both rollup tables: the bucket's start and keys, then the sums (never NULL)."""

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    #: the bucket's start: a UTC hour (``usage_rollups``) or a UTC midnight (``usage_rollups_daily``)
    hour: Mapped[datetime] = mapped_column(UTCDateTime())
    org_id: Mapped[int | None] = mapped_column(Integer)
    team_id: Mapped[int | None] = mapped_column(Integer)
    project_id: Mapped[int | None] = mapped_column(Integer)
    #: the ledger's x_user; always NULL in ``usage_rollups_daily``, which sums over users
    x_user: Mapped[str | None] = mapped_column(String(200))
    x_device_type: Mapped[str | None] = mapped_column(String(200))
    provider_name: Mapped[str | None] = mapped_column(String(200))
    region_id: Mapped[str | None] = mapped_column(String(200))
    service_category: Mapped[str | None] = mapped_column(String(100))
    service_name: Mapped[str | None] = mapped_column(String(200))
    charge_category: Mapped[str | None] = mapped_column(String(100))
    x_account: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(32))
    #: the compute request the usage belongs to (budget draw-down leaves out the requests a budget holds)
    request_id: Mapped[int | None] = mapped_column(Integer)
    records: Mapped[int] = mapped_column(BigInteger)
    costed_records: Mapped[int] = mapped_column(BigInteger)
    no_grid_records: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[Decimal] = mapped_column(Money())
    billed_cost: Mapped[Decimal] = mapped_column(Money())
    effective_cost: Mapped[Decimal] = mapped_column(Money())
    idle_cost_usd: Mapped[Decimal] = mapped_column(Money())
    device_hours: Mapped[float] = mapped_column(Float)
    idle_device_hours: Mapped[float] = mapped_column(Float)
    energy_kwh: Mapped[float] = mapped_column(Float)
    measured_energy_kwh: Mapped[float] = mapped_column(Float)
    co2e_kg: Mapped[float] = mapped_column(Float)
    util_hours: Mapped[float] = mapped_column(Float)
    busy_hours: Mapped[float] = mapped_column(Float)
    energy_no_grid_kwh: Mapped[float] = mapped_column(Float)
    # the utilization histogram: device-hours and records of the rows whose GPU utilization is in decile i
    util_d0_hours: Mapped[float] = mapped_column(Float)
    util_d1_hours: Mapped[float] = mapped_column(Float)
    util_d2_hours: Mapped[float] = mapped_column(Float)
    util_d3_hours: Mapped[float] = mapped_column(Float)
    util_d4_hours: Mapped[float] = mapped_column(Float)
    util_d5_hours: Mapped[float] = mapped_column(Float)
    util_d6_hours: Mapped[float] = mapped_column(Float)
    util_d7_hours: Mapped[float] = mapped_column(Float)
    util_d8_hours: Mapped[float] = mapped_column(Float)
    util_d9_hours: Mapped[float] = mapped_column(Float)
    util_d0_records: Mapped[int] = mapped_column(BigInteger)
    util_d1_records: Mapped[int] = mapped_column(BigInteger)
    util_d2_records: Mapped[int] = mapped_column(BigInteger)
    util_d3_records: Mapped[int] = mapped_column(BigInteger)
    util_d4_records: Mapped[int] = mapped_column(BigInteger)
    util_d5_records: Mapped[int] = mapped_column(BigInteger)
    util_d6_records: Mapped[int] = mapped_column(BigInteger)
    util_d7_records: Mapped[int] = mapped_column(BigInteger)
    util_d8_records: Mapped[int] = mapped_column(BigInteger)
    util_d9_records: Mapped[int] = mapped_column(BigInteger)


class UsageRollup(_RollupColumns, Base):
    """The ledger's sums for one bucket: UTC hour x keys (see the module docstring). NULL keys are NULL in the
    ledger."""

    __tablename__ = "usage_rollups"
    __table_args__ = (Index(None, "hour"), Index(None, "org_id", "hour"))


class UsageRollupDaily(_RollupColumns, Base):
    """``usage_rollups`` summed per UTC day and over users (``x_user`` NULL): what reports and pages read when
    their window is whole days and they neither group nor filter by user (24x fewer rows, and fewer again)."""

    __tablename__ = "usage_rollups_daily"
    __table_args__ = (Index(None, "hour"), Index(None, "org_id", "hour"))


class UsageRollupDirty(Base):
    """An hour whose ledger rows changed after its rollup buckets were computed (written by triggers)."""

    __tablename__ = "usage_rollup_dirty"
    __table_args__ = (Index(None, "hour"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime())


class UsageRollupState(Base):
    """SQLite only: the largest ``usage_records.id`` the rollups have absorbed (one row, ``id`` 1). New rows are
    found by id there (one writer at a time, so ids grow in commit order), because an insert trigger would add to
    the connection's change count that ingestion reads to count the rows it inserted."""

    __tablename__ = "usage_rollup_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ledger_id_seen: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))


R = UsageRollup
RD = UsageRollupDaily
D = UsageRollupDirty
S = UsageRollupState

#: ledger columns whose change moves a row between buckets or changes a bucket's sums (SQLite's UPDATE OF list)
_WATCHED = (
    "charge_period_start", "org_id", "team_id", "project_id", "x_user", "x_device_type", "provider_name",
    "region_id", "service_category", "x_extra", "x_account", "source", "x_gpu_utilization", "cost_usd",
    "billed_cost", "effective_cost", "idle_cost_usd", "x_device_hours", "idle_device_hours", "x_energy_kwh",
    "energy_basis", "x_co2e_kg", "request_id",
)  # fmt: skip


def trigger_ddl(dialect: str) -> tuple[list[str], list[str]]:
    """(statements that create the triggers marking dirty hours, statements that drop them) for *dialect*."""
    if dialect == "postgresql":
        hour = "date_trunc('hour', charge_period_start, 'UTC')"
        create = [
            f"""CREATE FUNCTION usage_rollup_mark_new() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO usage_rollup_dirty (hour) SELECT DISTINCT {hour} FROM new_rows;
  RETURN NULL;
END $$""",
            f"""CREATE FUNCTION usage_rollup_mark_old() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO usage_rollup_dirty (hour) SELECT DISTINCT {hour} FROM old_rows;
  RETURN NULL;
END $$""",
            f"""CREATE FUNCTION usage_rollup_mark_both() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO usage_rollup_dirty (hour)
    SELECT {hour} FROM new_rows UNION SELECT {hour} FROM old_rows;
  RETURN NULL;
END $$""",
            "CREATE TRIGGER usage_rollup_ins AFTER INSERT ON usage_records REFERENCING NEW TABLE AS new_rows "
            "FOR EACH STATEMENT EXECUTE FUNCTION usage_rollup_mark_new()",
            "CREATE TRIGGER usage_rollup_del AFTER DELETE ON usage_records REFERENCING OLD TABLE AS old_rows "
            "FOR EACH STATEMENT EXECUTE FUNCTION usage_rollup_mark_old()",
            "CREATE TRIGGER usage_rollup_upd AFTER UPDATE ON usage_records "
            "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
            "FOR EACH STATEMENT EXECUTE FUNCTION usage_rollup_mark_both()",
        ]
        drop = [
            "DROP TRIGGER IF EXISTS usage_rollup_ins ON usage_records",
            "DROP TRIGGER IF EXISTS usage_rollup_del ON usage_records",
            "DROP TRIGGER IF EXISTS usage_rollup_upd ON usage_records",
            "DROP FUNCTION IF EXISTS usage_rollup_mark_new()",
            "DROP FUNCTION IF EXISTS usage_rollup_mark_old()",
            "DROP FUNCTION IF EXISTS usage_rollup_mark_both()",
        ]
        return create, drop

    def mark(row: str) -> str:  # SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC): the hour is a text prefix
        h = f"substr({row}.charge_period_start, 1, 13) || ':00:00.000000'"
        return (
            f"INSERT INTO usage_rollup_dirty (hour) SELECT {h} "
            f"WHERE NOT EXISTS (SELECT 1 FROM usage_rollup_dirty WHERE hour = {h});"
        )

    # no insert trigger on SQLite (see UsageRollupState); a delete moves the id mark back below the deleted row,
    # so an id SQLite hands out again (it reuses the largest ids once deleted) is seen as new
    create = [
        "CREATE TRIGGER usage_rollup_del AFTER DELETE ON usage_records BEGIN "
        f"{mark('OLD')} UPDATE usage_rollup_state SET ledger_id_seen = OLD.id - 1 WHERE ledger_id_seen >= OLD.id; "
        "END",
        f"CREATE TRIGGER usage_rollup_upd AFTER UPDATE OF {', '.join(_WATCHED)} ON usage_records "
        f"BEGIN {mark('OLD')} {mark('NEW')} END",
    ]
    drop = [f"DROP TRIGGER IF EXISTS usage_rollup_{k}" for k in ("del", "upd")]
    return create, drop


def _hour_of(session: Session) -> ColumnElement[Any]:
    """``charge_period_start`` truncated to its UTC hour, stored the way ``UTCDateTime`` stores times."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc("hour", U.charge_period_start, "UTC")
    return func.substr(U.charge_period_start, 1, 13).concat(":00:00.000000")


def _util_bin(session: Session) -> ColumnElement[Any]:
    """The utilization decile (0-9) as :func:`flopwise.store.explore.utilization_histogram` bins it; NULL when
    the row reports no utilization."""
    if session.get_bind().dialect.name == "postgresql":
        util = func.least(func.greatest(U.x_gpu_utilization, 0.0), 1.0)
        index: ColumnElement[Any] = func.least(func.floor(util * UTIL_BINS), UTIL_BINS - 1)
    else:
        util = func.min(func.max(U.x_gpu_utilization, 0.0), 1.0)
        index = func.min(func.cast(util * UTIL_BINS, Integer), UTIL_BINS - 1)
    return case((U.x_gpu_utilization.is_(None), None), else_=index)  # PostgreSQL's GREATEST skips NULLs


def rollup_keys(session: Session) -> dict[str, ColumnElement[Any]]:
    """Rollup key column name -> the ledger expression it groups by."""
    return {
        "hour": _hour_of(session),
        "org_id": U.org_id,
        "team_id": U.team_id,
        "project_id": U.project_id,
        "x_user": U.x_user,
        "x_device_type": U.x_device_type,
        "provider_name": U.provider_name,
        "region_id": U.region_id,
        "service_category": U.service_category,
        "service_name": U.x_extra["ServiceName"].as_string(),
        "charge_category": U.x_extra["ChargeCategory"].as_string(),
        "x_account": U.x_account,
        "source": U.source,
        "request_id": U.request_id,
    }


def _measures(session: Session) -> dict[str, ColumnElement[Any]]:
    """Rollup measure column name -> its sum over the ledger rows of a bucket (never NULL)."""
    util_known = U.x_gpu_utilization.is_not(None) & U.x_device_hours.is_not(None)
    no_grid = U.x_co2e_kg.is_(None) & U.x_energy_kwh.is_not(None)
    return {
        "records": func.count(),
        "costed_records": func.count(U.cost_usd),
        "no_grid_records": func.count(case((no_grid, 1))),
        "cost_usd": func.coalesce(func.sum(U.cost_usd), _ZERO),
        "billed_cost": func.coalesce(func.sum(U.billed_cost), _ZERO),
        "effective_cost": func.coalesce(func.sum(U.effective_cost), _ZERO),
        "idle_cost_usd": func.coalesce(func.sum(U.idle_cost_usd), _ZERO),
        "device_hours": func.coalesce(func.sum(U.x_device_hours), 0.0),
        "idle_device_hours": func.coalesce(func.sum(U.idle_device_hours), 0.0),
        "energy_kwh": func.coalesce(func.sum(U.x_energy_kwh), 0.0),
        "measured_energy_kwh": func.coalesce(
            func.sum(case((U.energy_basis == "measured", U.x_energy_kwh), else_=0.0)), 0.0
        ),
        "co2e_kg": func.coalesce(func.sum(U.x_co2e_kg), 0.0),
        "util_hours": func.coalesce(func.sum(case((util_known, U.x_device_hours), else_=0.0)), 0.0),
        "busy_hours": func.coalesce(
            func.sum(case((util_known, U.x_device_hours * U.x_gpu_utilization), else_=0.0)), 0.0
        ),
        "energy_no_grid_kwh": func.coalesce(func.sum(case((no_grid, U.x_energy_kwh), else_=0.0)), 0.0),
        **_histogram(session),
    }


def _histogram(session: Session) -> dict[str, ColumnElement[Any]]:
    """The utilization deciles' device-hours and records, as sums over a bucket's ledger rows."""
    out: dict[str, ColumnElement[Any]] = {}
    decile = _util_bin(session)
    for i in range(UTIL_BINS):
        in_bin = decile == i
        out[f"util_d{i}_hours"] = func.coalesce(func.sum(case((in_bin, U.x_device_hours), else_=0.0)), 0.0)
        out[f"util_d{i}_records"] = func.count(case((in_bin, 1)))
    return out


def _lock(session: Session) -> None:
    """Serialize refreshes: a PostgreSQL advisory lock until commit; SQLite's write lock (one writer) already does."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(literal(_LOCK_KEY, BigInteger))))


def _recompute(
    session: Session, start: datetime | None, end: datetime | None, columns: set[str] | None = None
) -> None:
    """Replace the hourly buckets of ``[start, end)`` (everything when both are None) by the ledger's sums; only
    the rollup *columns* given (default: all)."""
    keys = {k: v for k, v in rollup_keys(session).items() if columns is None or k in columns}
    measures = {k: v for k, v in _measures(session).items() if columns is None or k in columns}
    source = select(*[c.label(n) for n, c in keys.items()], *[c.label(n) for n, c in measures.items()])
    wipe = delete(R)
    if start is not None and end is not None:
        source = source.where(U.charge_period_start >= start, U.charge_period_start < end)
        wipe = wipe.where(R.hour >= start, R.hour < end)
    source = source.group_by(*keys.values())
    session.execute(wipe, execution_options={"synchronize_session": False})
    session.execute(R.__table__.insert().from_select([*keys, *measures], source))


def _day_of(session: Session) -> ColumnElement[Any]:
    """An hourly bucket's UTC midnight, stored the way ``UTCDateTime`` stores times."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc("day", R.hour, "UTC")
    return func.substr(R.hour, 1, 10).concat(" 00:00:00.000000")


def _recompute_days(
    session: Session, start: datetime | None, end: datetime | None, columns: set[str] | None = None
) -> None:
    """Replace the daily buckets of ``[start, end)`` (UTC midnights; everything when None) by the sums of the
    hourly buckets; only the rollup *columns* given (default: all)."""
    day = _day_of(session)
    keys = [c for c in rollup_keys(session) if c not in ("hour", "x_user") and (columns is None or c in columns)]
    sums = [c.name for c in R.__table__.c if c.name not in ("id", "hour", *rollup_keys(session), "x_user")
            and (columns is None or c.name in columns)]  # fmt: skip
    source = select(
        day.label("hour"),
        *[getattr(R, k) for k in keys],
        *[func.sum(getattr(R, m)).label(m) for m in sums],
    )
    wipe = delete(RD)
    if start is not None and end is not None:
        source = source.where(R.hour >= start, R.hour < end)
        wipe = wipe.where(RD.hour >= start, RD.hour < end)
    source = source.group_by(day, *[getattr(R, k) for k in keys])
    session.execute(wipe, execution_options={"synchronize_session": False})
    session.execute(RD.__table__.insert().from_select(["hour", *keys, *sums], source))


def _as_hours(windows: Iterable[Any]) -> set[datetime]:
    """The UTC hours that *windows* (datetimes, or ``(start, end)`` pairs) cover."""
    hours: set[datetime] = set()
    for w in windows:
        if isinstance(w, datetime):
            hours.add(_floor(w))
            continue
        start, end = w
        h = _floor(start)
        while h < end:
            hours.add(h)
            h += HOUR
    return hours


def _floor(ts: datetime) -> datetime:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(
            f"window: {ts.isoformat()!r} is naive; pass an aware datetime (e.g. tzinfo=datetime.UTC)"
        )
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _floor_day(ts: datetime) -> datetime:
    return _floor(ts).replace(hour=0)


def _ranges(starts: Iterable[datetime], width: timedelta = HOUR) -> list[tuple[datetime, datetime]]:
    """Sorted bucket starts (hours, or days) as ``[start, end)`` ranges, neighbours less than :data:`_MERGE_GAP`
    apart merged."""
    out: list[tuple[datetime, datetime]] = []
    for h in sorted(starts):
        if out and h - out[-1][1] < _MERGE_GAP:
            out[-1] = (out[-1][0], h + width)
        else:
            out.append((h, h + width))
    return out


def refresh_rollups(session: Session, windows: Iterable[Any] = ()) -> int:
    """Recompute the rollup buckets of every dirty hour and of *windows* (datetimes or ``(start, end)`` pairs)
    from the ledger, in the caller's write transaction; returns how many hours were recomputed.

    Idempotent (a second call with nothing dirty recomputes nothing). Refreshes are serialized, so two
    processes never write one bucket twice; a ledger change committed while this runs leaves its hour dirty
    for the next refresh (PostgreSQL ``DELETE ... RETURNING`` takes only the dirty rows this transaction sees).
    """
    _lock(session)
    if session.get_bind().dialect.name == "postgresql":
        dirty = set(session.scalars(delete(D).returning(D.hour)))
    else:  # one writer holds the database: nothing can be marked between the read and the delete
        dirty = set(session.scalars(select(D.hour).distinct()))
        session.execute(delete(D))
        seen = _seen(session)
        hour = func.substr(U.charge_period_start, 1, 13).concat(":00:00.000000")
        new = session.scalars(select(hour).where(U.id > seen).distinct())
        dirty |= {datetime.fromisoformat(h).replace(tzinfo=UTC) for h in new}
        _set_seen(session)
    hours = {_floor(h) for h in dirty} | _as_hours(windows)
    for start, end in _ranges(hours):
        _recompute(session, start, end)
    days = {_floor_day(h) for h in hours}
    for start, end in _ranges(days, DAY):
        _recompute_days(session, start, end)
    return len(hours)


def _seen(session: Session) -> int:
    return int(session.scalar(select(S.ledger_id_seen).where(S.id == 1)) or 0)


def _set_seen(session: Session) -> None:
    """Record the ledger's largest id as absorbed (SQLite's new-row mark; harmless on PostgreSQL)."""
    top = int(session.scalar(select(func.max(U.id))) or 0)
    if session.get(S, 1) is None:
        session.add(S(id=1, ledger_id_seen=top))
        session.flush()
    else:
        session.execute(S.__table__.update().where(S.id == 1).values(ledger_id_seen=top))


def rebuild_rollups(session: Session, columns: set[str] | None = None) -> int:
    """Recompute every bucket from the whole ledger (for existing databases, or after a bulk load); returns the
    number of rollup rows. In the caller's write transaction. *columns*: only these rollup columns (the
    migration that creates the tables passes the ones it created, so a later column added to the model does
    not break it)."""
    _lock(session)
    session.execute(delete(D))
    _recompute(session, None, None, columns)
    _recompute_days(session, None, None, columns)
    _set_seen(session)
    return int(session.scalar(select(func.count()).select_from(R)) or 0)


def choose_rollup(
    session: Session,
    from_: datetime | None,
    to: datetime | None,
    as_of: int | None = None,
    *,
    needs_user: bool = False,
) -> tuple[Any, str | None]:
    """The rollup table that answers ``[from_, to)`` exactly - ``usage_rollups_daily`` when both ends are UTC
    midnights (or open) and the question needs no user, else ``usage_rollups`` when they are whole UTC hours -
    or None and why the ledger must be read (for the answer's notes)."""
    if as_of is not None:
        return None, "answered from the ledger: --as-of a past run reads the ledger's history"
    for name, value in (("from", from_), ("to", to)):
        if value is not None and value != _floor(value):
            return None, f"answered from the ledger: '{name}' is not on a whole UTC hour (rollups are hourly)"
    dirty = select(D.id)
    if from_ is not None:
        dirty = dirty.where(D.hour >= from_)
    if to is not None:
        dirty = dirty.where(D.hour < to)
    changed = exists(dirty)
    if session.get_bind().dialect.name == "sqlite":
        seen = select(S.ledger_id_seen).where(S.id == 1).scalar_subquery()
        changed = changed | exists(select(U.id).where(U.id > func.coalesce(seen, 0)))
    if session.scalar(select(changed)):
        return None, (
            "answered from the ledger: usage changed since the rollups were refreshed (they are refreshed after "
            "each ingest; `flopwise report rebuild-rollups` refreshes them now)"
        )
    daily = not needs_user and all(v is None or v == _floor_day(v) for v in (from_, to))
    return (RD if daily else R), None


def rollup_coverage(
    session: Session, from_: datetime | None, to: datetime | None, as_of: int | None = None
) -> tuple[bool, str | None]:
    """(whether ``[from_, to)`` can be answered from the rollups, and if not, why - for the answer's notes)."""
    table, why = choose_rollup(session, from_, to, as_of)
    return table is not None, why


#: rollup column summed for each budget unit (the ledger columns of :data:`flopwise.meter.burn.UNIT_COLUMNS`)
UNIT_SUMS = {"usd": "cost_usd", "device_hours": "device_hours", "kwh": "energy_kwh", "co2e_kg": "co2e_kg"}


def scope_sum(
    session: Session,
    unit: str,
    scope_kind: str,
    scope_id: int,
    window: tuple[datetime, datetime],
    held_requests: Any = None,
) -> Any | None:
    """The sum of budget *unit* over the usage of one scope (``org``/``team``/``project``) with
    ``charge_period_start`` in *window*, leaving out the usage of the requests *held_requests* (a SELECT of
    request ids) names, from the rollups; None when they cannot answer (see :func:`choose_rollup`) and the
    caller must read the ledger. A Decimal for ``usd``, else a float."""
    start, end = window
    table, _why = choose_rollup(session, start, end)
    if table is None:
        return None
    column = getattr(table, UNIT_SUMS[unit])
    scope = {"org": table.org_id, "team": table.team_id, "project": table.project_id}[scope_kind]
    stmt = select(func.sum(column)).where(scope == scope_id, table.hour >= start, table.hour < end)
    if held_requests is not None:
        stmt = stmt.where(table.request_id.is_(None) | table.request_id.not_in(held_requests))
    total = session.scalar(stmt)
    if total is None:
        return _ZERO if unit == "usd" else 0.0
    return total


#: (dialect, unit, scope kind, rollup table name or None, whether the window has partial days) -> the statement of
#: :func:`budget_usage_sums`
_USAGE_SUMS: dict[tuple[str, str, str, str | None, bool], Any] = {}


def _usage_sums_statement(dialect: str, unit: str, scope_kind: str, table: Any, edges: bool = True) -> Any:
    from sqlalchemy import bindparam

    from flopwise.store.models import SPENDING_STATES, BudgetReservation
    from flopwise.store.totals import state_amounts

    start, end, budget_id = bindparam("start"), bindparam("end"), bindparam("budget_id")
    held = state_amounts(edges)  # the budget's totals of the window's whole days, its reservations of the partial ones
    by_state = [func.sum(case((held.c.state == state, held.c.amount))).label(state) for state in SPENDING_STATES]
    columns: list[Any] = list(by_state)
    if table is not None:
        dirty = exists(select(D.id).where(D.hour >= start, D.hour < end))
        if dialect == "sqlite":  # as choose_rollup: ledger rows past the last one the rollups have seen
            seen = select(S.ledger_id_seen).where(S.id == 1).scalar_subquery()
            dirty = dirty | exists(select(U.id).where(U.id > func.coalesce(seen, 0)))
        # a rollup row of a request this budget holds a spending reservation for is not "unreserved": probed by
        # the reservations' unique (budget_id, request_id) per rollup row, not a list of every request it holds
        held_by_budget = exists(
            select(BudgetReservation.id).where(
                BudgetReservation.budget_id == budget_id,
                BudgetReservation.request_id == table.request_id,
                BudgetReservation.state.in_(SPENDING_STATES),
            )
        )
        scope = {"org": table.org_id, "team": table.team_id, "project": table.project_id}[scope_kind]
        metered = (
            select(func.sum(getattr(table, UNIT_SUMS[unit])))
            .where(
                scope == bindparam("scope_id"),
                table.hour >= start,
                table.hour < end,
                table.request_id.is_(None) | ~held_by_budget,
            )
            .scalar_subquery()
        )
        columns += [dirty.label("dirty"), metered.label("metered")]
    return select(*columns).select_from(held)


def budget_usage_sums(
    session: Session, budget: Any, window: tuple[datetime, datetime]
) -> tuple[dict[str, Decimal], Any | None]:
    """What *budget* (a ``Budget`` row) holds in *window*, in one statement: its reserved, committed and settled
    reservation sums (``counted_at`` in the window; states with none are left out), and the metered usage in
    its scope and window that no reservation on it holds, from the rollups as :func:`scope_sum` with
    :func:`choose_rollup` answers it (a Decimal for ``usd``, else a float; zero when there is none) - or None
    when the rollups cannot answer (a window off the hour, or usage changed since their refresh): then the
    caller reads the ledger (``flopwise.meter.burn.metered_unreserved``). The reservation sums come from the
    budget's day totals and the reservations of the window's partial days (``flopwise.store.totals``)."""
    dialect = session.get_bind().dialect.name
    table: Any = None
    if all(v is not None and v == _floor(v) for v in window):
        table = RD if all(v == _floor_day(v) for v in window) else R
    params: dict[str, Any] = {"budget_id": budget.id, **window_params(window)}
    edges = has_edges(params)
    key = (dialect, budget.unit, budget.scope_kind, None if table is None else table.__tablename__, edges)
    stmt = _USAGE_SUMS.get(key)
    if stmt is None:  # on the admission hot path: a prepared statement on PostgreSQL (``store.PreparedStatement``)
        from flopwise.store.session import PreparedStatement

        stmt = _USAGE_SUMS[key] = PreparedStatement(
            _usage_sums_statement(dialect, budget.unit, budget.scope_kind, table, edges)
        )
    if table is not None:
        params["scope_id"] = budget.scope_id
    row = stmt.one(session, params)
    from flopwise.store.models import SPENDING_STATES

    by_state = {
        state: to_money(total) for state, total in zip(SPENDING_STATES, row[:3], strict=True) if total is not None
    }
    if table is None or row[3]:
        return by_state, None
    metered = row[4]
    if metered is None:
        metered = _ZERO if budget.unit == "usd" else 0.0
    return by_state, metered
