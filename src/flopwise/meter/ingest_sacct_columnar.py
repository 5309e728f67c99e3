"""The columnar ingest path for Slurm ``sacct --parsable``/``--parsable2`` files: pyarrow's streaming CSV reader,
the row path's job/step structure replayed on the JobID column alone, vectorized times, sums and ledger columns
for the jobs whose every value has a form this path computes exactly, per distinct value what repeats, and
set-based batch writes (:func:`flopwise.meter.ledger_write.write_columns`).

It gives the same ledger as the row path (:func:`flopwise.meter.sacct.parse_sacct` + :class:`Coster` +
:func:`flopwise.meter.ledger_write.write_batch`), row by row, with the same counts and the same rejects (line,
reason, order) (``tests/meter/test_ingest_sacct_columnar.py``):

* **structure**: which lines are jobs, which steps roll into which job, which are rejected and in what order
  the jobs are emitted is decided by :class:`_Structure`, the row parser's ``feed``/``flush`` (open-job window,
  repeated job lines, steps whose job was emitted) over the JobID column only. Lines pyarrow cannot split into
  the header's fields (a truncated line, ``--parsable``'s trailing delimiter missing or present on some lines,
  a blank line) are split by the row parser's own rule, so each is a job, a step or a reject as there;
* **fast jobs**: a job is built column-wise when its JobID is ``N`` or ``N_M``, its state has ended, its times
  have sacct's form ``YYYY-MM-DDTHH:MM:SS`` (a real date, the zone's offset the same over its hour), and its
  and its steps' durations, TRES/GRES strings, sizes and counts have forms computed exactly (integers within
  2^53, so every sum is exact in any order). Per distinct value (a Python call each): states, durations,
  AllocTRES/AllocGRES/ReqGRES -> GPUs and device, counts, partitions/QOS/cluster -> tags, JSON text of the
  copied fields, users, accounts, node lists, request ids in comments, each hour's UTC offset;
* **every other job** (and its steps) goes, alone, through the row parser's own ``_Parser.build``, which builds
  its records or rejects it with its reason, so no validation rule is lost; costing is :class:`Coster`'s, once
  per distinct (device, hours, utilization, energy, cluster);
* the keys are the row path's ``slurm:<cluster>:<job id>:<Submit>``; a key repeated within a batch keeps its
  first record and counts the others unchanged, as :func:`~flopwise.meter.ledger_write.write_batch` does.

Files the path does not take go to the row path; :func:`columnar_sacct_plan` says which and why: no pyarrow, a
URL, a delimiter that is not one ASCII character (hb-jobinfo's ``☃``), a first line that is blank or that the row
parser cannot set up from.
"""

from __future__ import annotations

import itertools
import json
import operator
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flopwise.errors import IngestError
from flopwise.meter.bounds import check_device_count
from flopwise.meter.keyset import HashedKeySet
from flopwise.meter.record import RejectedRow, UsageRecord
from flopwise.meter.sacct import (
    _NO_TIME,
    _OPEN_JOBS_MAX,
    _REQUEST_RE,
    _SIZE_UNIT,
    _WORK_STEP_SKIP,
    ELAPSED_SLACK_S,
    ENDED_STATES,
    NOT_ENDED_STATES,
    _gpu_count_from_gres,
    _gpus_from_alloc_tres,
    _Job,
    _Parser,
    parse_slurm_duration_s,
)
from flopwise.units import J_PER_KWH, S_PER_H

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from flopwise.catalog import Catalog
    from flopwise.meter.costing import Coster
    from flopwise.meter.ledger_write import Attributor

__all__ = ["SacctCounts", "columnar_sacct_plan", "sacct_column_batches"]

#: lines per batch read (a batch's finished jobs are one write transaction)
BATCH_LINES = 20_000
_BLOCK_BYTES = 1 << 20
_TIME_RE = r"^\d{4}-\d{2}-\d{2}T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d$"
_JOBID_RE = r"^\d+(?:_\d+)?$"
#: a TRES string of name=value entries in plain ASCII (no blanks, nothing Python's strip or split would see)
_TRES_RE = r"^(?:[A-Za-z0-9/:_.+-]+=[A-Za-z0-9:._+-]*(?:,[A-Za-z0-9/:_.+-]+=[A-Za-z0-9:._+-]*)*)?$"
_INT_RE = r"^[0-9]{1,15}$"
_SIZE_FAST_RE = r"^[0-9]{1,15}[KMGTPkmgtp]?$"
_EXACT = float(2**52)  # sums of non-negative integers below this are exact in float64, in any order


def _json(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class _Plan:
    fields: list[str]  # normalized sacct field names, in column order
    delimiter: str
    header_line: str | None
    skip_rows: int
    columns: int  # fields, plus one when the lines end with the delimiter (--parsable)
    trailing: bool


def columnar_sacct_plan(target: str, parser: _Parser) -> tuple[_Plan | None, str]:
    """(the plan, "") when the columnar path takes this sacct file, else (None, why not). *parser* is the row
    parser set up with the run's options (its layout is fixed here from the first line, as the row path does)."""
    from flopwise.meter.ingest_columnar import pyarrow_available

    if target.startswith(("http://", "https://")):
        return None, "a URL"
    if not pyarrow_available():
        return None, "pyarrow is not installed"
    path = Path(target)
    if not path.is_file():
        return None, "not a file"
    from flopwise.meter.ingest_io import _decode_guard, _open_path

    try:
        with _open_path(path, None) as fh:
            lines = _decode_guard(fh, target)
            first = next(iter(lines), None)
            second = next(iter(lines), None)
    except IngestError:
        return None, "the row path reports it"
    if first is None or not first.rstrip("\r\n").strip():
        return None, "the first line is blank"
    first = first.rstrip("\r\n")
    try:
        is_header = parser.setup(first, 1)
    except IngestError:
        return None, "the row path reports it"
    layout = parser.layout
    assert layout is not None
    delim = layout.delimiter
    if len(delim) != 1 or not delim.isascii() or delim in '\r\n"':
        return None, f"the delimiter {delim!r} is not one ASCII character"
    data = (second if is_header else first) or ""
    data = data.rstrip("\r\n")
    n = len(layout.fields)
    parts = data.split(delim)
    trailing = len(parts) == n + 1 and parts[-1] == ""
    return (
        _Plan(
            fields=list(layout.fields),
            delimiter=delim,
            header_line=parser.header_line,
            skip_rows=1 if is_header else 0,
            columns=n + 1 if trailing else n,
            trailing=trailing,
        ),
        "",
    )


@dataclass
class SacctCounts:
    """What the row path's ``_SacctCounts`` counts, for the run's reconciliation."""

    job_lines: int = 0  # job lines that gave records
    step_lines: int = 0  # step lines rolled into those
    records: int = 0
    rejected_lines: set[int] = field(default_factory=set)

    def rows_read(self) -> int:
        return self.job_lines + self.step_lines + len(self.rejected_lines)


class _OJob:
    """An open job: its row (a global row number, or (line, raw, values) for a line pyarrow did not split),
    its steps' rows, lines and names, and the event number of its emission."""

    __slots__ = ("event", "job_id", "line", "ref", "step_lines", "step_names", "steps")

    def __init__(self, ref: Any, line: int) -> None:
        self.ref = ref
        self.line = line
        self.steps: list[Any] | tuple[()] = ()  # lists from the first step on
        self.step_lines: list[int] | tuple[()] = ()
        self.step_names: list[str] | tuple[()] = ()
        self.event = 0
        self.job_id = ""


class _Structure:
    """The row parser's ``feed``/``flush`` over JobIDs: open jobs (at most ``_OPEN_JOBS_MAX``, emitted in order),
    steps rolled into their open job, rejects (keyed by event number, so that they come out in the row path's
    order). *raw_of* gives a row's text for its reject."""

    def __init__(self, path: str, raw_of: Callable[[Any], str]) -> None:
        self.path = path
        self.raw_of = raw_of
        self.open: OrderedDict[str, _OJob] = OrderedDict()
        self.closed = HashedKeySet()  # 8 bytes a job: it only words a reject reason
        self.finished: list[_OJob] = []
        self.rejects: list[tuple[int, int, RejectedRow]] = []  # (event, order, row)
        self.event = 0

    def reject(self, line: int, reason: str, ref: Any) -> None:
        self.event += 1
        self.rejects.append((self.event, 0, RejectedRow(self.path, line, reason, self.raw_of(ref))))

    def flush(self, job_id: str) -> None:
        job = self.open.pop(job_id)
        self.closed.add(job_id)
        self.event += 1
        job.event = self.event
        job.job_id = job_id
        self.finished.append(job)

    def feed(self, jobid_raw: str, ref: Any, line: int) -> None:
        job_id, dot, step = jobid_raw.strip().partition(".")
        if not job_id:
            self.reject(line, "empty JobID", ref)
            return
        if dot:
            job = self.open.get(job_id)
            if job is None:
                why = (
                    "its job was already emitted (sort the input by job)"
                    if job_id in self.closed
                    else ("its job line is not in the input")
                )
                self.reject(line, f"step {jobid_raw!r} cannot roll up: {why}", ref)
                return
            if job.steps:
                job.steps.append(ref)
                job.step_lines.append(line)  # type: ignore[union-attr]
                job.step_names.append(step)  # type: ignore[union-attr]
            else:
                job.steps, job.step_lines, job.step_names = [ref], [line], [step]
            return
        if job_id in self.open:
            self.flush(job_id)
        self.open[job_id] = _OJob(ref, line)
        if len(self.open) > _OPEN_JOBS_MAX:
            while len(self.open) > _OPEN_JOBS_MAX:
                self.flush(next(iter(self.open)))

    def flush_all(self) -> None:
        while self.open:
            self.flush(next(iter(self.open)))


class _Rows:
    """The rows read so far that open jobs still need, by global row number."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, pa.RecordBatch]] = []  # (first global row, batch)
        self.next = 0

    def add(self, batch: pa.RecordBatch) -> int:
        start = self.next
        self.batches.append((start, batch))
        self.next += batch.num_rows
        return start

    def drop_before(self, row: int) -> None:
        while len(self.batches) > 1 and self.batches[1][0] <= row:
            self.batches.pop(0)

    def take(self, rows: list[int], columns: list[str] | None = None) -> pa.Table:
        import numpy as np
        import pyarrow as pa

        base = self.batches[0][0]
        table = pa.Table.from_batches([b for _, b in self.batches])
        if columns is not None:
            table = table.select(columns)
        return table.take(pa.array(np.asarray(rows, dtype=np.int64) - base))


def _map(column: pa.Array, fn: Callable[[str], Any], type_: pa.DataType) -> pa.Array:
    """fn(value) per distinct value of a string column, spread back over its rows."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = column.dictionary_encode()
    values = [fn(v) for v in encoded.dictionary.to_pylist()]
    return pa.DictionaryArray.from_arrays(encoded.indices, pa.array(values, type=type_)).cast(type_)


def _map_py(column: pa.Array, fn: Callable[[str], Any]) -> list[Any]:
    """fn(value) per distinct value of a string column, as a Python list over its rows."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = column.dictionary_encode()
    values = [fn(v) for v in encoded.dictionary.to_pylist()]
    return [values[i] for i in encoded.indices.to_numpy(zero_copy_only=False).tolist()]


_SLOW = object()  # a per-value result that sends the job to the row path


class _Distinct:
    """fn(value) once per distinct value of a string column: the results (``values``) and each row's
    index into them (``codes``)."""

    def __init__(self, column: pa.Array, fn: Callable[[str], Any]) -> None:
        import numpy as np
        import pyarrow as pa

        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        encoded = column.dictionary_encode()
        self.values = [fn(v) for v in encoded.dictionary.to_pylist()]
        self.codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)

    def mask(self, test: Callable[[Any], bool]) -> np.ndarray:
        import numpy as np

        return np.array([bool(test(v)) for v in self.values], dtype=bool)[self.codes]

    def good(self) -> np.ndarray:
        """Rows whose value this path computes (not _SLOW)."""
        return self.mask(lambda v: v is not _SLOW)

    def numbers(self, fn: Callable[[Any], float]) -> np.ndarray:
        """fn(result) as float64 per row (0 for _SLOW)."""
        import numpy as np

        return np.array([0.0 if v is _SLOW else fn(v) for v in self.values], dtype=np.float64)[self.codes]

    def spread(self, fn: Callable[[Any], Any], type_: pa.DataType, rows: np.ndarray) -> pa.Array:
        """fn(result) for *rows* (positions), as an Arrow array (fn called per distinct value)."""
        import pyarrow as pa

        values = pa.array([None if v is _SLOW else fn(v) for v in self.values], type=type_)
        return pa.DictionaryArray.from_arrays(pa.array(self.codes[rows], pa.int32()), values).cast(type_)


def _int_lists(jobs: list[_OJob], counts: np.ndarray) -> pa.Array:
    """``[l1, l2, ...]`` (JSON) of each job's step lines."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from flopwise.meter.ingest_columnar import _concat

    flat = np.fromiter((ln for j in jobs for ln in j.step_lines), dtype=np.int64, count=int(counts.sum()))
    offsets = np.zeros(len(jobs) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat).cast(pa.string()))
    return _concat("[", pc.binary_join(lists, ", "), "]")


def _duration(text: str) -> Any:
    try:
        return parse_slurm_duration_s(text)
    except ValueError:
        return _SLOW


def _state(text: str) -> Any:
    raw_state = text.strip().rstrip("+")
    state, _, by = raw_state.partition(" by ")
    state = state.strip().upper()
    if state not in ENDED_STATES:  # the row parser's reject reason
        if state in NOT_ENDED_STATES:
            return f"skipped: state {state} has not ended; ingest again once the job has ended"
        return f"unknown job state {raw_state!r}; known ended states: {sorted(ENDED_STATES)}"
    return state, (by.strip() if by else None)


def _duration_text(text: str) -> Any:
    """The JSON text of a duration's seconds (``null`` for none), or _SLOW."""
    value = _duration(text)
    return value if value is _SLOW else ("null" if value is None else repr(value))


def _float_text(values: np.ndarray, present: np.ndarray | None = None) -> pa.Array:
    """``repr`` of each float (its JSON text), null where not *present*: whole numbers below 10^16 (repr's
    ``1234.0``, no exponent) as Arrow's integer text plus ``.0``, the others through Python's repr."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from flopwise.meter.ingest_columnar import _concat

    if present is None:
        present = np.ones(len(values), dtype=bool)
    safe = np.where(present, values, 0.0)
    whole = (safe == np.floor(safe)) & (np.abs(safe) < 1e16) & ~np.signbit(safe)
    ints = pa.array(np.where(whole, safe, 0.0).astype(np.int64)).cast(pa.string())
    text = _concat(ints, ".0")
    if not whole.all():
        rest = np.flatnonzero(~whole)
        reprs = [repr(v) for v in safe[rest].tolist()]
        text = pc.replace_with_mask(text, pa.array(~whole), pa.array(reprs, pa.string()))
    if not present.all():
        text = pc.if_else(pa.array(present), text, pa.scalar(None, pa.string()))
    return text


def _count(text: str) -> Any:
    t = text.strip()
    if not t.isdigit():
        return None
    try:
        return int(t)
    except ValueError:
        return _SLOW


class _Builder:
    """The ledger columns of a list of finished jobs (see the module doc)."""

    #: the fields of step rows the fast path reads
    STEP_FIELDS = ("tresusageintot", "tresusageinmax", "tresusageouttot", "elapsed")

    def __init__(self, plan: _Plan, parser: _Parser, coster: Coster, path: str) -> None:
        import pyarrow as pa

        self.plan = plan
        self.parser = parser
        self.coster = coster
        self.path = path
        self.col = {name: i for i, name in enumerate(plan.fields)}  # the last column of a repeated name
        assert parser.layout is not None  # set up by columnar_sacct_plan
        self.layout = parser.layout
        self.money_type = pa.decimal128(20, 6)
        self.ts_type = pa.timestamp("us", tz="UTC")
        self.gpu_cache: dict[tuple[str, str, str], Any] = {}
        self.cost_cache: dict[tuple[Any, ...], Any] = {}
        self.offset_cache: dict[str, Any] = {}
        self.tags_cache: dict[tuple[str, str, str], str] = {}
        self.cluster_opt = parser.cluster

    # --- helpers ------------------------------------------------------------------------------------------

    def has(self, name: str) -> bool:
        return name in self.col

    def column(self, table: pa.Table, name: str) -> pa.Array:
        return table.column(f"c{self.col[name]}").combine_chunks()

    def values(self, row: dict[str, str]) -> dict[str, str]:
        """A row's values as the row parser's ``dict(zip(fields, parts))`` (a repeated name: its last value)."""
        return {name: row[f"c{i}"] for i, name in enumerate(self.plan.fields)}

    def raw(self, row: dict[str, str]) -> str:
        return self.plan.delimiter.join(row[f"c{i}"] for i in range(self.plan.columns))

    def gpus(self, alloc: str, allocgres: str, reqgres: str) -> Any:
        key = (alloc, allocgres, reqgres)
        found = self.gpu_cache.get(key)
        if found is None:
            try:
                if alloc.strip():
                    gpus, types = _gpus_from_alloc_tres(alloc)
                elif allocgres.strip():
                    gpus, types = _gpu_count_from_gres(allocgres)
                elif reqgres.strip():
                    gpus, types = _gpu_count_from_gres(reqgres)
                else:
                    gpus, types = _gpus_from_alloc_tres(alloc)
                check_device_count(gpus, "allocated GPUs")
                device = self.parser.device_id(next(iter(types))) if len(types) == 1 else None
                found = (gpus, json.dumps(dict(types), ensure_ascii=False), device)
            except ValueError:
                found = _SLOW
            if len(self.gpu_cache) > 65536:
                self.gpu_cache.clear()
            self.gpu_cache[key] = found
        return found

    def offset_s(self, hour_text: str) -> Any:
        """The zone's UTC offset (seconds) of local times in the hour *hour_text* (``YYYY-MM-DDTHH``), or _SLOW
        when it is not the same over the hour or the date is not real."""
        found = self.offset_cache.get(hour_text)
        if found is None:
            tz = self.parser.tz
            try:
                a = datetime.fromisoformat(hour_text + ":00:00").replace(tzinfo=tz)
                b = datetime.fromisoformat(hour_text + ":59:59").replace(tzinfo=tz)
            except ValueError:
                found = _SLOW
            else:
                oa, ob = a.utcoffset(), b.utcoffset()
                found = _SLOW if oa is None or oa != ob else int(oa / timedelta(microseconds=1))
            if len(self.offset_cache) > 100_000:
                self.offset_cache.clear()
            self.offset_cache[hour_text] = found
        return found

    def tags(self, partition: str, qos: str, cluster: str) -> str:
        key = (partition, qos, cluster)
        found = self.tags_cache.get(key)
        if found is None:
            from flopwise.store.session import _json_dumps

            tags = {k: v.strip() for k, v in (("partition", partition), ("qos", qos)) if v.strip()}
            if cluster:
                tags["cluster"] = cluster
            found = _json_dumps(tags) if tags else "{}"
            if len(self.tags_cache) > 65536:
                self.tags_cache.clear()
            self.tags_cache[key] = found
        return found

    def times(self, col: pa.Array, ok: np.ndarray) -> tuple[pa.Array, np.ndarray]:
        """Local sacct times as UTC timestamps; *ok* cleared where the form is not the strict one."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        form = pc.fill_null(pc.match_substring_regex(col, _TIME_RE), False).to_numpy(zero_copy_only=False)
        good = ok & form
        text = pc.if_else(pa.array(good), col, pa.scalar("1970-01-01T00:00:00"))
        offsets = np.asarray(
            _map_py(pc.utf8_slice_codeunits(text, 0, 13), self.offset_s) if len(text) else [], dtype=object
        )
        slow = np.array([o is _SLOW for o in offsets], dtype=bool) if len(offsets) else np.zeros(0, bool)
        good &= ~slow
        offs = np.array([0 if o is _SLOW else o for o in offsets], dtype=np.int64)
        ts = pc.strptime(text, format="%Y-%m-%dT%H:%M:%S", unit="us", error_is_null=True)
        back = pc.utf8_slice_codeunits(pc.cast(ts, pa.string()), 0, 10)
        same = pc.fill_null(pc.equal(back, pc.utf8_slice_codeunits(text, 0, 10)), False)
        good &= same.to_numpy(zero_copy_only=False)
        micros = pc.fill_null(ts.cast(pa.int64()), 0).to_numpy(zero_copy_only=False) - offs
        return pa.array(micros, pa.int64()).cast(self.ts_type), good

    # --- one list of finished jobs -----------------------------------------------------------------------

    def build(
        self, jobs: list[_OJob], rows: _Rows, structure: _Structure, counts: SacctCounts
    ) -> pa.Table | None:
        """The ledger columns of *jobs* (emission order; ``source_key`` made, repeats within dropped), or None."""
        import numpy as np
        import pyarrow as pa

        if not jobs:
            return None
        arrow_jobs = [j for j in jobs if isinstance(j.ref, int)]
        fast = np.zeros(len(jobs), dtype=bool)
        handled = np.zeros(len(jobs), dtype=bool)
        table = None
        if arrow_jobs:
            position = {id(j): i for i, j in enumerate(jobs)}
            jpos = np.array([position[id(j)] for j in arrow_jobs], dtype=np.int64)
            step_ok = np.array([all(isinstance(s, int) for s in j.steps) for j in arrow_jobs], dtype=bool)
            jt = rows.take([j.ref for j in arrow_jobs])
            step_refs = [s for j in arrow_jobs for s in j.steps if isinstance(s, int)]
            wanted = [f"c{self.col[c]}" for c in self.STEP_FIELDS if c in self.col]
            st = rows.take(step_refs, wanted) if step_refs else None
            states = _Distinct(self.column(jt, "state"), _state)
            waiting = np.flatnonzero(states.mask(lambda st_: type(st_) is str)).tolist()
            if waiting:  # not ended, or an unknown state: the row parser's first check, its reject
                reasons = [states.values[states.codes[k]] for k in waiting]
                self.reject_all([arrow_jobs[k] for k in waiting], reasons, rows, structure)
                handled[jpos[waiting]] = True
            table, ok = self.fast_columns(arrow_jobs, jt, st, step_ok, states)
            fast[jpos[ok]] = True
            if table is not None:
                table = table.append_column("_pos", pa.array(jpos[ok], pa.int64()))
        slow = [j for i, j in enumerate(jobs) if not fast[i] and not handled[i]]
        records: list[tuple[int, UsageRecord]] = []
        if slow:
            position = {id(j): i for i, j in enumerate(jobs)}
            records = self.slow_records(slow, position, rows, structure)
        for i, job in enumerate(jobs):
            if fast[i]:
                counts.job_lines += 1
                counts.step_lines += len(job.steps)
                counts.records += 1
        counts.records += len(records)
        seen_lines: set[int] = set()
        for _, rec in records:
            line = rec.x_extra["source_line"]
            if line not in seen_lines:
                seen_lines.add(line)
                counts.job_lines += 1
                counts.step_lines += len(rec.x_extra["step_lines"])
        if records:
            from flopwise.meter.ingest_columnar import _records_table

            schema = table.schema if table is not None else self.schema()
            ledger = pa.schema([f for f in schema if f.name not in ("_partition", "_pos")])
            extra = _records_table([r for _, r in records], self.coster, ledger)
            partition = [r.x_extra.get("partition") for _, r in records]
            extra = extra.append_column("_partition", pa.array(partition, pa.string()))
            extra = extra.append_column("_pos", pa.array([p for p, _ in records], pa.int64()))
            extra = extra.cast(schema)
            table = extra if table is None else pa.concat_tables([table, extra])
        if table is None or table.num_rows == 0:
            return None
        order = np.argsort(table.column("_pos").to_numpy(), kind="stable")
        table = table.take(pa.array(order)).drop_columns(["_pos"])
        return table

    def raws(self, refs: list[Any], rows: _Rows) -> list[str]:
        """The text of rows (global numbers, or lines pyarrow did not split)."""
        import pyarrow.compute as pc

        arrow = [r for r in refs if isinstance(r, int)]
        texts: dict[int, str] = {}
        if arrow:
            taken = rows.take(arrow)
            joined = pc.binary_join_element_wise(
                *(taken.column(f"c{i}") for i in range(self.plan.columns)), self.plan.delimiter
            )
            texts = dict(zip(arrow, joined.to_pylist(), strict=True))
        return [texts[r] if isinstance(r, int) else str(r[1]) for r in refs]

    def reject_all(self, jobs: list[_OJob], reasons: list[str], rows: _Rows, structure: _Structure) -> None:
        """Reject *jobs* and their steps as the row parser's ``flush`` does when ``build`` raises."""
        texts = iter(self.raws([r for j in jobs for r in (j.ref, *j.steps)], rows))
        for job, reason in zip(jobs, reasons, strict=True):
            raw = next(texts)
            structure.rejects.append(
                (job.event, 0, RejectedRow(self.path, job.line, f"job {job.job_id}: {reason}", raw))
            )
            for k, ln in enumerate(job.step_lines, start=1):
                why = f"step of job {job.job_id}, not metered (see line {job.line})"
                structure.rejects.append((job.event, k, RejectedRow(self.path, ln, why, next(texts))))

    def schema(self) -> pa.Schema:
        import pyarrow as pa

        from flopwise.meter.ledger_write import _COLUMNS

        types: dict[str, pa.DataType] = {}
        for name in _COLUMNS[: _COLUMNS.index("org_id")]:
            if name in ("charge_period_start", "charge_period_end"):
                types[name] = self.ts_type
            elif name in ("billed_cost", "effective_cost", "list_cost", "cost_usd", "idle_cost_usd"):
                types[name] = self.money_type
            elif name in (
                "x_device_count", "x_device_hours", "x_gpu_utilization", "x_energy_kwh", "x_co2e_kg",
                "idle_device_hours",
            ):  # fmt: skip
                types[name] = pa.float64()
            else:
                types[name] = pa.string()
        fields = [pa.field(n, t) for n, t in types.items() if n != "source_key"]
        hidden = [
            pa.field("_key_text", pa.string()),
            pa.field("_partition", pa.string()),
            pa.field("_pos", pa.int64()),
        ]
        return pa.schema([*fields, *hidden])

    def slow_records(
        self, jobs: list[_OJob], position: dict[int, int], rows: _Rows, structure: _Structure
    ) -> list[tuple[int, UsageRecord]]:
        """The row parser's build for *jobs*: (emission position, record); rejects into *structure*."""
        arrow = sorted({r for j in jobs for r in (j.ref, *j.steps) if isinstance(r, int)})
        by_ref: dict[int, dict[str, str]] = {}
        if arrow:
            for ref, row in zip(arrow, rows.take(arrow).to_pylist(), strict=True):
                by_ref[ref] = row
        out: list[tuple[int, UsageRecord]] = []

        def unpack(ref: Any) -> tuple[dict[str, str], str]:
            if isinstance(ref, int):
                row = by_ref[ref]
                return self.values(row), self.raw(row)
            _line, raw, values = ref
            return dict(values), raw

        for job in jobs:
            values, raw = unpack(job.ref)
            ojob = _Job(job.line, raw, values)
            for ref, line, name in zip(job.steps, job.step_lines, job.step_names, strict=True):
                svalues, sraw = unpack(ref)
                svalues["_step"] = name
                ojob.step_lines.append(line)
                ojob.step_raws.append(sraw)
                ojob.steps.append(svalues)
            try:
                built = self.parser.build(job.job_id, ojob)
            except ValueError as exc:
                structure.rejects.append(
                    (job.event, 0, RejectedRow(self.path, job.line, f"job {job.job_id}: {exc}", raw))
                )
                for k, (ln, sraw) in enumerate(zip(ojob.step_lines, ojob.step_raws, strict=True), start=1):
                    reason = f"step of job {job.job_id}, not metered (see line {job.line})"
                    structure.rejects.append((job.event, k, RejectedRow(self.path, ln, reason, sraw)))
                continue
            pos = position[id(job)]
            out.extend((pos, r) for r in built)
        return out

    def fast_columns(
        self, jobs: list[_OJob], jt: pa.Table, st: pa.Table | None, step_ok: np.ndarray, states: _Distinct
    ) -> tuple[pa.Table | None, np.ndarray]:
        """(ledger columns of the jobs it computes, with ``_key_text``; the mask of those among *jobs*)."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        n = len(jobs)
        ok = step_ok.copy()
        has = self.has
        empty = pa.array([""] * n, pa.string())

        def col(name: str) -> pa.Array:
            return self.column(jt, name) if has(name) else empty

        jobid = col("jobid")
        ok &= pc.match_substring_regex(jobid, _JOBID_RE).to_numpy(zero_copy_only=False)
        if self.plan.trailing:
            ok &= pc.equal(jt.column(f"c{self.plan.columns - 1}").combine_chunks(), "").to_numpy(
                zero_copy_only=False
            )
        ok &= states.mask(lambda st_: type(st_) is tuple)
        if self.parser.tz is None:
            ok[:] = False
        if not ok.any():
            return None, ok
        start, good = self.times(col("start"), ok)
        ok &= good
        end, good = self.times(col("end"), ok)
        ok &= good
        start_us = start.cast(pa.int64()).to_numpy(zero_copy_only=False)
        end_us = end.cast(pa.int64()).to_numpy(zero_copy_only=False)
        ok &= end_us >= start_us
        # submit / eligible: the strict form, or a "no time" word (null in x_extra)
        extra_times: dict[str, pa.Array] = {}
        for key in ("submit", "eligible"):
            if not has(key):
                continue
            c = col(key)
            none = np.array(_map_py(c, lambda t: t.strip().lower() in _NO_TIME), dtype=bool)
            ts, good = self.times(c, ok & ~none)
            ok &= good | none
            text = pc.binary_join_element_wise(
                pc.replace_substring(pc.cast(pc.cast(ts, pa.timestamp("s")), pa.string()), " ", "T"),
                "+00:00",
                "",
            )
            extra_times[key] = pc.if_else(pa.array(none), pa.scalar(None, pa.string()), _quoted(text))
        # elapsed
        elapsed = np.full(n, np.nan)
        done = np.zeros(n, dtype=bool)
        if has("elapsedraw"):
            # the row path's float(ElapsedRaw) when it is all digits; other digits ('²') or a huge count: row path
            raw = _map_py(
                col("elapsedraw"),
                lambda t: (
                    (float(t) if re.fullmatch(r"\s*[0-9]{1,15}\s*", t) else _SLOW)
                    if t.strip().isdigit()
                    else None
                ),
            )
            for i, v in enumerate(raw):
                if v is _SLOW:
                    ok[i] = False
                elif v is not None:
                    elapsed[i] = v
                    done[i] = True
        if has("elapsed"):
            c = col("elapsed")
            for i, v in enumerate(_map_py(c, lambda t: _duration(t) if t.strip() else None)):
                if done[i] or v is None:
                    continue
                if v is _SLOW:
                    ok[i] = False
                else:
                    elapsed[i] = v
                    done[i] = True
        span = (end_us - start_us) / 1e6
        elapsed = np.where(done, elapsed, span)
        ok &= ~(elapsed > span + ELAPSED_SLACK_S)  # the row parser refuses it as a corrupt line
        # the per-distinct keys below join fields with \x1f: a value holding one goes to the row parser
        for name in ("alloctres", "allocgres", "reqgres", "partition", "qos", "cluster"):
            if has(name):
                ok &= ~pc.match_substring(col(name), "\x1f").to_numpy(zero_copy_only=False)
        if "\x1f" in (self.cluster_opt or ""):
            ok[:] = False
        # GPUs, per distinct (AllocTRES, AllocGRES, ReqGRES)
        gpu_key = pc.binary_join_element_wise(col("alloctres"), col("allocgres"), col("reqgres"), "\x1f")
        gpu = _Distinct(gpu_key, lambda k: self.gpus(*k.split("\x1f")) if k.count("\x1f") == 2 else _SLOW)
        ok &= gpu.good()
        gpus = gpu.numbers(lambda g: g[0])
        # counts, durations copied into x_extra (their JSON text, per distinct value)
        counts: dict[str, _Distinct] = {}
        for key, _name in self.layout.extra_count_fields:
            counts[key] = _Distinct(col(key), _count)
            ok &= counts[key].good()
        durations: dict[str, _Distinct] = {}
        for key in ("timelimit", "totalcpu"):
            if has(key):
                durations[key] = _Distinct(col(key), _duration_text)
                ok &= durations[key].good()
        joules = None
        if has("consumedenergyraw"):
            joules = _Distinct(
                col("consumedenergyraw"),
                lambda t: (
                    (int(t) if re.fullmatch(r"[0-9]{1,15}", t) else _SLOW) if t.strip().isdigit() else None
                ),
            )
            ok &= joules.good()
        # steps
        usage = self.step_usage(jobs, st, gpus, ok)
        if not ok.any():
            return None, ok

        # --- the fast jobs' columns ---
        keep = pa.array(ok)
        idx = np.flatnonzero(ok)
        m = len(idx)

        def fcol(name: str) -> pa.Array:
            return pc.filter(col(name), keep)

        job_ids = pc.filter(jobid, keep)
        cluster_opt = self.cluster_opt or ""
        cluster = _map(fcol("cluster"), lambda c: c.strip() or cluster_opt, pa.string())
        submit_raw = _map(fcol("submit"), lambda c: c.strip(), pa.string())
        key_text = pc.binary_join_element_wise(
            pa.array(["slurm"] * m, pa.string()), cluster, job_ids, submit_raw, ":"
        )
        provider = pc.if_else(pc.equal(cluster, ""), pa.scalar(None, pa.string()), cluster)
        node_list = _map(
            fcol("nodelist"),
            lambda t: t.strip() if t.strip() and t.strip() != "None assigned" else None,
            pa.string(),
        )
        tags_key = pc.binary_join_element_wise(fcol("partition"), fcol("qos"), cluster, "\x1f")
        tags = _map(tags_key, lambda k: self.tags(*k.split("\x1f")), pa.string())
        user = _map(fcol("user"), lambda t: t.strip() or None, pa.string())
        account = _map(fcol("account"), lambda t: t.strip() or None, pa.string())
        request = None
        for key in ("comment", "admincomment"):
            found = _map(
                fcol(key), lambda t: mm.group(1) if (mm := _REQUEST_RE.search(t)) else None, pa.string()
            )
            request = found if request is None else pc.coalesce(request, found)
        f_gpus = gpus[idx]
        f_elapsed = elapsed[idx]
        hours = f_gpus * f_elapsed / S_PER_H
        device = gpu.spread(lambda g: g[2], pa.string(), idx)
        util = usage["util"][idx]
        energy_j = usage["energy_j"][idx]
        energy = np.where(energy_j > 0, energy_j / J_PER_KWH, np.nan)
        if joules is not None:
            j = joules.numbers(lambda v: float(v) if v else 0.0)[idx]  # int/float: exact below 2^53
            energy = np.where(j > 0, j / J_PER_KWH, energy)
        # costing (Coster.cost), once per distinct (device, hours, utilization, energy, cluster); a job with no
        # device, energy or utilization has no cost, energy, idle or CO2e whatever its cluster and hours
        costed = self.costed(device, hours, util, energy, provider)

        # x_extra, in the row path's key order
        pieces: list[pa.Array] = []
        names: list[str] = []

        def piece(name: str, values: pa.Array) -> None:
            names.append(name)
            pieces.append(values)

        piece("state", states.spread(lambda st_: _json(st_[0]), pa.string(), idx))
        fast_jobs = [jobs[i] for i in idx.tolist()]
        steps_n = np.fromiter((len(j.steps) for j in fast_jobs), dtype=np.int64, count=m)
        piece(
            "source_line", pa.array(np.fromiter((j.line for j in fast_jobs), np.int64, m)).cast(pa.string())
        )
        piece("step_lines", _int_lists(fast_jobs, steps_n))
        piece("elapsed_s", _float_text(f_elapsed))
        piece("gpu_types", gpu.spread(lambda g: g[1], pa.string(), idx))
        piece(
            "cancelled_by_uid",
            states.spread(lambda st_: None if st_[1] is None else _json(st_[1]), pa.string(), idx),
        )
        for key, name in self.layout.extra_text_fields:
            piece(name, _map(fcol(key), _json, pa.string()))
        count_names: dict[str, int] = {}
        ncpus: np.ndarray | None = None  # the count, -1 where none
        for key, name in self.layout.extra_count_fields:
            text = counts[key].spread(lambda v: None if v is None else str(v), pa.string(), idx)
            if name == "ncpus":
                values = counts[key].numbers(lambda v: -1.0 if v is None else float(v))[idx]
                ncpus = values if ncpus is None else np.where(values >= 0, values, ncpus)
            if name in count_names:  # alloccpus after ncpus: the same key, its first place, the last value
                at = count_names[name]
                pieces[at] = pc.coalesce(text, pieces[at])
                continue
            count_names[name] = len(pieces)
            piece(name, text)
        if ncpus is not None:
            # the row path's int * float / float; counts beyond 2^53 are not exact as floats: Python for those
            whole = (ncpus >= 0) & (ncpus < 2.0**53)
            cpu_h = np.where(whole, ncpus, 0.0) * f_elapsed / S_PER_H
            text = _float_text(cpu_h, whole)
            big = np.flatnonzero(ncpus >= 2.0**53)
            if len(big):
                ints = [int(v) for v in pc.take(pieces[count_names["ncpus"]], pa.array(big)).to_pylist()]
                texts = [
                    repr(c * float(f_elapsed[i]) / S_PER_H) for c, i in zip(ints, big.tolist(), strict=True)
                ]
                mask = np.zeros(m, dtype=bool)
                mask[big] = True
                text = pc.replace_with_mask(text, pa.array(mask), pa.array(texts, pa.string()))
            piece("cpu_hours", text)
        for key in ("submit", "eligible"):
            if key in extra_times:
                piece(key, pc.fill_null(pc.filter(extra_times[key], keep), "null"))
        for key, name in (("timelimit", "timelimit_s"), ("totalcpu", "total_cpu_s")):
            if key in durations:
                piece(name, durations[key].spread(lambda v: v, pa.string(), idx))
        piece("steps", pa.array(steps_n).cast(pa.string()))
        piece("disk_read_bytes", _float_text(usage["disk_read"][idx], steps_n > 0))
        piece("disk_write_bytes", _float_text(usage["disk_write"][idx], steps_n > 0))
        mem = usage["gpu_mem"][idx]
        piece("gpu_mem_max_bytes", _float_text(mem, ~np.isnan(mem)))
        # array tasks: N_M
        parts = pc.split_pattern(job_ids, "_", max_splits=1)
        array_job = pc.list_element(
            pc.if_else(pc.greater(pc.list_value_length(parts), 1), parts, pa.scalar(None, parts.type)), 0
        )
        task = pc.list_element(
            pc.if_else(pc.greater(pc.list_value_length(parts), 1), parts, pa.scalar(None, parts.type)), 1
        )
        piece("array_job_id", _quoted(array_job))
        piece("array_task_id", _quoted(task))

        from flopwise.meter.ingest_columnar import _wrapped_join

        x_extra = _wrapped_join(pieces, [f"{_json(nm)}: " for nm in names], "", ", ", "{", "}", m)
        money = self.money_type
        out = {
            "source": pa.array(["slurm"] * m, pa.string()),
            "charge_period_start": pc.filter(start, keep),
            "charge_period_end": pc.filter(end, keep),
            "billed_cost": pa.nulls(m, money),
            "effective_cost": pa.nulls(m, money),
            "list_cost": pa.nulls(m, money),
            "cost_usd": costed["cost_usd"],
            "cost_basis": costed["cost_basis"],
            "billing_currency": pa.nulls(m, pa.string()),
            "provider_name": provider,
            "region_id": pa.nulls(m, pa.string()),
            "resource_id": node_list,
            "service_category": pa.array(["Compute"] * m, pa.string()),
            "sku_id": pa.nulls(m, pa.string()),
            "tags": tags,
            "x_device_type": device,
            "x_device_count": pa.array(f_gpus, pa.float64()),
            "x_device_hours": pa.array(hours, pa.float64()),
            "x_gpu_utilization": pa.array(util, pa.float64(), from_pandas=True),
            "x_energy_kwh": costed["x_energy_kwh"],
            "energy_basis": costed["energy_basis"],
            "x_co2e_kg": costed["x_co2e_kg"],
            "idle_device_hours": costed["idle_device_hours"],
            "idle_cost_usd": costed["idle_cost_usd"],
            "x_job_id": job_ids,
            "x_request_id": request if request is not None else pa.nulls(m, pa.string()),
            "x_user": user,
            "x_account": account,
            "x_extra": x_extra,
            "_key_text": key_text,
            # the raw Partition (x_extra's), which attribution reads when the tags have none
            "_partition": fcol("partition") if has("partition") else pa.nulls(m, pa.string()),
        }
        return pa.table(out), ok

    def costed(
        self, device: pa.Array, hours: np.ndarray, util: np.ndarray, energy: np.ndarray, provider: pa.Array
    ) -> dict[str, pa.Array]:
        """Coster.cost's columns for the rows (see :meth:`cost`)."""
        import numpy as np
        import pyarrow as pa

        m = len(hours)
        has_device = device.is_valid().to_numpy(zero_copy_only=False)
        priced = np.flatnonzero(has_device | ~np.isnan(util) | ~np.isnan(energy))
        names = ("cost_usd", "cost_basis", "energy_basis", "idle_device_hours", "idle_cost_usd",
                 "x_energy_kwh", "x_co2e_kg")  # fmt: skip
        out: dict[str, list[Any]] = {name: [None] * m for name in names}
        out["cost_basis"] = ["none"] * m
        out["energy_basis"] = ["none"] * m
        if len(priced):
            take = pa.array(priced)
            devices = device.take(take).to_pylist()
            providers = provider.take(take).to_pylist()
            hours_l = hours[priced].tolist()
            util_l = [None if u != u else u for u in util[priced].tolist()]
            energy_l = [None if e != e else e for e in energy[priced].tolist()]
            for k, i in enumerate(priced.tolist()):
                result = self.cost(devices[k], hours_l[k], util_l[k], energy_l[k], providers[k])
                for name, value in zip(names, result, strict=True):
                    out[name][i] = value
        money = self.money_type
        types = {
            "cost_usd": money,
            "idle_cost_usd": money,
            "cost_basis": pa.string(),
            "energy_basis": pa.string(),
        }
        return {name: pa.array(out[name], types.get(name, pa.float64())) for name in names}

    def cost(
        self, device: str | None, hours: float, util: float | None, energy: float | None, provider: str | None
    ) -> tuple[Any, ...]:
        key = (device, hours, util, energy, provider)
        found = self.cost_cache.get(key)
        if found is None:
            record = _probe(
                provider_name=provider,
                x_device_type=device,
                x_device_hours=hours,
                x_gpu_utilization=util,
                x_energy_kwh=energy,
            )
            c = self.coster.cost(record)
            found = (
                c.cost_usd,
                c.cost_basis,
                c.energy_basis,
                c.idle_device_hours,
                c.idle_cost_usd,
                c.record.x_energy_kwh,
                c.record.x_co2e_kg,
            )
            if len(self.cost_cache) > 65536:
                self.cost_cache.clear()
            self.cost_cache[key] = found
        return found

    def step_usage(
        self, jobs: list[_OJob], st: pa.Table | None, gpus: np.ndarray, ok: np.ndarray
    ) -> dict[str, Any]:
        """The row parser's ``step_usage`` column-wise: energy and disk sums, GPU memory max, the weighted GPU
        utilization; *ok* cleared for jobs whose steps have a form not computed exactly here."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        n = len(jobs)
        out = {
            "energy_j": np.zeros(n),
            "disk_read": np.zeros(n),
            "disk_write": np.zeros(n),
            "gpu_mem": np.full(n, np.nan),
            "util": np.full(n, np.nan),
        }
        if st is None or st.num_rows == 0:
            return out
        owner = np.array(
            [i for i, j in enumerate(jobs) for s in j.steps if isinstance(s, int)], dtype=np.int64
        )
        names = [nm for j in jobs for s, nm in zip(j.steps, j.step_names, strict=True) if isinstance(s, int)]
        k = st.num_rows
        good = np.ones(k, dtype=bool)
        empty = pa.array([""] * k, pa.string())

        def col(name: str) -> pa.Array:
            return self.column(st, name) if self.has(name) else empty

        tot, mx, outc = col("tresusageintot"), col("tresusageinmax"), col("tresusageouttot")
        for c in (tot, mx, outc):
            good &= pc.match_substring_regex(c, _TRES_RE).to_numpy(zero_copy_only=False)

        def entries(c: pa.Array, *wanted: str) -> dict[str, pa.Array]:
            """The value of each *wanted* entry per row (null when absent), from one split of the column into
            its entries; *good* cleared where one of them appears twice (parse_tres keeps the last)."""
            lists = pc.split_pattern(c, ",")
            flat = pc.list_flatten(lists)
            parent = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
            found: dict[str, pa.Array] = {}
            for name in wanted:
                prefix = name + "="
                hit = pc.starts_with(flat, prefix).to_numpy(zero_copy_only=False)
                rows_ = parent[hit]
                good[np.bincount(rows_, minlength=k) > 1] = False
                where = np.full(k, -1, dtype=np.int64)
                where[rows_] = np.arange(len(rows_))
                values = pc.utf8_slice_codeunits(flat.filter(pa.array(hit)), len(prefix))
                taken = (
                    values.take(pa.array(np.maximum(where, 0))) if len(values) else pa.nulls(k, pa.string())
                )
                found[name] = pc.if_else(pa.array(where >= 0), taken, pa.scalar(None, pa.string()))
            return found

        in_tot = entries(tot, "energy", "fs/disk", "gres/gpumem", "gres/gpuutil")
        in_mx = entries(mx, "gres/gpumem")
        in_out = entries(outc, "fs/disk")

        def size(values: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """(bytes, present and not empty, fast form) of size texts (null: absent)."""
            present = pc.fill_null(pc.not_equal(values, ""), False).to_numpy(zero_copy_only=False)
            form = pc.fill_null(pc.match_substring_regex(values, _SIZE_FAST_RE), False).to_numpy(
                zero_copy_only=False
            )
            fast = form | ~present
            text = pc.if_else(pa.array(present & form), values, pa.scalar("0"))
            unit = pc.utf8_upper(pc.utf8_slice_codeunits(text, -1, 2**31 - 1))
            has_unit = pc.invert(pc.utf8_is_numeric(unit)).to_numpy(zero_copy_only=False)
            digits = pc.if_else(pa.array(has_unit), pc.utf8_slice_codeunits(text, 0, -1), text)
            number = pc.cast(digits, pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64)
            factor = np.array(
                [
                    float(_SIZE_UNIT[u]) if h else 1.0
                    for u, h in zip(unit.to_pylist(), has_unit.tolist(), strict=True)
                ]
            )
            return number * factor, present & form, fast

        energy = in_tot["energy"]
        e_digits = pc.fill_null(pc.match_substring_regex(energy, r"^[0-9]+$"), False).to_numpy(
            zero_copy_only=False
        )
        e_fast = pc.fill_null(pc.match_substring_regex(energy, _INT_RE), False).to_numpy(zero_copy_only=False)
        good &= ~e_digits | e_fast
        e_val = pc.cast(pc.if_else(pa.array(e_fast), energy, pa.scalar("0")), pa.int64()).to_numpy(
            zero_copy_only=False
        )
        disk_r = in_tot["fs/disk"]
        r_val, r_present, r_fast = size(disk_r)
        good &= r_fast
        disk_w = in_out["fs/disk"]
        w_val, w_present, w_fast = size(disk_w)
        good &= w_fast
        mem_mx = in_mx["gres/gpumem"]
        mem_tot = in_tot["gres/gpumem"]
        mem = pc.if_else(pc.is_valid(mem_mx), mem_mx, mem_tot)
        m_val, m_present, m_fast = size(mem)
        good &= m_fast
        utilv = in_tot["gres/gpuutil"]
        u_present = pc.is_valid(utilv).to_numpy(zero_copy_only=False)
        u_fast = pc.fill_null(pc.match_substring_regex(utilv, _INT_RE), False).to_numpy(zero_copy_only=False)
        good &= ~u_present | u_fast
        u_val = pc.cast(pc.if_else(pa.array(u_fast), utilv, pa.scalar("0")), pa.int64()).to_numpy(
            zero_copy_only=False
        )
        bad_jobs = np.zeros(n, dtype=bool)
        np.logical_or.at(bad_jobs, owner, ~good)
        ok &= ~bad_jobs
        # sums of integers (exact in any order while below 2^52) and a max
        out["energy_j"] = np.bincount(owner, weights=e_val.astype(np.float64), minlength=n)
        out["disk_read"] = np.bincount(owner, weights=np.where(r_present, r_val, 0.0), minlength=n)
        out["disk_write"] = np.bincount(owner, weights=np.where(w_present, w_val, 0.0), minlength=n)
        for total in (out["energy_j"], out["disk_read"], out["disk_write"]):
            ok &= total < _EXACT
        mem_max = np.full(n, -np.inf)
        np.maximum.at(mem_max, owner, np.where(m_present, m_val, -np.inf))
        out["gpu_mem"] = np.where(np.isfinite(mem_max), mem_max, np.nan)
        # GPU utilization: the row path's loop, over the few steps that carry one of a GPU job
        util_rows = np.flatnonzero(u_present & (gpus[owner] > 0))
        if len(util_rows):
            step_elapsed: list[Any] = [None] * k
            if self.has("elapsed"):
                ecol = col("elapsed").take(pa.array(util_rows, pa.int64()))
                for r, v in zip(util_rows.tolist(), _map_py(ecol, _duration), strict=True):
                    step_elapsed[r] = v
            per_job: dict[int, list[tuple[str, float, float]]] = {}
            for r in util_rows.tolist():
                j = int(owner[r])
                if names[r] in _WORK_STEP_SKIP:
                    continue
                e = step_elapsed[r]
                if e is _SLOW:
                    ok[j] = False
                    continue
                u = min(1.0, float(u_val[r]) / 100.0 / gpus[j])
                per_job.setdefault(j, []).append((names[r], e or 0.0, u))
            for j, util_by_step in per_job.items():
                numbered = [u for u in util_by_step if u[0].isdigit()]
                if numbered and any(u[2] > 0 for u in numbered):
                    util_by_step = numbered
                weight = sum(e for _, e, _ in util_by_step)
                if weight > 0:
                    out["util"][j] = sum(e * u for _, e, u in util_by_step) / weight
                else:
                    out["util"][j] = sum(u for _, _, u in util_by_step) / len(util_by_step)
        return out


def _quoted(values: pa.Array) -> pa.Array:
    """JSON string text of plain values (no character JSON escapes: the callers' values are digits and times)."""
    import pyarrow.compute as pc

    return pc.binary_join_element_wise('"', values, '"', "")


def sacct_column_batches(
    target: str,
    plan: _Plan,
    parser: _Parser,
    *,
    coster: Coster,
    counts: SacctCounts,
    rejected: list[RejectedRow],
    progress: Any = None,
    attribute: Attributor | None = None,
    batch_lines: int = BATCH_LINES,
) -> Iterator[tuple[pa.Table, int]]:
    """(ledger-column table with ``source_key``, records dropped as repeats of a key within it) per batch of
    finished jobs. Fills *counts* and, at the end, *rejected* (line, reason, raw; the row path's order)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    from flopwise.meter.ingest_columnar import arrow_source

    path = Path(target)
    builder = _Builder(plan, parser, coster, target)

    def raw_of(ref: Any) -> str:
        if isinstance(ref, int):
            return builder.raw(rows.take([ref]).to_pylist()[0])
        return str(ref[1])

    structure = _Structure(target, raw_of)
    rows = _Rows()
    invalid: dict[int, str] = {}
    names = [f"c{i}" for i in range(plan.columns)]
    jobid_col = f"c{builder.col['jobid']}"
    header = plan.header_line
    delim = plan.delimiter
    layout = parser.layout
    assert layout is not None
    header_jobid = header.split(delim)[builder.col["jobid"]] if header is not None else None
    # line -> event of an all-empty row (a blank line, or a row of delimiters)
    maybe_blank: dict[int, int] = {}

    def on_invalid(row: Any) -> str:
        invalid[row.number] = row.text
        return "skip"

    def feed_text(line: int, text: str) -> None:
        """A line pyarrow did not split into the columns: the row parser's rule."""
        if not text.strip() or text == header:
            return
        parts = layout.split(text)
        if parts is None:
            got = len(text.split(delim))
            structure.reject(
                line,
                f"expected {len(layout.fields)} fields separated by {delim!r}, got {got} "
                "(a truncated line, or a delimiter inside a value such as JobName)",
                (line, text, None),
            )
            return
        values = dict(zip(layout.fields, parts, strict=True))
        structure.feed(values["jobid"], (line, text, values), line)

    total = path.stat().st_size
    next_number = plan.skip_rows + 1
    finished = False
    try:
        with arrow_source(target) as (raw_file, stream):
            reader = pcsv.open_csv(
                stream,
                read_options=pcsv.ReadOptions(
                    column_names=names,
                    skip_rows=plan.skip_rows,
                    # small batches (tests) read small blocks, so that jobs and steps straddle blocks too
                    block_size=min(_BLOCK_BYTES, max(4096, batch_lines * 64)),
                    use_threads=False,
                ),
                parse_options=pcsv.ParseOptions(
                    delimiter=delim,
                    quote_char=False,
                    escape_char=False,
                    newlines_in_values=False,
                    ignore_empty_lines=False,
                    invalid_row_handler=on_invalid,
                ),
                convert_options=pcsv.ConvertOptions(
                    column_types={h: pa.string() for h in names},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            pending = 0  # lines read since the last build
            for batch in itertools.chain(reader, [None]):
                if batch is not None and batch.num_rows:
                    base = rows.add(batch)
                    jobids = batch.column(jobid_col).to_pylist()
                    trail = batch.column(names[-1]).to_pylist() if plan.trailing else None
                    number = next_number
                    feed = structure.feed
                    open_jobs = structure.open
                    simple = _simple_steps(batch, jobid_col, names[-1] if plan.trailing else None, header_jobid)
                    if simple is not None and not invalid:
                        # steps right after their job line roll up in bulk; the loop sees every other line
                        step_rows, owners, step_names = simple
                        step_refs = (step_rows + base).tolist()
                        step_numbers = (step_rows + next_number).tolist()
                        others = np.ones(len(jobids), dtype=bool)
                        others[step_rows] = False
                        order = np.flatnonzero(others).tolist()
                        lo = np.searchsorted(owners, order, "left").tolist()
                        hi = np.searchsorted(owners, order, "right").tolist()
                    else:
                        step_rows, step_names, order, lo, hi = None, [], list(range(len(jobids))), [], []
                        step_refs, step_numbers = [], []
                    for k, i in enumerate(order):
                        jid = jobids[i]
                        if step_rows is not None:
                            number = next_number + i
                        elif invalid:
                            while number in invalid:
                                feed_text(number, invalid.pop(number))
                                number += 1
                        line = number
                        number += 1
                        ref = base + i
                        if trail is not None and trail[i] != "":
                            got = len(raw_of(ref).split(delim))
                            structure.reject(
                                line,
                                f"expected {len(layout.fields)} fields separated by {delim!r}, got {got} "
                                "(a truncated line, or a delimiter inside a value such as JobName)",
                                ref,
                            )
                            continue
                        if jid == "" or jid == header_jobid:
                            text = raw_of(ref)
                            if text == header:
                                continue
                            if not text.strip(delim):
                                # all fields empty: a blank line or a line of delimiters; told apart at the end
                                structure.event += 1
                                maybe_blank[line] = structure.event
                                continue
                        if "." in jid:
                            job_id, _, step = jid.partition(".")
                            job = open_jobs.get(job_id)
                            if job is None or jid[-1].isspace():
                                feed(jid, ref, line)
                            elif job.steps:  # a step of an open job (the common case of feed)
                                job.steps.append(ref)
                                job.step_lines.append(line)  # type: ignore[union-attr]
                                job.step_names.append(step)  # type: ignore[union-attr]
                            else:
                                job.steps, job.step_lines, job.step_names = [ref], [line], [step]
                            continue
                        if not jid or jid in open_jobs or jid != jid.strip():
                            feed(jid, ref, line)
                        else:  # a new job line (the common case of feed)
                            open_jobs[jid] = _OJob(ref, line)
                            if len(open_jobs) > _OPEN_JOBS_MAX:
                                structure.flush(next(iter(open_jobs)))
                        if step_rows is not None and hi[k] > lo[k]:
                            job = open_jobs[jid]
                            job.steps = step_refs[lo[k] : hi[k]]
                            job.step_lines = step_numbers[lo[k] : hi[k]]
                            job.step_names = step_names[lo[k] : hi[k]]
                    if step_rows is not None:
                        number = next_number + len(jobids)
                    next_number = number
                    pending += batch.num_rows
                    if pending < batch_lines:
                        continue
                    pending = 0
                elif batch is not None:
                    continue
                else:
                    for number in sorted(invalid):
                        feed_text(number, invalid.pop(number))
                    structure.flush_all()
                jobs, structure.finished = structure.finished, []
                table = builder.build(jobs, rows, structure, counts)
                rows.drop_before(_oldest(structure, rows.next))
                if table is not None:
                    yield _keyed(table, attribute)
                if progress is not None:
                    progress(raw_file.tell(), total)
                if batch is None:
                    break
        finished = True
    finally:
        if not finished:  # failed, interrupted, or a batch's write failed: the run keeps what was read so far
            _collect_rejects(target, maybe_blank, structure, rejected, counts, complete=False)
    _collect_rejects(target, maybe_blank, structure, rejected, counts, complete=True)


def _collect_rejects(
    target: str,
    maybe_blank: dict[int, int],
    structure: _Structure,
    rejected: list[RejectedRow],
    counts: SacctCounts,
    *,
    complete: bool,
) -> None:
    """The rejects *structure* holds, into *rejected* in the row path's order (by event), their lines counted.

    At the end of the file (*complete*) and also when the run stops before it (*complete* False: a corrupt tail,
    Ctrl-C, a write that failed): the row path keeps the rejects of the lines it read before a failure, and the
    failed run stores them (``flopwise ingest show RUN``), so this path does too: those of the blocks read so far.
    Resolving the all-empty rows re-reads the file's head; on a run that already failed, a file that cannot be
    read back that far leaves those rows out (the run's own error is the one reported)."""
    import zlib

    if maybe_blank:
        try:
            _resolve_blank(target, maybe_blank, structure)
        except (OSError, EOFError, zlib.error, UnicodeDecodeError):
            if complete:
                raise
    for _event, _k, row in sorted(structure.rejects, key=operator.itemgetter(0, 1)):
        rejected.append(row)
        counts.rejected_lines.add(row.line)


#: JobIDs the bulk roll-up takes: a job line's, and a step's (its job's id, a dot, the step's name)
_PLAIN_JOB_RE = r"^[0-9A-Za-z_\[\]%,+-]+$"
_PLAIN_STEP_RE = r"^[0-9A-Za-z_\[\]%,+-]+\.[0-9A-Za-z_+-]+$"


def _simple_steps(
    batch: pa.RecordBatch, jobid_col: str, trail_col: str | None, header_jobid: str | None
) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """The step lines of a block that follow their own job line with only such steps between (what ``feed``
    rolls into the job it has just opened): (their rows, their job line's row, their step names); None when the
    block has a line ``--parsable``'s trailing field is not empty on (the loop rejects those)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if trail_col is not None and not pc.all(pc.equal(batch.column(trail_col), "")).as_py():
        return None
    jid = batch.column(jobid_col)
    n = len(jid)
    is_step = pc.match_substring(jid, ".").to_numpy(zero_copy_only=False)
    plain_step = pc.match_substring_regex(jid, _PLAIN_STEP_RE).to_numpy(zero_copy_only=False)
    plain_job = pc.match_substring_regex(jid, _PLAIN_JOB_RE).to_numpy(zero_copy_only=False)
    if header_jobid is not None:
        plain_job &= ~pc.equal(jid, header_jobid).to_numpy(zero_copy_only=False)
    rows = np.arange(n)
    last_job = np.maximum.accumulate(np.where(~is_step, rows, -1))
    candidates = np.flatnonzero(plain_step & (last_job >= 0))
    if not len(candidates):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), []
    owners = last_job[candidates]
    parts = pc.split_pattern(jid.take(pa.array(candidates)), ".", max_splits=1)
    base = pc.list_element(parts, 0)
    same = pc.equal(base, jid.take(pa.array(owners))).to_numpy(zero_copy_only=False) & plain_job[owners]
    keep = np.flatnonzero(same)
    names = pc.list_element(parts, 1).take(pa.array(keep)).to_pylist()
    return candidates[keep], owners[keep], names


def _oldest(structure: _Structure, default: int) -> int:
    """The first row an open job still needs (its own or a step's), else *default*. Rows are numbered in line
    order and a job's steps come after it: the first open job's own row, when pyarrow read it, is the first."""
    if structure.open:
        first = next(iter(structure.open.values()))
        if isinstance(first.ref, int):
            return first.ref
    refs = [r for j in structure.open.values() for r in (j.ref, *j.steps) if isinstance(r, int)]
    return min(refs) if refs else default


def _resolve_blank(target: str, maybe: dict[int, int], structure: _Structure) -> None:
    """All-empty rows: a blank line is skipped (as the row path does), a line of delimiters has an empty JobID."""
    from flopwise.meter.ingest_io import _open_path

    last = max(maybe)
    with _open_path(Path(target), None) as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno > last:
                break
            if lineno in maybe:
                line = raw.rstrip("\r\n")
                if line.strip():
                    structure.rejects.append(
                        (maybe[lineno], 0, RejectedRow(structure.path, lineno, "empty JobID", line))
                    )


def _probe(**fields: Any) -> UsageRecord:
    """A sacct record with only *fields* set (no key, no period): what :class:`Coster` prices and an
    :data:`Attributor` attributes a distinct combination of values by, once, for every job that has it."""
    epoch = datetime.min.replace(tzinfo=UTC)
    return UsageRecord(source="slurm", source_key="", charge_period_start=epoch, charge_period_end=epoch, **fields)


def _keyed(table: pa.Table, attribute: Attributor | None) -> tuple[pa.Table, int]:
    """*table* with ``source_key`` (the first record of a key repeated within it kept) and, with *attribute*,
    its org/team/project; and how many repeats were dropped."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = table.column("_key_text").combine_chunks()
    table = table.drop_columns(["_key_text"]).append_column("source_key", keys)
    dropped = 0
    if pc.count_distinct(keys).as_py() != len(keys):
        seen: set[str] = set()
        keep = np.ones(len(keys), dtype=bool)
        for i, k in enumerate(keys.to_pylist()):
            if k in seen:
                keep[i] = False
            seen.add(k)
        dropped = int((~keep).sum())
        table = table.filter(pa.array(keep))
    if attribute is not None:
        for name, values in _owners(table, attribute).items():
            table = table.append_column(name, values)
    return table.drop_columns(["_partition"]), dropped


_ATTRIBUTION_COLUMNS = (
    "x_account", "x_user", "resource_id", "tags", "x_request_id", "provider_name", "_partition",
)  # fmt: skip


def _owners(table: pa.Table, attribute: Attributor) -> dict[str, pa.Array]:
    """org/team/project of each row: *attribute* called once per distinct (account, user, resource, tags,
    request id, cluster, raw partition), the fields attribution rules read of a Slurm record
    (``meter.attribution``)."""
    import pyarrow as pa

    columns = [table.column(c).to_pylist() for c in _ATTRIBUTION_COLUMNS]
    answers: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}
    out: list[tuple[Any, Any, Any]] = []
    for key in zip(*columns, strict=True):
        found = answers.get(key)
        if found is None:
            account, user, resource, tags, request, provider, partition = key
            parsed_tags = json.loads(tags) if tags else {}
            record = _probe(
                provider_name=provider,
                resource_id=resource,
                tags=parsed_tags,
                x_account=account,
                x_user=user,
                x_request_id=request,
                x_extra={"partition": partition} if partition is not None else {},
            )
            found = answers[key] = attribute(record) or (None, None, None)
        out.append(found)
    return {
        name: pa.array([o[k] for o in out], pa.int64())
        for k, name in enumerate(("org_id", "team_id", "project_id"))
    }


def sacct_plan(target: str, catalog: Catalog, options: Any) -> tuple[tuple[_Plan, _Parser] | None, str]:
    """(plan and row parser, "") when the columnar path takes this sacct input with *options*
    (:class:`~flopwise.meter.ingest.IngestOptions`), else (None, why not). Raises InputError for a bad
    ``assume_tz``, as the row path does."""
    parser = _Parser(
        target, [], options.fields, options.delimiter, options.cluster, catalog, options.assume_tz
    )
    plan, why = columnar_sacct_plan(target, parser)
    return ((plan, parser) if plan is not None else None), why


def ingest_sacct_columnar(
    factory: Any,
    target: str,
    planned: tuple[_Plan, _Parser],
    *,
    coster: Coster,
    options: Any,
    run_id: int,
    exported_at: datetime,
    progress: Any,
    attribute: Attributor | None,
    overlap: bool,
    rejected: list[RejectedRow],
) -> tuple[Any, Any]:
    """A sacct file through the columnar path: each batch of finished jobs in its own write transaction
    (:func:`flopwise.meter.ledger_write.write_column_batches`). Returns (the run's ``_Parsed`` counts, BatchCounts);
    rejects into *rejected*, also when the run fails part way (those of the lines read so far)."""
    from flopwise.meter.ingest_parse import _Parsed
    from flopwise.meter.ledger_write import DEFAULT_BATCH_SIZE, write_column_batches

    plan, parser = planned
    counts = SacctCounts()
    parsed = _Parsed(
        iter(()),
        rejected,
        rows_read=counts.rows_read,
        rolled_up=lambda: counts.step_lines,
        expanded=lambda: counts.records - counts.job_lines,
    )
    batches = sacct_column_batches(
        target, plan, parser, coster=coster, counts=counts, rejected=rejected, progress=progress,
        attribute=attribute,
        batch_lines=options.batch_size if options.batch_size != DEFAULT_BATCH_SIZE else BATCH_LINES,
    )  # fmt: skip

    total = write_column_batches(
        factory, batches, run_id=run_id, actor=options.actor, exported_at=exported_at, overlap=overlap
    )
    return parsed, total
