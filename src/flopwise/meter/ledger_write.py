"""Writing costed records to the usage ledger: new rows in bulk, restated rows replaced with their history kept.

Per batch, in one write transaction (:func:`write_batch`):

1. **Look up** the batch's ``source_key`` s already in the ledger (one indexed ``SELECT ... WHERE source_key IN``).
2. **New** keys are written in bulk with ``ON CONFLICT (source_key) DO NOTHING`` (a concurrent writer of the same
   key wins, nothing is doubled): on SQLite one prepared ``INSERT`` through ``executemany``, counted by the
   connection's ``total_changes``; on PostgreSQL ``COPY`` into a temporary staging table and one ``INSERT ...
   SELECT``, counted by its rowcount.
3. **Known** keys whose values are equal are *unchanged* (the same input twice changes nothing). Known keys whose
   values differ, from an export no older than the one the ledger holds (``ingest_runs.exported_at``), are a
   *restatement* (FOCUS and OpenCost re-export a charge period with corrected costs under the
   same identity, docs/ingest/focus.md): when the caller asks for it (``restate=True``, what ``flopwise ingest``
   does) the row takes the new values and this run's id, and the values it had go to ``usage_record_history``
   with the run that wrote them, the run that replaced them, who and when. The row's scope (organization,
   team, project, request) is never changed by a restatement. Without ``restate`` (the usage API) a known key
   is left as it is and counted unchanged.

Within one input the first line of a key wins: a later line with the same key (overlapping Slurm job arrays)
in the same batch, or in a later batch after this run wrote the key, is counted unchanged, as before.

:func:`undo_run` reverses everything one run wrote: replaced rows get their old values back, inserted rows go.
"""

from __future__ import annotations

import json
import queue
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, bindparam, delete, select, update

from flopwise.meter.costing import CostedUsage, Coster
from flopwise.meter.record import UsageRecord
from flopwise.store.ledger import HISTORY_MEASURES, UsageRecordHistory, UsageRecordRow
from flopwise.store.models import ComputeRequest
from flopwise.store.session import write_session
from flopwise.store.types import Money, UTCDateTime, to_money, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Attributor",
    "BackgroundWriter",
    "BatchCounts",
    "costed_row",
    "ingest_records",
    "undo_run",
    "write_batch",
    "write_column_batches",
]

DEFAULT_BATCH_SIZE = 5000
#: where a record's attribution comes from: (org_id, team_id, project_id) or None for unattributed
Attributor = Callable[[UsageRecord], "tuple[int | None, int | None, int | None] | None"]
#: keys per ``source_key IN (...)`` lookup (well under SQLite's bound-parameter limit)
_LOOKUP_CHUNK = 1000

#: the ``usage_records`` columns ingestion writes, in the order of the tuples :func:`_row_values` builds
_COLUMNS: tuple[str, ...] = (
    "source",
    "source_key",
    "charge_period_start",
    "charge_period_end",
    "billed_cost",
    "effective_cost",
    "list_cost",
    "cost_usd",
    "cost_basis",
    "billing_currency",
    "provider_name",
    "region_id",
    "resource_id",
    "service_category",
    "sku_id",
    "tags",
    "x_device_type",
    "x_device_count",
    "x_device_hours",
    "x_gpu_utilization",
    "x_energy_kwh",
    "energy_basis",
    "x_co2e_kg",
    "idle_device_hours",
    "idle_cost_usd",
    "x_job_id",
    "x_request_id",
    "x_user",
    "x_account",
    "x_extra",
    "org_id",
    "team_id",
    "project_id",
    "request_id",
    "ingest_run_id",
    "ingested_at",
)
_ORG, _TEAM, _PROJECT, _REQUEST = (
    _COLUMNS.index(c) for c in ("org_id", "team_id", "project_id", "request_id")
)
_X_REQUEST_ID = _COLUMNS.index("x_request_id")
#: a staging table per write transaction (PostgreSQL): COPY fills it, one INSERT ... SELECT moves it
_PG_STAGE = "flopwise_ingest_stage"
#: the least SQLite page cache an ingesting connection gets (memory is taken only as pages are read)
_SQLITE_CACHE_BYTES = 64 * 2**20


def _row_values(
    costed: CostedUsage,
    run_id: int | None,
    ingested_at: datetime,
    owner: tuple[int | None, int | None, int | None] | None,
) -> list[Any]:
    """The ``usage_records`` values of one costed record, in :data:`_COLUMNS` order (Python values)."""
    r = costed.record
    org_id, team_id, project_id = owner if owner is not None else (None, None, None)
    return [
        r.source,
        r.source_key,
        r.charge_period_start,
        r.charge_period_end,
        r.billed_cost,
        r.effective_cost,
        r.list_cost,
        costed.cost_usd,
        costed.cost_basis,
        r.billing_currency,
        r.provider_name,
        r.region_id,
        r.resource_id,
        r.service_category,
        r.sku_id,
        r.tags,
        r.x_device_type,
        r.x_device_count,
        r.x_device_hours,
        r.x_gpu_utilization,
        r.x_energy_kwh,
        costed.energy_basis,
        r.x_co2e_kg,
        costed.idle_device_hours,
        costed.idle_cost_usd,
        r.x_job_id,
        r.x_request_id,
        r.x_user,
        r.x_account,
        r.x_extra,
        org_id,
        team_id,
        project_id,
        None,
        run_id,
        ingested_at,
    ]


def costed_row(costed: CostedUsage, run_id: int | None) -> dict[str, Any]:
    """The ``usage_records`` column values of one costed record (for the ORM: ``UsageRecordRow(**row)``)."""
    row = dict(zip(_COLUMNS, _row_values(costed, run_id, utcnow(), None), strict=True))
    row["tags"] = dict(row["tags"])
    row["x_extra"] = dict(row["x_extra"])
    return row


def _link_requests(session: Session, rows: list[list[Any]]) -> None:
    """Set ``request_id`` where ``x_request_id`` names an existing compute request by its integer id, and only when
    the row is not already attributed to another organization than the request's (no cross-organization links)."""
    wanted = {int(rid) for r in rows if (rid := r[_X_REQUEST_ID]) and str(rid).isdigit()}
    if not wanted:
        return
    org_of = dict(
        session.execute(
            select(ComputeRequest.id, ComputeRequest.org_id).where(ComputeRequest.id.in_(wanted))
        ).all()
    )
    for r in rows:
        rid = r[_X_REQUEST_ID]
        if rid and str(rid).isdigit() and int(rid) in org_of and r[_ORG] in (None, org_of[int(rid)]):
            r[_REQUEST] = int(rid)


class _Writer:
    """Writes batches of :data:`_COLUMNS` rows with ``ON CONFLICT (source_key) DO NOTHING`` on the session's
    own DBAPI connection, counting the rows that were new.

    * SQLite: one prepared ``INSERT`` through ``executemany``; the new rows are the connection's
      ``total_changes`` difference (a row skipped by ``DO NOTHING`` changes nothing).
    * PostgreSQL: ``COPY`` straight into ``usage_records`` (the rows' keys were not there at the lookup), under a
      savepoint; if a concurrent writer committed one of the keys since, that ``COPY`` fails on the unique key,
      is rolled back, and the rows go by ``COPY`` into a temporary staging table (dropped at commit), then one
      ``INSERT INTO usage_records SELECT ... ON CONFLICT (source_key) DO NOTHING``, whose rowcount is the new rows.

    Values go through the columns' own bind processors (``Money``, ``UTCDateTime``, ``JSON``: the same checks
    and storage formats as the ORM), looked up once per dialect.
    """

    def __init__(self, session: Session) -> None:
        dialect = session.get_bind().dialect
        self.dialect = dialect.name
        table = UsageRecordRow.__table__
        self.processors: list[tuple[int, Callable[[Any], Any]]] = []
        serializer = getattr(dialect, "_json_serializer", None) or json.dumps  # make_engine(json_serializer=)
        for i, name in enumerate(_COLUMNS):
            column_type = table.c[name].type
            proc = column_type.dialect_impl(dialect).bind_processor(dialect)
            if isinstance(column_type, JSON):
                proc = _json_processor(serializer)  # SQLite and COPY's text format both take JSON as text
            elif isinstance(column_type, UTCDateTime) and proc is not None:
                proc = _utc_processor(proc, self.dialect)
            if proc is not None:
                self.processors.append((i, proc))
        names = ", ".join(_COLUMNS)
        if self.dialect == "sqlite":
            marks = ", ".join("?" for _ in _COLUMNS)
            self.sql = (
                f"INSERT INTO usage_records ({names}) VALUES ({marks}) ON CONFLICT (source_key) DO NOTHING"
            )
        else:
            self.stage_sql = (
                f"CREATE TEMPORARY TABLE {_PG_STAGE} ON COMMIT DROP AS "
                f"SELECT {names} FROM usage_records WITH NO DATA"
            )
            self.copy_sql = f"COPY {_PG_STAGE} ({names}) FROM STDIN"
            self.direct_sql = f"COPY usage_records ({names}) FROM STDIN"
            self.sql = (
                f"INSERT INTO usage_records ({names}) SELECT {names} FROM {_PG_STAGE} "
                "ON CONFLICT (source_key) DO NOTHING"
            )

    def _processed(self, rows: list[list[Any]]) -> list[list[Any]]:
        procs = self.processors
        for row in rows:
            for i, proc in procs:
                value = row[i]
                if value is not None:
                    row[i] = proc(value)
        return rows

    def write(self, session: Session, rows: list[list[Any]]) -> int:
        """Insert *rows* in the session's transaction; returns how many were new."""
        connection = session.connection().connection.driver_connection
        rows = self._processed(rows)
        if self.dialect == "sqlite":
            _ensure_sqlite_cache(connection)
            before = connection.total_changes
            connection.executemany(self.sql, rows)
            return int(connection.total_changes - before)
        import psycopg

        with connection.cursor() as cursor:
            # the rows' keys were not in the ledger at the lookup (write_batch): COPY them straight in, unless a
            # concurrent writer committed one since (the unique key fails the COPY, rolled back to the
            # savepoint): then the staging table and ON CONFLICT DO NOTHING, which counts the rows that were new
            cursor.execute("SAVEPOINT flopwise_copy_fresh")
            try:
                with cursor.copy(self.direct_sql) as copy:
                    for row in rows:
                        copy.write_row(row)
            except psycopg.errors.UniqueViolation:
                cursor.execute("ROLLBACK TO SAVEPOINT flopwise_copy_fresh")
            else:
                cursor.execute("RELEASE SAVEPOINT flopwise_copy_fresh")
                return len(rows)
            cursor.execute(self.stage_sql)
            with cursor.copy(self.copy_sql) as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(self.sql)
            return int(cursor.rowcount)


def _ensure_sqlite_cache(connection: Any) -> None:
    """Give the connection at least :data:`_SQLITE_CACHE_BYTES` of page cache (never less than it has).

    SQLite's default cache is 2 MiB; once the ledger's indexes outgrow it (a few hundred thousand records), every
    insert into the ``source_key`` index, whose keys arrive in hash order, reads its pages back from the OS.
    """
    pages = connection.execute("PRAGMA cache_size").fetchone()[0]
    cache_bytes = -pages * 1024 if pages < 0 else pages * connection.execute("PRAGMA page_size").fetchone()[0]
    if cache_bytes < _SQLITE_CACHE_BYTES:
        connection.execute(f"PRAGMA cache_size = -{_SQLITE_CACHE_BYTES // 1024}")


def _json_processor(serializer: Callable[[Any], str]) -> Callable[[Any], str]:
    """The JSON text of a value (``{}`` for the common empty dict without calling the serializer)."""

    def process(value: Any) -> str:
        return "{}" if value == {} else serializer(value)

    return process


def _utc_processor(generic: Callable[[Any], Any], dialect: str) -> Callable[[Any], Any]:
    """``UTCDateTime``'s bind processor with a fast path for aware datetimes (what every parser makes: in
    ``datetime.UTC``, or in another zone object such as ``ZoneInfo("UTC")`` from ``--assume-tz``): the value in
    UTC, on SQLite as the same ``YYYY-MM-DD HH:MM:SS.ffffff`` text SQLAlchemy stores, on PostgreSQL the datetime.
    Anything else (naive: refused, not a datetime) goes through *generic*. The fast path is used only if it gives
    exactly what *generic* gives on samples in each kind of zone."""
    from zoneinfo import ZoneInfo

    if dialect == "sqlite":

        def process(value: Any) -> Any:
            if isinstance(value, datetime):
                if value.tzinfo is UTC:
                    return value.replace(tzinfo=None).isoformat(" ", "microseconds")
                if value.tzinfo is not None and value.utcoffset() is not None:
                    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
            return generic(value)

    else:

        def process(value: Any) -> Any:
            if isinstance(value, datetime):
                if value.tzinfo is UTC:
                    return value
                if value.tzinfo is not None and value.utcoffset() is not None:
                    return value.astimezone(UTC)
            return generic(value)

    sample = datetime(2025, 1, 2, 3, 4, 5, 60708, tzinfo=UTC)
    samples = [
        sample,
        *(sample.astimezone(ZoneInfo(z)) for z in ("UTC", "Europe/Amsterdam", "America/St_Johns")),
    ]
    same = all(process(v) == generic(v) and type(process(v)) is type(generic(v)) for v in samples)
    return process if same else generic


#: columns a restatement may change (everything but the key, the scope, the run and the first ingestion time)
_VALUE_COLUMNS: tuple[str, ...] = tuple(
    c
    for c in _COLUMNS
    if c
    not in (
        "source",
        "source_key",
        "org_id",
        "team_id",
        "project_id",
        "request_id",
        "ingest_run_id",
        "ingested_at",
    )
)
_VALUE_INDEX = tuple(_COLUMNS.index(c) for c in _VALUE_COLUMNS)
_KEY = _COLUMNS.index("source_key")
_COST = _COLUMNS.index("cost_usd")
_START = _COLUMNS.index("charge_period_start")
_HOURS = _COLUMNS.index("x_device_hours")
_ENERGY = _COLUMNS.index("x_energy_kwh")
_TABLE = UsageRecordRow.__table__
_MONEY_COLUMNS = frozenset(c for c in _COLUMNS if isinstance(_TABLE.c[c].type, Money))
_TIME_COLUMNS = frozenset(c for c in _COLUMNS if isinstance(_TABLE.c[c].type, UTCDateTime))
_JSON_COLUMNS = frozenset(c for c in _COLUMNS if isinstance(_TABLE.c[c].type, JSON))


@dataclass
class BatchCounts:
    """What one or more batches did to the ledger: rows inserted, replaced (restated), unchanged, and the totals
    of what was written: the cost, device-hours and energy of the inserted rows, and the change (new - old) that
    the replaced rows made. *touched* holds the charge-period starts of every inserted row and of both versions
    of every replaced row (the budget windows to recompute)."""

    inserted: int = 0
    replaced: int = 0
    unchanged: int = 0
    stale: int = 0  # of the unchanged: other values, but from an older export than the ledger's
    cost_usd: Decimal = field(default_factory=lambda: Decimal(0))
    device_hours: float = 0.0
    energy_kwh: float = 0.0
    restated_cost_usd: Decimal = field(default_factory=lambda: Decimal(0))
    touched: set[datetime] = field(default_factory=set)

    def add(self, other: BatchCounts) -> None:
        self.inserted += other.inserted
        self.replaced += other.replaced
        self.unchanged += other.unchanged
        self.stale += other.stale
        self.cost_usd += other.cost_usd
        self.device_hours += other.device_hours
        self.energy_kwh += other.energy_kwh
        self.restated_cost_usd += other.restated_cost_usd
        self.touched |= other.touched


def _comparable(column: str, value: Any) -> Any:
    """*value* as the ledger gives it back (money rounded to its 6 places, JSON through a text round trip)."""
    if value is None:
        return None
    if column in _MONEY_COLUMNS:
        return to_money(value, column)
    if column in _JSON_COLUMNS:
        return json.loads(_json_text(value))
    return value


def _json_text(value: Any) -> str:
    from flopwise.store.session import _json_dumps

    return _json_dumps(value)


def _to_json(value: Any) -> Any:
    """A column value as JSON for ``usage_record_history.changes`` (money as a decimal string, times ISO 8601)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _from_json(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in _MONEY_COLUMNS:
        return Decimal(value)
    if column in _TIME_COLUMNS:
        return datetime.fromisoformat(value)
    return value


def _hour(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def _existing(session: Session, keys: list[str]) -> dict[str, Any]:
    """The ledger rows (id, run, when the run's input was exported, value columns) of those of *keys* already
    there, by key."""
    from flopwise.store.ledger import IngestRun

    runs = IngestRun.__table__
    columns = [
        _TABLE.c.id,
        _TABLE.c.source_key,
        _TABLE.c.ingest_run_id,
        runs.c.exported_at,
        *(_TABLE.c[c] for c in _VALUE_COLUMNS),
    ]
    joined = _TABLE.outerjoin(runs, runs.c.id == _TABLE.c.ingest_run_id)
    found: dict[str, Any] = {}
    for i in range(0, len(keys), _LOOKUP_CHUNK):
        chunk = keys[i : i + _LOOKUP_CHUNK]
        for row in session.execute(
            select(*columns).select_from(joined).where(_TABLE.c.source_key.in_(chunk))
        ):
            found[row.source_key] = row
    return found


def write_batch(
    session: Session,
    rows: list[list[Any]],
    *,
    run_id: int | None,
    restate: bool,
    actor: str | None = None,
    exported_at: datetime | None = None,
) -> BatchCounts:
    """Write one batch of :data:`_COLUMNS` rows in the session's transaction (see the module doc).

    *exported_at*: when this run's input was exported; a known key whose ledger values came from a later export
    is not restated by this older one (counted unchanged and *stale*), so the order in which exports are
    ingested does not matter."""
    counts = BatchCounts()
    existing = _existing(session, [r[_KEY] for r in rows])
    fresh: list[list[Any]] = []
    replaced: list[tuple[Any, list[Any], dict[str, Any]]] = []
    seen: set[str] = set()
    for row in rows:
        key = row[_KEY]
        if key in seen:  # the same charge twice in one input (overlapping Slurm job arrays): the first counts
            counts.unchanged += 1
            continue
        seen.add(key)
        old = existing.get(key)
        if old is None:
            fresh.append(row)
            continue
        if run_id is not None and old.ingest_run_id == run_id:  # written by this run from an earlier line
            counts.unchanged += 1
            continue
        changes = {}
        for column, index in zip(_VALUE_COLUMNS, _VALUE_INDEX, strict=True):
            new_value = _comparable(column, row[index])
            old_value = getattr(old, column)
            if new_value != old_value:
                changes[column] = (old_value, new_value)
        if not changes or not restate:
            counts.unchanged += 1
        elif exported_at is not None and old.exported_at is not None and exported_at < old.exported_at:
            counts.unchanged += 1  # an older export than the one the ledger holds: it restates nothing
            counts.stale += 1
        else:
            replaced.append((old, row, changes))
    for row in fresh:
        if row[_COST] is not None:
            counts.cost_usd += row[_COST]
        counts.device_hours += row[_HOURS] or 0.0
        counts.energy_kwh += row[_ENERGY] or 0.0
        counts.touched.add(_hour(row[_START]))
    if fresh:
        _link_requests(session, fresh)
        new = _writer(session).write(session, fresh)
        counts.inserted = new
        counts.unchanged += len(fresh) - new  # a concurrent writer took the key first
    if replaced:
        _replace(session, replaced, run_id, actor, counts)
    return counts


def _replace(
    session: Session,
    replaced: list[tuple[Any, list[Any], dict[str, Any]]],
    run_id: int | None,
    actor: str | None,
    counts: BatchCounts,
) -> None:
    now = utcnow()
    history = []
    updates = []
    for old, row, changes in replaced:
        entry: dict[str, Any] = {
            "usage_record_id": old.id,
            "source_key": old.source_key,
            "old_run_id": old.ingest_run_id,
            "new_run_id": run_id,
            "replaced_at": now,
            "replaced_by": actor,
            "changes": {c: [_to_json(o), _to_json(n)] for c, (o, n) in changes.items()},
        }
        for column in HISTORY_MEASURES:
            entry[column] = getattr(old, column)
        history.append(entry)
        updates.append(
            {
                "_id": old.id,
                "ingest_run_id": run_id,
                **{c: _comparable(c, row[i]) for c, i in zip(_VALUE_COLUMNS, _VALUE_INDEX, strict=True)},
            }
        )
        counts.touched.add(_hour(old.charge_period_start))
        counts.touched.add(_hour(row[_START]))
        counts.restated_cost_usd += (_comparable("cost_usd", row[_COST]) or Decimal(0)) - (
            old.cost_usd or Decimal(0)
        )
    session.execute(UsageRecordHistory.__table__.insert(), history)
    stmt = (
        update(_TABLE)
        .where(_TABLE.c.id == bindparam("_id"))
        .values({c: bindparam(c) for c in ("ingest_run_id", *_VALUE_COLUMNS)})
    )
    session.execute(stmt, updates, execution_options={"synchronize_session": False})
    counts.replaced += len(replaced)


def undo_run(session: Session, run_id: int) -> None:
    """Reverse what run *run_id* wrote: restated rows get the values they had back (and their history row
    goes), rows it inserted are deleted. In the caller's transaction."""
    H = UsageRecordHistory.__table__  # noqa: N806 - a table, named like one
    history = list(session.execute(select(H).where(H.c.new_run_id == run_id).order_by(H.c.id.desc())))
    if history:
        restores = []
        for h in history:
            values = {c: _from_json(c, old) for c, (old, _new) in (h.changes or {}).items()}
            restores.append({"_id": h.usage_record_id, "ingest_run_id": h.old_run_id, **values})
        # rows of one statement must bind the same columns: group by the set of restored columns
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for r in restores:
            groups.setdefault(tuple(sorted(k for k in r if k != "_id")), []).append(r)
        for names, params in groups.items():
            stmt = (
                update(_TABLE).where(_TABLE.c.id == bindparam("_id")).values({c: bindparam(c) for c in names})
            )
            session.execute(stmt, params, execution_options={"synchronize_session": False})
        session.execute(delete(UsageRecordHistory).where(UsageRecordHistory.new_run_id == run_id))
    session.execute(delete(UsageRecordRow).where(UsageRecordRow.ingest_run_id == run_id))


_WRITERS: weakref.WeakKeyDictionary[Any, _Writer] = weakref.WeakKeyDictionary()


def _writer(session: Session) -> _Writer:
    dialect = session.get_bind().dialect
    writer = _WRITERS.get(dialect)
    if writer is None:
        writer = _WRITERS[dialect] = _Writer(session)
    return writer


_DONE = object()


class BackgroundWriter:
    """Runs ``write(batch)`` for each submitted batch, in order, in one thread, while the caller builds the next
    one: the database writes batch N (psycopg releases the GIL while it waits on the server, which works in its
    own process) while Python reads, checks and costs batch N+1. (sqlite3 releases it around every row, which
    makes a writer thread slower than none while the caller computes: ingest uses this on PostgreSQL only.)

    A batch is handed over when the previous one is written: one batch is written while the next is built
    (memory: one batch more than without it). Each batch is still its own write transaction, committed in input
    order, so a later batch sees what an earlier one wrote.
    An error raised by a write is raised again in the caller's thread at its next :meth:`submit` or at
    :meth:`close`; the batches after it are not written. :meth:`abort` (the caller failed or was interrupted)
    skips the waiting batches and returns once the one being written is committed or rolled back, so that
    undoing the run afterwards sees everything the run wrote. Signals (Ctrl-C, SIGTERM) are delivered to the
    caller's (main) thread only; the writer thread is never interrupted mid-transaction.

    ::

        with BackgroundWriter(write) as writer:  # closed on success, aborted on an exception
            for batch in batches:
                writer.submit(batch)
    """

    def __init__(self, write: Callable[[Any], None]) -> None:
        self._write = write
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="flopwise-ingest-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is _DONE:
                return
            try:
                if (
                    self._error is None and not self._stop
                ):  # else skipped: a write failed, or the caller gave up
                    self._write(batch)
            except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
                self._error = err
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            self._stop = True
            raise err

    def submit(self, batch: Any) -> None:
        """Hand *batch* to the writer once the previous one is written (so at most two batches are held: the
        one being written and the one being built); raises the error of an earlier write, if any."""
        self._queue.join()
        self._raise()
        self._queue.put(batch)

    def close(self) -> None:
        """Wait for every queued batch to be written; raises the error of a write, if any."""
        self._queue.put(_DONE)
        self._thread.join()
        self._raise()

    def abort(self) -> None:
        """Skip the batches not yet started, wait for the one being written; no error is raised."""
        self._stop = True
        while True:
            try:  # empty the queue so that the end mark goes in without waiting behind a skipped batch
                self._queue.get_nowait()
            except queue.Empty:
                break
            self._queue.task_done()
        self._queue.put(_DONE)
        self._thread.join()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def ingest_records(
    factory: sessionmaker[Session],
    records: Iterable[UsageRecord],
    *,
    coster: Coster,
    run_id: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    attribute: Attributor | None = None,
    restate: bool = False,
    actor: str | None = None,
    on_batch: Callable[[BatchCounts], None] | None = None,
    exported_at: datetime | None = None,
    overlap: bool = False,
) -> tuple[int, int, dict[str, Any]]:
    """Cost and write *records* in batches, each in its own write transaction: (inserted, unchanged, totals).

    Idempotent on ``source_key``. With *restate* a known key whose values changed is replaced (its old values
    kept as history, see the module doc); without it, it is left alone. ``totals`` has ``cost_usd``,
    ``device_hours`` and ``energy_kwh`` of the inserted rows, ``replaced``, ``restated_cost_usd`` (the change the
    replacements made) and ``counts`` (the :class:`BatchCounts`). *on_batch* is called after each committed
    batch with its counts. The building block of :func:`flopwise.meter.ingest.ingest_source`, and what the
    NVML agent's pushes and the usage API go through.

    *overlap*: write the batches in a :class:`BackgroundWriter` thread while the next one is parsed and costed
    (*on_batch* is then called in that thread); the batches, their transactions and their order are the same.
    """
    total = BatchCounts()
    rows: list[list[Any]] = []
    ingested_at = utcnow()

    def write(batch: list[list[Any]]) -> None:
        with write_session(factory) as session:
            counts = write_batch(
                session, batch, run_id=run_id, restate=restate, actor=actor, exported_at=exported_at
            )
        total.add(counts)
        if on_batch is not None:
            on_batch(counts)

    writer = BackgroundWriter(write) if overlap else None
    flush = writer.submit if writer is not None else write
    try:
        for record in records:
            costed = coster.cost(record)
            rows.append(_row_values(costed, run_id, ingested_at, attribute(record) if attribute else None))
            if len(rows) >= batch_size:
                flush(rows)
                rows, ingested_at = [], utcnow()
        if rows:
            flush(rows)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    totals: dict[str, Any] = {
        "cost_usd": total.cost_usd,
        "device_hours": total.device_hours,
        "energy_kwh": total.energy_kwh,
        "replaced": total.replaced,
        "restated_cost_usd": total.restated_cost_usd,
        "counts": total,
    }
    return total.inserted, total.unchanged, totals


# --- the columnar path's batches (meter.ingest_columnar) ---------------------------------------------------


def write_column_batches(
    factory: sessionmaker[Session],
    batches: Iterable[tuple[Any, int]],
    *,
    run_id: int,
    actor: str | None,
    exported_at: datetime | None,
    overlap: bool,
) -> BatchCounts:
    """The columnar paths' batches (FOCUS, sacct) into the ledger: each ``(table, dropped)`` of *batches* (a
    ledger-column Arrow table, and how many records were dropped from it as repeats of a key within it, counted
    unchanged) in its own write transaction (:func:`write_columns`, restatements replacing), in order.

    *overlap*: the database writes batch N in a :class:`BackgroundWriter` thread while batch N+1 is read and built
    here, each made ready to write here first (:func:`prepare_columns`: completed columns and the COPY data), so
    the writer thread only talks to the database."""
    total = BatchCounts()

    def write(item: tuple[Any, int]) -> None:
        table, dropped = item
        with write_session(factory) as session:
            counts = write_columns(
                session, table, run_id=run_id, restate=True, actor=actor, exported_at=exported_at,
                ingested_at=utcnow(),
            )  # fmt: skip
        counts.unchanged += dropped
        total.add(counts)

    if not overlap:
        for item in batches:
            write(item)
        return total
    with BackgroundWriter(write) as writer:
        for table, dropped in batches:
            writer.submit((prepare_columns(table, run_id=run_id, copy=True), dropped))
    return total


#: the staging table of a columnar batch: the ledger's columns plus the row's position in the batch
_STAGE = "flopwise_column_stage"


def _stage_sql(dialect: str) -> str:
    """The statement that creates the staging table on *dialect* (filled by :func:`write_columns`: on SQLite with
    the batch's literal columns, on PostgreSQL by ``COPY`` of the batch's binary data)."""
    names = ", ".join(_COLUMNS)
    if dialect == "sqlite":
        return (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} AS "
            f"SELECT 0 AS _idx, {names} FROM usage_records WHERE 0"
        )
    # _idx numbers the rows in COPY order: the staging COPY sends the same data as the direct one
    return (
        f"CREATE TEMPORARY TABLE {_STAGE} ON COMMIT DROP AS SELECT {names} FROM usage_records WITH NO DATA; "
        f"ALTER TABLE {_STAGE} ADD COLUMN _idx integer GENERATED ALWAYS AS IDENTITY (MINVALUE 0 START WITH 0)"
    )


def _differs(dialect: str) -> str:
    """SQL true when a staged row's values differ from the ledger row of its key (NULL-safe)."""
    terms = []
    for c in _VALUE_COLUMNS:
        if dialect == "sqlite":
            terms.append(f"u.{c} IS NOT s.{c}")
        elif (
            c in _JSON_COLUMNS
        ):  # json keeps its text: equal text is equal JSON (other text: compared in Python)
            terms.append(f"u.{c}::text IS DISTINCT FROM s.{c}::text")
        else:
            terms.append(f"u.{c} IS DISTINCT FROM s.{c}")
    return " OR ".join(terms)


def _python_rows(table: Any, positions: list[int]) -> list[list[Any]]:
    """Rows *positions* of a staged Arrow table as :data:`_COLUMNS` lists of Python values (for
    :func:`write_batch`)."""
    import pyarrow as pa

    part = table.take(pa.array(positions, pa.int64())).select(list(_COLUMNS)).to_pylist()
    rows = []
    for r in part:
        row = [r[c] for c in _COLUMNS]
        for name in _TIME_COLUMNS:
            i = _COLUMNS.index(name)
            if row[i] is not None:
                row[i] = row[i].replace(tzinfo=UTC)
        for name in _JSON_COLUMNS:
            i = _COLUMNS.index(name)
            row[i] = json.loads(row[i]) if row[i] is not None else {}
        rows.append(row)
    return rows


def _complete(table: Any, run_id: int | None, ingested_at: datetime) -> Any:
    """*table* with every :data:`_COLUMNS` column (scope NULL unless attributed, no request link, the run, when),
    in :data:`_COLUMNS` order."""
    import pyarrow as pa

    n = table.num_rows
    for name in ("org_id", "team_id", "project_id"):
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(n, pa.int64()))
    table = table.append_column("request_id", pa.nulls(n, pa.int64()))
    table = table.append_column("ingest_run_id", pa.array([run_id] * n, pa.int64()))
    table = table.append_column("ingested_at", pa.array([ingested_at] * n, pa.timestamp("us", tz="UTC")))
    return table.select(list(_COLUMNS))


def _linkable(table: Any) -> Any:
    """Per row: may its ``x_request_id`` name a compute request (an integer id)?"""
    import pyarrow.compute as pc

    return pc.fill_null(pc.match_substring_regex(table.column("x_request_id"), r"^\d+$"), False)


def _link(session: Session, table: Any, linkable: Any) -> Any:
    """*table* (completed) with the request links of :func:`_link_requests` for its *linkable* rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    positions = pc.indices_nonzero(linkable).to_pylist()
    wanted = table.column("x_request_id").take(pa.array(positions)).to_pylist()
    orgs = table.column("org_id").take(pa.array(positions)).to_pylist()
    rows: list[list[Any]] = []
    for rid, org in zip(wanted, orgs, strict=True):
        row: list[Any] = [None] * len(_COLUMNS)
        row[_X_REQUEST_ID], row[_ORG] = rid, org
        rows.append(row)
    _link_requests(session, rows)
    values = [None] * table.num_rows
    for pos, row in zip(positions, rows, strict=True):
        values[pos] = row[_REQUEST]
    return table.set_column(_REQUEST, "request_id", pa.array(values, pa.int64()))


@dataclass
class PreparedColumns:
    """A columnar batch made ready for :func:`write_columns` by :func:`prepare_columns`."""

    table: Any  # the ledger's columns, completed for the run, request links not made
    linkable: Any  # per row: may it link to a compute request (the links need the database)
    copy: tuple[list[str], list[Any]] | None  # PostgreSQL: the batch's binary COPY data, when no row is linkable


def prepare_columns(
    table: Any, *, run_id: int | None, copy: bool, ingested_at: datetime | None = None
) -> PreparedColumns:
    """What :func:`write_columns` does to a batch before it needs the database: the ledger's columns completed for
    run *run_id* (ingested at *ingested_at*, now if None), and with *copy* (PostgreSQL) the batch's binary
    ``COPY`` data (:func:`_pg_copy_binary`), which both the direct ``COPY`` and the staging table take.

    Ingest calls it in the thread that reads the input, so that the writer thread (:class:`BackgroundWriter`) only
    talks to the database: the server waits on the client for no encoding between one batch's ``COPY`` and the
    next, and the writer's many short Arrow and numpy calls no longer wait on the reading thread for the GIL
    (100,000 FOCUS rows into PostgreSQL: the writer thread spent 0.33 s of CPU but 1.04 s of wall time in the
    encoding)."""
    import pyarrow.compute as pc

    table = _complete(table, run_id, ingested_at or utcnow())
    linkable = _linkable(table) if table.num_rows else None
    data = None
    if copy and table.num_rows and not pc.any(linkable).as_py():
        data = _pg_copy_binary(table)
    return PreparedColumns(table, linkable, data)


def _sqlite_columns(table: Any) -> list[Any]:
    """The :data:`_COLUMNS` of *table* as SQLite stores them (money in integer micro-units, times as SQLAlchemy's
    UTC text), still Arrow arrays."""
    import pyarrow as pa
    import pyarrow.compute as pc

    micro = pa.scalar(Decimal(10**6), pa.decimal128(7, 0))
    columns = []
    for name in _COLUMNS:
        col = table.column(name).combine_chunks()
        if name in _MONEY_COLUMNS:
            col = pc.cast(pc.multiply(col, micro), pa.int64())
        elif name in _TIME_COLUMNS:  # "YYYY-MM-DD HH:MM:SS.ffffff", as UTCDateTime stores it on SQLite
            col = pc.cast(pc.cast(col, pa.timestamp("us")), pa.string())
        columns.append(col)
    return columns


def _sqlite_params(table: Any, positions: list[int] | None = None) -> list[tuple[Any, ...]]:
    """The rows as SQLite parameters, every column bound (see :func:`_sqlite_columns`), led by *positions* (the
    staging table's ``_idx``) when given: the reference :func:`_sqlite_insert` is tested against, and
    bench/bench_sqlite_write.py's "before"."""
    columns: list[list[Any]] = [positions] if positions is not None else []
    for col in _sqlite_columns(table):
        columns.append([None] * len(col) if col.null_count == len(col) else col.to_pylist())
    return list(zip(*columns, strict=True))


def _sqlite_literal(col: Any) -> str | None:
    """The SQL literal of a column that holds one value on every row (``NULL``, an integer, a text without NUL),
    else None. Floats are always bound: SQLite's own text-to-double conversion need not give back the same
    double."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(col)
    if col.null_count == n:
        return "NULL"
    if col.null_count or not (pa.types.is_integer(col.type) or pa.types.is_string(col.type)):
        return None
    first = col[0].as_py()
    if not pc.all(pc.equal(col, col[0])).as_py():
        return None
    if isinstance(first, int):
        return str(first) if -(2**63) < first < 2**63 else None
    if "\x00" in first:
        return None
    return "'" + first.replace("'", "''") + "'"


def _sqlite_insert(table: Any, positions: list[int] | None = None) -> tuple[str, list[tuple[Any, ...]]]:
    """One ``INSERT INTO usage_records ... ON CONFLICT (source_key) DO NOTHING`` for the rows of *table* and its
    parameters; with *positions*, an ``INSERT`` into the staging table instead, each row led by its position
    (``_idx``, bound).

    A column with the same value on every row of the batch (all NULL: the scope and request columns of an
    unattributed FOCUS file; the source, run and ingest time of every batch) is written into the statement as a
    literal instead of being bound on every row: on the FOCUS sample 15 of the 37 columns, which takes
    ``executemany``'s per-parameter binding and the Arrow-to-Python conversion of those columns away (the
    measurement is in docs/ingest/index.md, "SQLite write"). The stored values and types are the same: a
    literal and a bound value of the same Python value are the same SQLite value."""
    names = list(_COLUMNS)
    marks: list[str] = []
    bound: list[list[Any]] = []
    if positions is not None:
        names.insert(0, "_idx")
        marks.append("?")
        bound.append(positions)
    for col in _sqlite_columns(table):
        literal = _sqlite_literal(col)
        if literal is None:
            marks.append("?")
            bound.append(col.to_pylist())
        else:
            marks.append(literal)
    values = f"({', '.join(names)}) VALUES ({', '.join(marks)})"
    if positions is None:
        sql = f"INSERT INTO usage_records {values} ON CONFLICT (source_key) DO NOTHING"
    else:
        sql = f"INSERT INTO {_STAGE} {values}"
    return sql, list(zip(*bound, strict=True)) if bound else [()] * table.num_rows


#: PostgreSQL's binary COPY header: the signature, no flags, no header extension
_PG_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
#: PostgreSQL's epoch (2000-01-01 UTC) in Unix microseconds: its binary timestamps count from it
_PG_EPOCH_US = 946_684_800_000_000


def _pg_kind(name: str) -> str:
    """The binary COPY form of a ledger column: ``numeric``, ``timestamptz``, ``float8``, ``int4``, or ``text``
    (varchar, text and json, whose binary form is their UTF-8 text, checked by PostgreSQL as the text form is)."""
    from sqlalchemy import Float, Integer, String

    column_type = _TABLE.c[name].type
    if isinstance(column_type, Money):
        return "numeric"
    if isinstance(column_type, UTCDateTime):
        return "timestamptz"
    if isinstance(column_type, Float):
        return "float8"
    if type(column_type) is Integer:
        return "int4"
    if isinstance(column_type, String | JSON):
        return "text"
    raise TypeError(f"usage_records.{name}: {column_type!r} has no binary COPY form here (ledger_write._pg_kind)")


_PG_KINDS = {name: _pg_kind(name) for name in _COLUMNS}


def _pg_fixed(col: Any, kind: str, valid: Any) -> Any:
    """The values of a column of fixed width as PostgreSQL's binary form, one row of bytes each (zero for NULL)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if kind == "numeric":
        data = _pg_numeric(col, valid)
    elif kind == "timestamptz":
        micros = pc.cast(pc.cast(col, pa.timestamp("us", tz="UTC")), pa.int64())
        data = (micros.fill_null(0).to_numpy() - _PG_EPOCH_US).astype(">i8")
    elif kind == "float8":
        data = pc.cast(col, pa.float64()).fill_null(0.0).to_numpy().astype(">f8")
    else:  # int4 (ids): a value beyond it fails the cast, as PostgreSQL would refuse it
        data = pc.cast(col, pa.int32()).fill_null(0).to_numpy().astype(">i4")
    return np.ascontiguousarray(data).view(np.uint8).reshape(len(col), -1)


def _pg_binary(values: Any) -> Any:
    """A binary Arrow array of equal-width rows of bytes (a 2-D uint8 numpy array)."""
    import pyarrow as pa

    n, width = values.shape
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(values)]).cast(
        pa.binary()
    )


def _pg_numeric(col: Any, valid: Any) -> Any:
    """Money (decimals, as ``decimal128`` of scale 6) as PostgreSQL's binary numeric, 10 big-endian int16 a row: 6 digits in base
    10,000 from weight 3 (10^12 ... 10^-8, more than NUMERIC(20, 6) holds), the sign, the display scale 6. The
    server strips the zero digits (``make_result``), so it stores what the text of the value gives. Arrow's
    128-bit unscaled values are read as 64-bit integers; one that needs more (beyond 9.2 x 10^12) is split in
    Python."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_decimal128(col.type) and col.type.scale == 6):
        col = pc.cast(col, pa.decimal128(38, 6))  # refused if it loses a digit
    n = len(col)
    words = np.frombuffer(col.buffers()[1], dtype="<i8")[2 * col.offset : 2 * (col.offset + n)].reshape(n, 2)
    low, high = words[:, 0], words[:, 1]
    fits = high == (low >> 63)
    if valid is not None:
        fits |= ~valid
        low = np.where(valid, low, 0)
    magnitude = np.abs(np.where(fits, low, 0)).astype(np.uint64)  # |int64 min| is 2^63 as uint64
    integer, fraction = magnitude // 10**6, magnitude % 10**6
    for i in np.flatnonzero(~fits).tolist():
        integer[i], fraction[i] = divmod(abs((int(high[i]) << 64) | (int(low[i]) & (2**64 - 1))), 10**6)
    out = np.zeros((n, 10), dtype=">i2")
    out[:, 0] = 6  # digits
    out[:, 1] = 3  # weight of the first digit
    out[:, 2] = np.where(np.where(fits, low < 0, high < 0), 0x4000, 0)  # the sign: 0x4000 negative
    out[:, 3] = 6  # display scale
    out[:, 4] = integer // 10**12
    out[:, 5] = integer // 10**8 % 10**4
    out[:, 6] = integer // 10**4 % 10**4
    out[:, 7] = integer % 10**4
    out[:, 8] = fraction // 100
    out[:, 9] = fraction % 100 * 100
    return out


def _pg_copy_binary(table: Any) -> tuple[list[str], list[Any]]:
    """The batch as ``COPY ... (<the columns>) FROM STDIN (FORMAT binary)`` data: (the columns in the order
    sent, the buffers to write in order). The staging table takes the same data (its ``_idx`` numbers the rows
    as they come).

    Binary, not CSV: the server reads numbers, times and money as they are stored instead of parsing their text
    (COPY of the FOCUS bench's 100,000 rows into ``usage_records``: backend CPU 2.08 against 2.75 s), and no text
    is quoted or escaped (x_extra, JSON, is most of a FOCUS batch's bytes). Each field is its length (4 bytes,
    big-endian, -1 for NULL) and its bytes. The columns of fixed width and those NULL on every row go first, laid
    out with numpy as one block of bytes a row (a NULL's bytes left out by a mask); then each text column's
    lengths and values, and one ``binary_join_element_wise`` puts every row's pieces end to end (its time grows
    with the pieces: 2 a row for 2 x 37 before)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    names: list[str] = []
    block = [np.full((n, 1), len(_COLUMNS), dtype=">i2").view(np.uint8)]  # each row: its number of fields
    keep: list[Any] = [None]
    texts: list[tuple[str, Any]] = []
    for name in _COLUMNS:
        col = table.column(name)
        col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
        kind = _PG_KINDS[name]
        if col.null_count == n:
            names.append(name)
            block.append(np.full((n, 1), -1, dtype=">i4").view(np.uint8))
            keep.append(None)
        elif kind == "text":
            texts.append((name, col))
        else:
            names.append(name)
            valid = col.is_valid().to_numpy(zero_copy_only=False) if col.null_count else None
            data = _pg_fixed(col, kind, valid)
            length = np.full((n, 1), data.shape[1], dtype=">i4")
            if valid is not None:
                length[~valid] = -1
                mask = np.ones((n, 4 + data.shape[1]), dtype=bool)
                mask[:, 4:] = valid[:, None]
            block.extend((length.view(np.uint8), data))
            keep.extend((None, None) if valid is None else (mask[:, :4], mask[:, 4:]))
    fixed = np.concatenate(block, axis=1)
    if any(k is not None for k in keep):
        mask = np.concatenate(
            [np.ones(b.shape, dtype=bool) if k is None else k for b, k in zip(block, keep, strict=True)], axis=1
        )
        flat, widths = fixed[mask], mask.sum(axis=1)
    else:
        flat, widths = fixed.ravel(), np.full(n, fixed.shape[1])
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(widths, out=offsets[1:])
    parts = [pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(flat)])]
    for name, col in texts:
        names.append(name)
        col = col.cast(pa.string())
        bounds = np.frombuffer(col.buffers()[1], dtype=np.int32)[col.offset : col.offset + n + 1]
        length = (bounds[1:] - bounds[:-1]).astype(">i4")
        if col.null_count:
            length[~col.is_valid().to_numpy(zero_copy_only=False)] = -1
        parts.extend((_pg_binary(length.view(np.uint8).reshape(n, 4)), col.cast(pa.binary())))
    rows = pc.binary_join_element_wise(*parts, b"", null_handling="replace", null_replacement=b"")
    bounds = np.frombuffer(rows.buffers()[1], dtype=np.int32)[rows.offset : rows.offset + n + 1]
    data = rows.buffers()[2].slice(int(bounds[0]), int(bounds[-1] - bounds[0]))
    return names, [_PG_BINARY_HEADER, data, b"\xff\xff"]


def _pg_copy_fresh(connection: Any, table: Any, data: tuple[list[str], list[Any]]) -> bool:
    """PostgreSQL: when none of the batch's keys is in the ledger (one indexed ``= ANY`` lookup), ``COPY`` the
    batch straight into ``usage_records`` and say True. The staging table, its second copy of every row, the
    anti-join and the sort are then not needed: every row is new. A concurrent writer that commits one of the
    keys between the lookup and the ``COPY`` makes the ``COPY`` fail on the unique key; it is rolled back to a
    savepoint (nothing of it stays) and False sends the batch through the staging path, whose ``ON CONFLICT DO
    NOTHING`` counts that key unchanged. *data*: the batch's binary COPY data (:func:`_pg_copy_binary`)."""
    import psycopg

    keys = table.column("source_key").to_pylist()
    joined = "\n".join(keys)
    with connection.cursor() as cursor:
        if joined.count("\n") == len(keys) - 1:  # the keys as one text, split by the server (no key has a newline)
            cursor.execute(
                "SELECT 1 FROM usage_records WHERE source_key = ANY(string_to_array(%s, chr(10))) LIMIT 1", (joined,)
            )
        else:  # a key with a newline: the keys as an array parameter (psycopg dumps each, ~2 us a key)
            cursor.execute("SELECT 1 FROM usage_records WHERE source_key = ANY(%s) LIMIT 1", (keys,))
        if cursor.fetchone() is not None:
            return False
        cursor.execute("SAVEPOINT flopwise_copy_fresh")
        try:
            with cursor.copy(f"COPY usage_records ({', '.join(data[0])}) FROM STDIN (FORMAT binary)") as copy:
                for part in data[1]:
                    copy.write(part)
        except psycopg.errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT flopwise_copy_fresh")
            return False
        cursor.execute("RELEASE SAVEPOINT flopwise_copy_fresh")
    return True


def _hours(starts: Any) -> set[datetime]:
    """The distinct hours (UTC) of a column of charge-period starts (``timestamp[us, UTC]``, no NULL): integer
    division of the microseconds, where Arrow's ``floor_temporal`` and its zoned datetimes took 2-3x longer."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    micros = pc.cast(starts, pa.int64()).to_numpy(zero_copy_only=False)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return {epoch + timedelta(hours=h) for h in np.unique(micros // 3_600_000_000).tolist()}


def write_columns(
    session: Session,
    table: Any | PreparedColumns,
    *,
    run_id: int | None,
    restate: bool,
    actor: str | None = None,
    exported_at: datetime | None = None,
    ingested_at: datetime | None = None,
) -> BatchCounts:
    """Write one columnar batch (an Arrow table of ledger columns, keys unique within it, or what
    :func:`prepare_columns` made of one for the same run, whose ingest time it keeps) in the session's
    transaction, with :func:`write_batch`'s semantics, set-based:

    1. the batch goes into a temporary staging table in one statement (PostgreSQL ``COPY ... (FORMAT binary)`` of
       the Arrow table, :func:`_pg_copy_binary`; SQLite one prepared ``executemany``);
    2. one join finds the keys already in the ledger and, with *restate*, which of them have values that differ
       (NULL-safe; JSON by its text, so the same value spelled otherwise is only a candidate) and were not written
       by this run: only these go through :func:`write_batch`, which compares values as the row path does (history
       kept, stale exports refused); the others are unchanged;
    3. one ``INSERT ... SELECT`` moves the new keys (``ON CONFLICT (source_key) DO NOTHING``), if there are any.

    On SQLite, where a second copy of each row costs as much as the first, only the rows of known keys are
    staged (found by one ``IN (SELECT value FROM json_each(?))`` over the batch's keys); the new ones go straight
    into the ledger with one ``INSERT ... ON CONFLICT DO NOTHING`` through ``executemany``, the batch's constant
    columns written into it as literals (:func:`_sqlite_insert`).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    counts = BatchCounts()
    dialect = session.get_bind().dialect.name
    prepared = table
    if not isinstance(prepared, PreparedColumns):
        prepared = prepare_columns(table, run_id=run_id, copy=False, ingested_at=ingested_at)
    table = prepared.table
    n = table.num_rows
    if n == 0:
        return counts
    copy = prepared.copy
    if pc.any(prepared.linkable).as_py():  # the links change request_id: the COPY data is made after them
        table, copy = _link(session, table, prepared.linkable), None
    connection = session.connection().connection.driver_connection
    create = _stage_sql(dialect)
    names = ", ".join(_COLUMNS)
    distinct = "IS NOT" if dialect == "sqlite" else "IS DISTINCT FROM"
    join = f"FROM {_STAGE} s JOIN usage_records u ON u.source_key = s.source_key"
    insert = (
        f"INSERT INTO usage_records ({names}) SELECT {names} FROM {_STAGE} s "
        "WHERE NOT EXISTS (SELECT 1 FROM usage_records u WHERE u.source_key = s.source_key) "
        "ORDER BY s._idx ON CONFLICT (source_key) DO NOTHING"
    )
    run = -1 if run_id is None else run_id
    if dialect == "sqlite":
        # the keys already in the ledger (one statement, the keys as one JSON array); only the rows of those
        # go through the staging table, the new ones straight into the ledger in one executemany
        _ensure_sqlite_cache(connection)
        keys = table.column("source_key").to_pylist()
        found = connection.execute(
            "SELECT source_key FROM usage_records WHERE source_key IN (SELECT value FROM json_each(?))",
            (json.dumps(keys),),
        ).fetchall()
        position = {k: i for i, k in enumerate(keys)} if found else {}
        existing = [(position[k],) for (k,) in found]
        changed = []
        if existing and restate:
            known = table.take(pa.array([i for (i,) in existing], pa.int64()))
            connection.execute(create)
            connection.execute(f"DELETE FROM {_STAGE}")
            connection.executemany(*_sqlite_insert(known, [i for (i,) in existing]))
            changed = connection.execute(
                f"SELECT s._idx {join} WHERE (u.ingest_run_id {distinct} ?) AND ({_differs(dialect)})", (run,)
            ).fetchall()
        before = connection.total_changes
        if len(existing) < n:
            rest = table
            if existing:
                keep = np.ones(n, dtype=bool)
                keep[[i for (i,) in existing]] = False
                rest = table.filter(pa.array(keep))
            connection.executemany(*_sqlite_insert(rest))
        inserted = int(connection.total_changes - before)
    elif _pg_copy_fresh(connection, table, data := copy or _pg_copy_binary(table)):
        existing, changed, inserted = [], [], n
    else:
        with connection.cursor() as cursor:
            cursor.execute(create)
            with cursor.copy(f"COPY {_STAGE} ({', '.join(data[0])}) FROM STDIN (FORMAT binary)") as stage:
                for part in data[1]:
                    stage.write(part)
            # the known keys and, with restate, whether each differs, in one join; the INSERT only when some
            # key is new (a file ingested again: none is, and its anti-join would probe every key once more)
            if restate:
                cursor.execute(
                    f"SELECT s._idx, (u.ingest_run_id {distinct} %s) AND ({_differs(dialect)}) {join}", (run,)
                )
            else:
                cursor.execute(f"SELECT s._idx, false {join}")
            found = cursor.fetchall()
            existing = [(i,) for i, _differ in found]
            changed = [(i,) for i, differ in found if differ]
            inserted = 0
            if len(existing) < n:
                cursor.execute(insert)
                inserted = int(cursor.rowcount)
    new = np.ones(n, dtype=bool)
    if existing:
        new[[r[0] for r in existing]] = False
    expected = int(new.sum())
    if inserted != expected:  # a concurrent writer took some keys first: find the rows this batch wrote
        rows = session.execute(
            select(_TABLE.c.source_key).where(
                _TABLE.c.source_key.in_(table.column("source_key").filter(pa.array(new)).to_pylist()),
                _TABLE.c.ingest_run_id == run_id,
            )
        ).scalars()
        mine = set(rows)
        keys = table.column("source_key").to_pylist()
        new &= np.array([k in mine for k in keys])
    counts.inserted = inserted
    counts.unchanged = expected - inserted + len(existing) - len(changed)
    fresh = table if new.all() else table.filter(pa.array(new))  # every row new: no copy of the batch
    if fresh.num_rows:
        cost = pc.sum(fresh.column("cost_usd")).as_py()
        counts.cost_usd = to_money(cost) if cost is not None else Decimal(0)
        counts.device_hours = float(pc.sum(fresh.column("x_device_hours")).as_py() or 0.0)
        counts.energy_kwh = float(pc.sum(fresh.column("x_energy_kwh")).as_py() or 0.0)
        counts.touched = _hours(fresh.column("charge_period_start"))
    if changed:
        restated = write_batch(
            session,
            _python_rows(table, [r[0] for r in changed]),
            run_id=run_id,
            restate=True,
            actor=actor,
            exported_at=exported_at,
        )
        counts.add(restated)
    return counts
