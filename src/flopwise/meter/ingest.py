"""The ingestion pipeline: open a file or URL, parse it, cost each record and write it to the usage ledger.

::

    engine = make_engine(url); upgrade(engine)
    result = ingest_source(make_session_factory(engine), "slurm", "sacct.txt", catalog=load_catalog(),
                           options=IngestOptions(assume_tz="UTC", cluster="hb"))
    assert result.reconciles

Steps (docs/ingest/index.md), one module each:

1. **Open** (:mod:`flopwise.meter.ingest_io`) a path (``.gz`` is decompressed; FOCUS ``.parquet`` goes to
   pyarrow) or an ``http(s)://`` URL through an injected ``httpx.Client`` (a DCGM exporter's ``/metrics``,
   OpenCost's ``/allocation``). Text is streamed line by line; the bytes read so far are reported to *progress*.
2. **Parse** (:mod:`flopwise.meter.ingest_parse`) with the source's parser, which yields :class:`UsageRecord` s
   and fills a list of :class:`RejectedRow` (line number and reason).
3. **Cost** each record with :class:`flopwise.meter.costing.Coster` (billed cost, or the catalog's price per
   device-hour; energy measured or estimated; CO2e; idle).
4. **Write** (:mod:`flopwise.meter.ledger_write`) batches of *batch_size* records, each in its own short write
   transaction: new keys in bulk (SQLite ``executemany``, PostgreSQL ``COPY``), known keys unchanged or, when
   their values differ, restated with the old values kept as history.
5. **Record** the run (``ingest_runs``, with its owner ``host:pid``) and its rejects (``ingest_rejects``). A file
   that cannot be understood at all (:class:`~flopwise.errors.IngestError`) fails the run, Ctrl-C interrupts it:
   what the run wrote is undone. A run whose process died is closed by the next one
   (:mod:`flopwise.meter.ingest_runs`).

A FOCUS CSV file takes the columnar path instead of steps 2-4 when pyarrow is installed
(:mod:`flopwise.meter.ingest_columnar`: Arrow batches, vectorized checks, keys and costing, rows it cannot compute
exactly handed to the row parser; :func:`flopwise.meter.ledger_write.write_columns` writes each batch set-based):
the same ledger, counts and rejects, row by row. So does a sacct file whose delimiter is one ASCII character
(:mod:`flopwise.meter.ingest_sacct_columnar`: the row parser's job/step structure over the JobID column,
vectorized jobs, every job it does not compute exactly built by the row parser itself).

Reconciliation (checked by :attr:`IngestResult.reconciles`)::

    rows_read == records_inserted + records_replaced + records_duplicate + rows_rejected + rows_rolled_up
                 - records_expanded

``rows_rolled_up``: input rows folded into another row's record (Slurm job steps, the metric lines of one GPU
in a DCGM scrape, the samples of one GPU-interval in an nvidia-smi log); ``records_expanded``: records beyond
the first made from one input row (a compressed Slurm job-array line such as ``123_[1-3]``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from flopwise import vocab
from flopwise.errors import IngestError, InputError
from flopwise.meter.costing import Coster, CostingOptions
from flopwise.meter.ingest_io import Progress
from flopwise.meter.ingest_parse import INGEST_SOURCE_NAMES, _parse, _Parsed
from flopwise.meter.ingest_runs import IngestInterrupted, _owner, close_stale_runs
from flopwise.meter.ledger_write import (
    DEFAULT_BATCH_SIZE,
    Attributor,
    BatchCounts,
    costed_row,
    ingest_records,
    undo_run,
)
from flopwise.meter.record import RejectedRow
from flopwise.store.ledger import IngestReject, IngestRun
from flopwise.store.session import write_session
from flopwise.store.types import utcnow

if TYPE_CHECKING:
    import httpx
    from sqlalchemy.orm import Session, sessionmaker

    from flopwise.catalog import Catalog

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SCRAPE_INTERVAL_S",
    "INGEST_SOURCE_NAMES",
    "IngestInterrupted",
    "IngestOptions",
    "IngestResult",
    "costed_row",
    "ingest_records",
    "close_stale_runs",
    "ingest_source",
]

#: dcgm-exporter's default collection interval (``-c 30000`` ms): the span a scrape's readings stand for
DEFAULT_SCRAPE_INTERVAL_S = 30.0
#: rejects kept in the IngestResult (all of them go to ingest_rejects)
_RESULT_REJECTS = 50
_RAW_MAX = 500


@dataclass(frozen=True)
class IngestOptions:
    """How to read one input. Every field is optional; the parsers say when one is needed.

    *assume_tz*: IANA zone of zone-less timestamps (sacct, nvidia-smi; FOCUS reads them as UTC, as the FOCUS
    spec says its timestamps are, unless this is given). *cluster*: the
    Slurm cluster name when sacct output has no Cluster field. *fields*: sacct's ``--format`` list or nvidia-smi's
    ``--query-gpu`` list for header-less output. *delimiter*: sacct/CSV delimiter when it cannot be sniffed.
    *region*: the catalog region of usage that names none (CO2e of on-prem usage). *scraped_at*: when a DCGM
    scrape file was taken (default: its samples' own timestamps, else the file's modification time with the
    scrape's content as its identity); *scrape_interval_s*: the span the first scrape
    of a run stands for. *interval_s*: nvidia-smi aggregation interval. *batch_size*: records per write
    transaction. *actor*: who runs the ingest (kept on the run and on the history of every row it restates).
    *exported_at*: when the input was exported (default: a file's modification time, a URL's fetch time); a
    charge the ledger holds from a later export is not restated by an older one. *columnar*: read FOCUS CSV
    files and sacct files with the columnar paths (:mod:`flopwise.meter.ingest_columnar`,
    :mod:`flopwise.meter.ingest_sacct_columnar`, need pyarrow) when they take them (False: always row by row; the
    ledger is the same either way). *overlap*: on PostgreSQL, write each batch in a
    background thread while the next one is read and costed (:class:`~flopwise.meter.ledger_write.BackgroundWriter`;
    the batches, their transactions and the ledger are the same either way). On by default: with a core free it
    gave 1.54x and 1.77x of one thread for PostgreSQL FOCUS on a quiet machine, and under a load of 5-8 on 2
    cores it lost nothing beyond the noise (``bench/bench_ingest.py``, docs/ingest/index.md). SQLite always
    writes in the reading thread: its driver gives up the GIL around every row it inserts, and while the reading
    thread computes, each row's hand-back waits for Python's switch interval (5 ms).
    """

    assume_tz: str | None = None
    cluster: str | None = None
    fields: Sequence[str] | str | None = None
    delimiter: str | None = None
    region: str | None = None
    prefer_onprem: bool = True
    currency: str = "USD"
    scraped_at: datetime | None = None
    scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S
    interval_s: float = 3600.0
    batch_size: int = DEFAULT_BATCH_SIZE
    actor: str | None = None
    exported_at: datetime | None = None
    columnar: bool = True
    overlap: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError("batch_size", self.batch_size, "give a positive number of records per batch")
        if self.scrape_interval_s <= 0:
            raise InputError("scrape_interval_s", self.scrape_interval_s, "give a positive number of seconds")
        if self.exported_at is not None and self.exported_at.tzinfo is None:
            raise InputError(
                "exported_at", self.exported_at.isoformat(), "give a time with a zone, e.g. ...Z"
            )
        if self.scraped_at is not None and self.scraped_at.tzinfo is None:
            raise InputError("scraped_at", self.scraped_at.isoformat(), "give a time with a zone, e.g. ...Z")


@dataclass(frozen=True)
class IngestResult:
    """The counts of one run (as stored in ``ingest_runs``), its first rejects and, if it failed, why."""

    run_id: int
    source: str
    path: str
    status: str  # ok | partial | failed | interrupted
    rows_read: int
    records_inserted: int
    records_duplicate: int  # unchanged: already in the ledger with the same values
    rows_rejected: int
    rows_rolled_up: int
    records_expanded: int = 0
    message: str | None = None
    rejects: tuple[RejectedRow, ...] = field(default=())
    cost_usd: str = "0"  # of the inserted records only
    device_hours: float = 0.0
    energy_kwh: float = 0.0
    records_replaced: int = 0  # restated: already in the ledger with other values, now replaced
    records_stale: int = 0  # of the unchanged: other values, but from an older export than the ledger's
    restated_cost_usd: str = "0"  # the change the replacements made to the ledger's cost (new - old)
    touched: frozenset[datetime] = field(default=frozenset(), repr=False, compare=False)

    @property
    def records_unchanged(self) -> int:
        return self.records_duplicate

    @property
    def reconciles(self) -> bool:
        """Every input row is a record (new, replaced or unchanged), a reject, or folded into another row's."""
        return self.rows_read == (
            self.records_inserted
            + self.records_replaced
            + self.records_duplicate
            + self.rows_rejected
            + self.rows_rolled_up
            - self.records_expanded
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "source": self.source,
            "path": self.path,
            "status": self.status,
            "rows_read": self.rows_read,
            "records_inserted": self.records_inserted,
            "records_replaced": self.records_replaced,
            "records_unchanged": self.records_duplicate,
            "records_stale": self.records_stale,
            "records_duplicate": self.records_duplicate,
            "rows_rejected": self.rows_rejected,
            "rows_rolled_up": self.rows_rolled_up,
            "records_expanded": self.records_expanded,
            "reconciles": self.reconciles,
            "message": self.message,
            "cost_usd": self.cost_usd,
            "restated_cost_usd": self.restated_cost_usd,
            "device_hours": self.device_hours,
            "energy_kwh": self.energy_kwh,
            "rejects": [{"line": r.line, "reason": r.reason} for r in self.rejects],
        }


def _write_rejects(
    factory: sessionmaker[Session], run_id: int, rejected: list[RejectedRow], start: int
) -> None:
    for i in range(start, len(rejected), DEFAULT_BATCH_SIZE):
        chunk = rejected[i : i + DEFAULT_BATCH_SIZE]
        with write_session(factory) as session:
            session.execute(
                IngestReject.__table__.insert(),
                [
                    {
                        "ingest_run_id": run_id,
                        "line": r.line,
                        "reason": r.reason,
                        "raw": (r.raw or "")[:_RAW_MAX],
                    }
                    for r in chunk
                ],
            )


def ingest_source(
    factory: sessionmaker[Session],
    source: str,
    target: str | os.PathLike[str],
    *,
    catalog: Catalog,
    options: IngestOptions | None = None,
    http_client: httpx.Client | None = None,
    progress: Progress | None = None,
    attribute: Attributor | None = None,
) -> IngestResult:
    """Ingest one file or URL of *source* (one of :data:`INGEST_SOURCE_NAMES`) into the ledger.

    Returns the run's :class:`IngestResult`; a run whose input cannot be understood at all has status
    ``failed``, its message, and nothing of it left in the ledger. A charge already in the ledger with other
    values (a restatement) is replaced, its old values kept as history
    (:mod:`flopwise.meter.ledger_write`). *progress* is called with (bytes read, total bytes or None).
    *attribute* maps a record to (org_id, team_id, project_id); without it records are stored unattributed
    (NULL), to be attributed by rules later. Raises InputError for an unknown *source* and UnknownRegionError
    for an unknown ``options.region``; other unexpected errors (and Ctrl-C) propagate after what the run wrote
    is undone and the run is marked ``failed`` (``interrupted`` for Ctrl-C).
    """
    options = options or IngestOptions()
    source = vocab.ingest_source(source, allowed=INGEST_SOURCE_NAMES)
    target = os.fspath(target)
    coster = Coster(
        catalog, CostingOptions(default_region=options.region, prefer_onprem=options.prefer_onprem)
    )
    close_stale_runs(factory)
    exported_at = options.exported_at or _export_time(target)
    with write_session(factory) as session:
        run = IngestRun(
            source=source,
            path=target[:4000],
            status="running",
            actor=options.actor,
            owner=_owner(),
            exported_at=exported_at,
        )
        session.add(run)
        session.flush()
        run_id = run.id

    parsed: _Parsed | None = None
    # the columnar paths' rejects, filled as they go: a run that fails before they return keeps those read so far
    columnar_rejected: list[RejectedRow] = []
    try:
        plan = None
        if source == "focus" and options.columnar:
            from flopwise.meter.ingest_columnar import columnar_focus_plan

            plan, _why = columnar_focus_plan(target, options.delimiter)
        sacct = None
        if source == "slurm" and options.columnar:
            from flopwise.meter.ingest_sacct_columnar import ingest_sacct_columnar, sacct_plan

            sacct, _why = sacct_plan(target, catalog, options)
        if sacct is not None:
            parsed, counts = ingest_sacct_columnar(
                factory, target, sacct, coster=coster, options=options, run_id=run_id, exported_at=exported_at,
                progress=progress, attribute=attribute, overlap=_overlap(factory, options),
                rejected=columnar_rejected,
            )  # fmt: skip
            totals = {"counts": counts}
        elif plan is not None:
            parsed, counts = _ingest_columnar(
                factory, target, plan, catalog, coster, options, run_id, exported_at, progress, attribute,
                columnar_rejected,
            )
            totals = {"counts": counts}
        else:
            parsed = _parse(
                source, target, catalog=catalog, options=options, client=http_client, progress=progress
            )
            _inserted, _unchanged, totals = ingest_records(
                factory,
                parsed.records,
                coster=coster,
                run_id=run_id,
                batch_size=options.batch_size,
                attribute=attribute,
                restate=parsed.restate,
                actor=options.actor,
                exported_at=exported_at,
                overlap=_overlap(factory, options),
            )
    except IngestError as err:
        rejected = parsed.rejected if parsed is not None else columnar_rejected
        return _fail(factory, run_id, source, target, str(err), rejected)
    except KeyboardInterrupt:
        _fail(
            factory, run_id, source, target, "interrupted (Ctrl-C); nothing of it was kept", [], "interrupted"
        )
        raise IngestInterrupted(run_id) from None
    except BaseException as err:
        _fail(factory, run_id, source, target, f"unexpected error: {type(err).__name__}: {err}", [])
        raise
    finally:
        if parsed is not None and parsed.closer is not None:
            parsed.closer.close()

    counts: BatchCounts = totals["counts"]
    rejected = parsed.rejected
    _write_rejects(factory, run_id, rejected, 0)
    result = IngestResult(
        run_id=run_id,
        source=source,
        path=target,
        status="partial" if rejected else "ok",
        rows_read=parsed.rows_read(),
        records_inserted=counts.inserted,
        records_duplicate=counts.unchanged,
        rows_rejected=len({r.line for r in rejected}),
        rows_rolled_up=parsed.rolled_up(),
        records_expanded=parsed.expanded(),
        rejects=tuple(rejected[:_RESULT_REJECTS]),
        cost_usd=str(counts.cost_usd),
        device_hours=counts.device_hours,
        energy_kwh=counts.energy_kwh,
        records_replaced=counts.replaced,
        records_stale=counts.stale,
        restated_cost_usd=str(counts.restated_cost_usd),
        touched=frozenset(counts.touched),
    )
    with write_session(factory) as session:
        session.execute(
            update(IngestRun)
            .where(IngestRun.id == run_id)
            .values(
                finished_at=utcnow(),
                rows_read=result.rows_read,
                records_inserted=result.records_inserted,
                records_replaced=result.records_replaced,
                records_duplicate=result.records_duplicate,
                rows_rejected=result.rows_rejected,
                rows_rolled_up=result.rows_rolled_up,
                status=result.status,
                message=None if result.reconciles else "input rows and ledger records do not reconcile",
            )
        )
    return result


#: the runs inside :func:`_system_memory_pool` now, and the default pool they found
_pool_users: list[Any] = [0, None]
_pool_lock = threading.Lock()


@contextmanager
def _system_memory_pool() -> Iterator[None]:
    """Arrow allocates from the C library's malloc while a columnar ingest runs (the process's default pool is
    restored after the last concurrent one).

    Python's objects, SQLite's page cache and the rows a batch is written as come from malloc; with Arrow's own
    allocator (mimalloc in pyarrow's wheels) beside it, each allocator keeps its own high-water mark, and memory
    one frees is never the other's. With one heap, the Arrow temporaries of building a batch and the Python rows of
    writing it take turns in the same memory, and each batch's ``release_unused`` (``malloc_trim`` for this pool)
    hands back both. 100,000 FOCUS rows into SQLite, mimalloc against malloc: peak RSS 391 against 365 MB, RSS
    between batches about 325 against 265 MB, ingest CPU 7.86 against 7.65 s (medians of 3 in one process,
    alternating, load 5.6; docs/ingest/index.md, "Memory"). Arrow memory stays with the pool it came from, so the
    switch is safe while other threads use Arrow."""
    import pyarrow as pa

    with _pool_lock:
        if _pool_users[0] == 0:
            _pool_users[1] = pa.default_memory_pool()
            pa.set_memory_pool(pa.system_memory_pool())
        _pool_users[0] += 1
    try:
        yield
    finally:
        with _pool_lock:
            _pool_users[0] -= 1
            if _pool_users[0] == 0:
                pa.set_memory_pool(_pool_users[1])
                _pool_users[1] = None


@_system_memory_pool()
def _ingest_columnar(
    factory: sessionmaker[Session],
    target: str,
    plan: Any,
    catalog: Catalog,
    coster: Coster,
    options: IngestOptions,
    run_id: int,
    exported_at: datetime,
    progress: Progress | None,
    attribute: Attributor | None,
    rejected: list[RejectedRow],
) -> tuple[_Parsed, BatchCounts]:
    """A FOCUS CSV through the columnar path: each batch in its own write transaction
    (:func:`flopwise.meter.ledger_write.write_column_batches`), Arrow's memory from malloc; rejects into
    *rejected* (also when the run fails part way: those read so far)."""
    from flopwise.meter.focus import ParseReport
    from flopwise.meter.ingest_columnar import BATCH_ROWS, focus_column_batches
    from flopwise.meter.ledger_write import write_column_batches

    report = ParseReport(path=target, source="focus")
    parsed = _Parsed(iter(()), rejected, lambda: report.rows_read)
    batches = focus_column_batches(
        target,
        plan,
        catalog=catalog,
        coster=coster,
        assume_tz=options.assume_tz or "UTC",
        report=report,
        rejected=rejected,
        progress=progress,
        attribute=attribute,
        batch_rows=options.batch_size if options.batch_size != DEFAULT_BATCH_SIZE else BATCH_ROWS,
    )

    total = write_column_batches(
        factory, ((table, 0) for table in batches), run_id=run_id, actor=options.actor, exported_at=exported_at,
        overlap=_overlap(factory, options),
    )  # fmt: skip
    return parsed, total


def _overlap(factory: sessionmaker[Session], options: IngestOptions) -> bool:
    """Whether batches are written in a background thread (see :class:`IngestOptions`: PostgreSQL only)."""
    bind = factory.kw.get("bind")
    return options.overlap and bind is not None and bind.dialect.name == "postgresql"


def _export_time(target: str) -> datetime:
    """When *target* was exported, as far as the input tells: a file's modification time, else now (a URL)."""
    from datetime import UTC
    from pathlib import Path

    path = Path(target)
    if not target.startswith(("http://", "https://")) and path.is_file():
        return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    return utcnow()


def _fail(
    factory: sessionmaker[Session],
    run_id: int,
    source: str,
    target: str,
    message: str,
    rejected: list[RejectedRow],
    status: str = "failed",
) -> IngestResult:
    """Undo what the run wrote (restated rows get their values back), keep its rejects, mark it *status*."""
    with write_session(factory) as session:
        undo_run(session, run_id)
    _write_rejects(factory, run_id, rejected, 0)
    with write_session(factory) as session:
        session.execute(
            update(IngestRun)
            .where(IngestRun.id == run_id)
            .values(finished_at=utcnow(), status=status, message=message, rows_rejected=len(rejected))
        )
    return IngestResult(
        run_id=run_id,
        source=source,
        path=target,
        status=status,
        rows_read=0,
        records_inserted=0,
        records_duplicate=0,
        rows_rejected=len(rejected),
        rows_rolled_up=0,
        message=message,
        rejects=tuple(rejected[:_RESULT_REJECTS]),
    )
