"""Parse Slurm ``sacct --parsable``/``--parsable2`` output into one :class:`UsageRecord` per job.

::

    rejected: list[RejectedRow] = []
    with open("sacct.txt", encoding="utf-8") as f:
        for rec in parse_sacct(f, path="sacct.txt", rejected=rejected, assume_tz="UTC", catalog=load_catalog()):
            ...

What it reads (docs/ingest/slurm.md has the full table and the caveats):

* the field order from a header line, or from ``fields`` (the ``--format`` list given to sacct, in order);
  field names are matched case-insensitively (``NCPUS`` and ``NCPUs`` are the same field);
* any one-character delimiter, found from the header or from the first data line, or given as ``delimiter``;
  ``--parsable`` adds a trailing delimiter, which is dropped;
* job steps (``123.batch``, ``123.extern``, ``123.0``) roll up into their job: one record per job, the steps'
  TRESUsageInTot summed (energy, disk) and their GPU utilization and memory kept;
* GPUs from AllocTRES, counted once: ``gres/gpu=N`` is the total, ``gres/gpu:<type>=N`` are its parts
  (``gres/gpu:v100=1,gres/gpu=1`` is one GPU); the type names the device;
* durations ``D-HH:MM:SS``, ``HH:MM:SS``, ``MM:SS`` and ``MM:SS.mmm``;
* job arrays: ``123_4`` is one task; a compressed spec such as ``123_[1-3,7]`` is expanded into one record
  per task, as XDMoD does;
* jobs that have not ended (RUNNING, PENDING, ...), jobs that never started (``Start`` is ``None`` or
  ``Unknown``) and unknown states are not metered: they and their steps are reported as rejected rows whose
  reason says why, so that every input line is accounted for.

sacct prints times in the cluster's local zone with no offset. Pass ``assume_tz`` (an IANA zone such as
``"UTC"`` or ``"Europe/Amsterdam"``); without it each job is rejected with a reason that says so.

Standard library only; pure of I/O (the caller opens the file).
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flopwise.errors import IngestError, InputError
from flopwise.meter.bounds import check_device_count
from flopwise.meter.keyset import HashedKeySet
from flopwise.meter.record import RejectedRow, UsageRecord
from flopwise.units import J_PER_KWH, S_PER_H

if TYPE_CHECKING:
    from flopwise.catalog import Catalog

__all__ = [
    "ENDED_STATES",
    "NOT_ENDED_STATES",
    "SACCT_FORMATS",
    "gpu_count_from_tres",
    "parse_sacct",
    "parse_slurm_duration_s",
    "parse_tres",
]

#: how far a job's Elapsed/ElapsedRaw may exceed End - Start before the line is refused as corrupt: Slurm's elapsed
#: time is the span less any suspended time, so it is never longer; one hour (a daylight-saving change between two
#: local times) and one second (rounding) of slack
ELAPSED_SLACK_S = 3601.0

#: Field lists of known ``sacct --format`` invocations, for files that have no header line.
SACCT_FORMATS: Mapping[str, tuple[str, ...]] = {
    # rug-cit-hpc/hb-jobinfo: sacct --parsable --noheader --delimiter ☃ --format ...
    "hb-jobinfo": (
        "JobID", "JobName", "User", "Partition", "NodeList", "NNodes", "NCPUs", "NTasks", "State", "Submit",
        "Start", "End", "Timelimit", "Elapsed", "TotalCPU", "CPUTime", "UserCPU", "SystemCPU", "ReqMem",
        "MaxRSS", "MaxVMSize", "ReqTRES", "AllocTRES", "TRESUsageInMax", "TRESUsageInTot", "TRESUsageOutTot",
        "MaxDiskRead", "MaxDiskWrite", "MaxRSSNode", "MaxRSSTask", "MaxVMSizeNode", "MaxVMSizeTask",
        "MaxDiskReadNode", "MaxDiskReadTask", "MaxDiskWriteNode", "MaxDiskWriteTask", "Comment",
    ),
    # ubccr/xdmod's Slurm shredder: sacct --parsable2 --noheader --format ...
    "xdmod": (
        "JobID", "JobIDRaw", "Cluster", "Partition", "QOS", "Account", "Group", "GID", "User", "UID", "Submit",
        "Eligible", "Start", "End", "Elapsed", "ExitCode", "State", "NNodes", "NCPUS", "ReqCPUS", "ReqMem",
        "ReqTRES", "AllocTRES", "Timelimit", "NodeList", "JobName",
    ),
    # the same shredder for an older Slurm (before GPUs were TRES): ReqGRES, no QOS and no AllocTRES
    # (ubccr/xdmod tests/artifacts/.../accounting-logs-with-gpu-gres.log)
    "xdmod-gres": (
        "JobID", "JobIDRaw", "Cluster", "Partition", "Account", "Group", "GID", "User", "UID", "Submit",
        "Eligible", "Start", "End", "Elapsed", "ExitCode", "State", "NNodes", "NCPUS", "ReqCPUS", "ReqMem",
        "ReqGRES", "ReqTRES", "Timelimit", "NodeList", "JobName",
    ),
}  # fmt: skip

#: States of a job that has finished; its usage is final. (Slurm ``sacct(1)``, JOB STATE CODES.)
ENDED_STATES = frozenset(
    {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
     "REVOKED", "TIMEOUT"}
)  # fmt: skip
#: States of a job that is still queued or running; metered once it ends (re-ingest then).
NOT_ENDED_STATES = frozenset(
    {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "COMPLETING",
     "CONFIGURING", "SIGNALING", "STAGE_OUT", "STOPPED", "SPECIAL_EXIT"}
)  # fmt: skip

_REQUIRED = ("jobid", "state", "start", "end")
_DURATION_RE = re.compile(r"^(?:(\d+)-)?(\d+(?::\d+){0,2}(?:\.\d+)?)$")
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([KMGTP]?)$", re.IGNORECASE)
_SIZE_UNIT = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_ARRAY_SPEC_RE = re.compile(r"^(\d+)_\[([0-9,\-]+)(?:%\d+)?\]$")
_REQUEST_RE = re.compile(r"(?:flopwise[-_]request|request[-_]id)\s*[=:]\s*([A-Za-z0-9._:-]+)")
_NO_TIME = {"", "unknown", "none", "n/a"}
_WORK_STEP_SKIP = {"extern"}
_OPEN_JOBS_MAX = 4096
_UTC = ZoneInfo("UTC")
#: per-job fields copied into x_extra as text, and those read as counts: (sacct field, x_extra name)
_EXTRA_TEXT_FIELDS = (
    ("jobname", "job_name"), ("jobidraw", "job_id_raw"), ("group", "group"), ("exitcode", "exit_code"),
    ("nodelist", "node_list"), ("qos", "qos"), ("partition", "partition"), ("alloctres", "alloc_tres"),
    ("reqtres", "req_tres"), ("reqmem", "req_mem"), ("uid", "uid"), ("gid", "gid"),
)  # fmt: skip
_EXTRA_COUNT_FIELDS = (("nnodes", "nnodes"), ("ncpus", "ncpus"), ("alloccpus", "ncpus"), ("ntasks", "ntasks"))


def parse_slurm_duration_s(text: str) -> float | None:
    """Seconds in a Slurm duration: ``D-HH:MM:SS``, ``D-HH:MM``, ``D-HH``, ``HH:MM:SS``, ``MM:SS``,
    ``MM:SS.mmm``. None for an empty value, ``UNLIMITED``, ``Partition_Limit`` or ``INVALID``.

    Without a day part, two fields are minutes:seconds and three are hours:minutes:seconds (sacct's output
    forms; ``sacct(1)`` "Elapsed", "TotalCPU"). Raises ValueError on anything else.
    """
    text = text.strip()
    # HH:MM:SS, sacct's usual form, without the regex; the sum of small integers is exact, so the float is the
    # one the general path's float arithmetic gives
    if len(text) == 8 and text[2] == ":" and text[5] == ":" and text.isascii():
        h, mi, s = text[:2], text[3:5], text[6:]
        if h.isdigit() and mi.isdigit() and s.isdigit():
            return float(int(h) * 3600 + int(mi) * 60 + int(s))
    if text.lower() in {"", "unlimited", "partition_limit", "invalid", "unknown", "none"}:
        return None
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"not a Slurm duration: {text!r} (expected D-HH:MM:SS, HH:MM:SS or MM:SS.mmm)")
    days, rest = m.group(1), m.group(2).split(":")
    nums = [float(p) for p in rest]
    if days is not None:
        nums += [0.0] * (3 - len(nums))  # D-HH, D-HH:MM
        h, mi, s = nums
        return int(days) * 86400 + h * 3600 + mi * 60 + s
    if len(nums) == 3:
        return nums[0] * 3600 + nums[1] * 60 + nums[2]
    if len(nums) == 2:
        return nums[0] * 60 + nums[1]
    return nums[0] * 60  # a bare number is minutes in Slurm time specifications


def parse_tres(text: str) -> dict[str, str]:
    """``"billing=8,cpu=8,gres/gpu:v100=1,gres/gpu=1,mem=10G"`` -> ``{"billing": "8", ..., "gres/gpu": "1"}``.

    Values stay strings: TRES values mix counts, sizes (``10G``) and durations (``cpu=15:33:58``).
    Raises ValueError on an entry without ``=``.
    """
    out: dict[str, str] = {}
    text = text.strip()
    if not text:
        return out
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise ValueError(f"TRES entry {part!r} has no '=' (expected name=value, e.g. 'gres/gpu=2')")
        out[name.strip()] = value.strip()
    return out


def gpu_count_from_tres(tres: str | Mapping[str, str]) -> tuple[int, dict[str, int]]:
    """GPUs in a TRES string, counted once, and the count per GPU type.

    Slurm lists a typed GPU request twice, as ``gres/gpu:<type>=N`` and as the untyped total ``gres/gpu=N``
    (``gres/gpu:v100=1,gres/gpu=1`` is one GPU). The untyped entry is the total when present; otherwise the
    typed entries are summed. ``gres/gpumem`` and ``gres/gpuutil`` are usage, not GPUs. XDMoD's
    slurm-resource-parser tests (``xdmod-alloc-tres-gpu-count.json``) pin this behaviour.
    """
    entries = parse_tres(tres) if isinstance(tres, str) else tres
    total: int | None = None
    by_type: dict[str, int] = {}
    for name, value in entries.items():
        if name == "gres/gpu":
            total = _gpu_number(name, value)
        elif name.startswith("gres/gpu:"):
            gpu_type = name[len("gres/gpu:") :]
            by_type[gpu_type] = by_type.get(gpu_type, 0) + _gpu_number(name, value)
    if total is None:
        total = sum(by_type.values())
    return total, by_type


def _gpu_number(name: str, value: str) -> int:
    """A TRES GPU count as an int; ValueError (the row's reject reason) for text, infinities and huge counts."""
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"TRES {name}={value!r} is not a number of GPUs") from None
    return int(check_device_count(number, f"TRES {name}"))


@functools.lru_cache(maxsize=4096)
def _gpus_from_alloc_tres(alloc: str) -> tuple[int, Mapping[str, int]]:
    """``gpu_count_from_tres(parse_tres(alloc))``, cached: a cluster's jobs repeat a few AllocTRES strings.
    The per-type counts are shared between callers, who only read them."""
    return gpu_count_from_tres(parse_tres(alloc))


def _gpu_count_from_gres(text: str) -> tuple[int, dict[str, int]]:
    """Old-style AllocGRES/ReqGRES: ``gpu:2``, ``gpu:v100:2``, ``gpu:v100:2(IDX:0-1)``."""
    total, by_type = 0, {}
    # drop the index lists first: ``gpu:p100:2(IDX:1,3)`` has a comma inside its parentheses
    for part in re.sub(r"\(.*?\)", "", text).split(","):
        part = part.strip()
        bits = part.split(":")
        if not bits or bits[0] != "gpu" or len(bits) < 2:
            continue
        count = int(check_device_count(int(bits[-1]), f"GRES {part}")) if bits[-1].isdigit() else 1
        total += count
        if len(bits) == 3:
            by_type[bits[1]] = by_type.get(bits[1], 0) + count
    return total, by_type


def _size_bytes(text: str) -> float | None:
    """``"20500736K"`` -> bytes (Slurm's K/M/G are binary: 1K = 1024 bytes). None when empty."""
    text = text.strip()
    if not text:
        return None
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a Slurm size: {text!r} (expected a number with an optional K, M, G, T suffix)")
    return float(m.group(1)) * _SIZE_UNIT[m.group(2).upper()]


def _normalize(name: str) -> str:
    return name.strip().lower()


@dataclass
class _Job:
    """A job line and the steps rolled up into it, until the job is emitted."""

    line: int
    raw: str
    values: dict[str, str]
    step_lines: list[int] = field(default_factory=list)
    step_raws: list[str] = field(default_factory=list)
    steps: list[dict[str, str]] = field(default_factory=list)


class _Layout:
    """Where each field sits, and how lines are split."""

    def __init__(self, fields: Sequence[str], delimiter: str, path: str, line: int) -> None:
        self.fields = [_normalize(f) for f in fields]
        self.delimiter = delimiter
        present = set(self.fields)
        self.extra_text_fields = tuple((k, n) for k, n in _EXTRA_TEXT_FIELDS if k in present)
        self.extra_count_fields = tuple((k, n) for k, n in _EXTRA_COUNT_FIELDS if k in present)
        missing = [f for f in _REQUIRED if f not in self.fields]
        if missing:
            raise IngestError(
                path,
                line,
                f"the sacct field list lacks {', '.join(missing)}; run sacct with --format including "
                "JobID,State,Start,End (and AllocTRES,Elapsed for GPU-hours)",
            )

    def split(self, line: str) -> list[str] | None:
        parts = line.split(self.delimiter)
        n = len(self.fields)
        if len(parts) == n + 1 and parts[-1] == "":
            parts.pop()  # --parsable ends every line with the delimiter
        return parts if len(parts) == n else None


_KNOWN_FIELDS = {
    _normalize(f)
    for f in (
        *SACCT_FORMATS["hb-jobinfo"], *SACCT_FORMATS["xdmod"], "ElapsedRaw", "AllocGRES", "ReqGRES",
        "ConsumedEnergy", "ConsumedEnergyRaw", "AdminComment", "WCKey", "TRESUsageInAve", "AllocCPUS",
        "AllocNodes", "JobIDRaw", "Reserved", "Planned", "Flags", "Constraints", "Reservation", "WorkDir",
    )
}  # fmt: skip


def _header_delimiter(line: str) -> str | None:
    """The delimiter of a header line, or None when *line* is not a header (its names are not sacct fields)."""
    m = re.match(r"^[A-Za-z][A-Za-z0-9]*(\W)", line)
    if not m:
        return None
    delim = m.group(1)
    names = [n for n in line.split(delim) if n]
    known = sum(_normalize(n) in _KNOWN_FIELDS for n in names)
    return delim if names and known * 2 >= len(names) and "jobid" in {_normalize(n) for n in names} else None


def _find_delimiter(line: str, n_fields: int) -> str | None:
    """The one character that splits *line* into *n_fields* fields (or *n_fields* + a trailing empty one)."""
    candidates = []
    for ch in dict.fromkeys(line):
        if ch.isalnum() or ch in " -_.:/=[]()+":
            continue
        count = line.count(ch)
        if count == n_fields - 1 or (count == n_fields and line.endswith(ch)):
            candidates.append(ch)
    preferred = ["|", "\t", ";", ","]
    candidates.sort(key=lambda c: preferred.index(c) if c in preferred else -1)
    return candidates[0] if candidates else None


def _resolve_tz(assume_tz: str | None) -> ZoneInfo | None:
    if assume_tz is None:
        return None
    try:
        return ZoneInfo(assume_tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InputError(
            "assume_tz", assume_tz, "give an IANA time zone such as 'UTC' or 'Europe/Amsterdam'"
        ) from exc


def _parse_time(text: str, tz: ZoneInfo | None, name: str) -> datetime | None:
    """A sacct timestamp as aware UTC; None for ``Unknown``/``None``/empty. Raises ValueError with the reason."""
    stripped = text.strip()
    if stripped.lower() in _NO_TIME:
        return None
    try:
        dt = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not an ISO timestamp (YYYY-MM-DDTHH:MM:SS)") from None
    if dt.tzinfo is None:
        if tz is None:
            raise ValueError(
                f"{name} {text!r} has no time zone; sacct prints the cluster's local time, "
                "so pass assume_tz (--assume-tz), e.g. 'UTC' or 'Europe/Amsterdam'"
            )
        dt = dt.replace(tzinfo=tz)
    return dt.astimezone(_UTC)


def _expand_array(job_id: str) -> list[tuple[str, str | None]]:
    """``123_[1-3,7%2]`` -> ``[("123_1", "1"), ...]``; ``123_4`` -> ``[("123_4", "4")]``; ``123`` -> itself."""
    m = _ARRAY_SPEC_RE.match(job_id)
    if m:
        base, spec = m.group(1), m.group(2)
        out = []
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            for i in range(int(lo), int(hi or lo) + 1):
                out.append((f"{base}_{i}", str(i)))
        return out
    base, sep, task = job_id.partition("_")
    return [(job_id, task if sep else None)]


class _Parser:
    def __init__(
        self,
        path: str,
        rejected: list[RejectedRow],
        fields: Sequence[str] | str | None,
        delimiter: str | None,
        cluster: str | None,
        catalog: Catalog | None,
        assume_tz: str | None,
    ) -> None:
        self.path = path
        self.rejected = rejected
        if isinstance(fields, str):
            if fields in SACCT_FORMATS:
                fields = SACCT_FORMATS[fields]
            else:
                fields = [f for f in re.split(r"[,\s]+", fields) if f]
        self.given_fields = list(fields) if fields is not None else None
        self.delimiter = delimiter
        self.cluster = cluster
        self.catalog = catalog
        self.tz = _resolve_tz(assume_tz)
        self.layout: _Layout | None = None
        self.header_line: str | None = None
        self.open_jobs: OrderedDict[str, _Job] = OrderedDict()
        self.closed_jobs = HashedKeySet()  # 8 bytes a job: it only words a reject reason
        self.device_cache: dict[str, str] = {}

    def reject(self, line: int, reason: str, raw: str) -> None:
        self.rejected.append(RejectedRow(self.path, line, reason, raw))

    def setup(self, line: str, lineno: int) -> bool:
        """Fix the layout from the first non-blank line. True when that line was a header (consumed)."""
        header_delim = _header_delimiter(line)
        if header_delim is not None and (self.delimiter is None or self.delimiter == header_delim):
            names = line.split(header_delim)
            if names and names[-1] == "":
                names.pop()
            self.layout = _Layout(names, header_delim, self.path, lineno)
            self.header_line = line
            return True
        if self.given_fields is None:
            raise IngestError(
                self.path,
                lineno,
                "no header line and no field list: run sacct without --noheader, or pass the --format "
                f"field list (fields=..., or one of {sorted(SACCT_FORMATS)})",
            )
        delim = self.delimiter or _find_delimiter(line, len(self.given_fields))
        if delim is None:
            raise IngestError(
                self.path,
                lineno,
                f"cannot split the first line into the {len(self.given_fields)} fields given; "
                "is it sacct --parsable/--parsable2 output with that --format list? Pass delimiter= if it is "
                "not one character found in the line",
            )
        self.layout = _Layout(self.given_fields, delim, self.path, lineno)
        return False

    def feed(self, line: str, lineno: int) -> Iterator[UsageRecord]:
        assert self.layout is not None
        if line == self.header_line:
            return  # a repeated header (concatenated sacct outputs)
        parts = self.layout.split(line)
        if parts is None:
            got = len(line.split(self.layout.delimiter))
            self.reject(
                lineno,
                f"expected {len(self.layout.fields)} fields separated by {self.layout.delimiter!r}, got {got} "
                "(a truncated line, or a delimiter inside a value such as JobName)",
                line,
            )
            return
        values = dict(zip(self.layout.fields, parts, strict=True))
        job_id, dot, step = values["jobid"].strip().partition(".")
        if not job_id:
            self.reject(lineno, "empty JobID", line)
            return
        if dot:
            job = self.open_jobs.get(job_id)
            if job is None:
                why = (
                    "its job was already emitted (sort the input by job)"
                    if job_id in self.closed_jobs
                    else ("its job line is not in the input")
                )
                self.reject(lineno, f"step {values['jobid']!r} cannot roll up: {why}", line)
                return
            values["_step"] = step
            job.step_lines.append(lineno)
            job.step_raws.append(line)
            job.steps.append(values)
            return
        if job_id in self.open_jobs:
            yield from self.flush(job_id)  # the same job listed again: emit the first, keep the second
        self.open_jobs[job_id] = _Job(lineno, line, values)
        while len(self.open_jobs) > _OPEN_JOBS_MAX:
            yield from self.flush(next(iter(self.open_jobs)))

    def flush(self, job_id: str) -> Iterator[UsageRecord]:
        job = self.open_jobs.pop(job_id)
        self.closed_jobs.add(job_id)
        try:
            records = self.build(job_id, job)
        except ValueError as exc:
            self.reject(job.line, f"job {job_id}: {exc}", job.raw)
            for ln, raw in zip(job.step_lines, job.step_raws, strict=True):
                self.reject(ln, f"step of job {job_id}, not metered (see line {job.line})", raw)
            return
        yield from records

    def flush_all(self) -> Iterator[UsageRecord]:
        while self.open_jobs:
            yield from self.flush(next(iter(self.open_jobs)))

    def device_id(self, name: str) -> str:
        if self.catalog is None:
            return name
        if name not in self.device_cache:
            from flopwise.errors import CatalogError

            try:
                self.device_cache[name] = self.catalog.device(name).id
            except CatalogError:
                self.device_cache[name] = name
        return self.device_cache[name]

    def build(self, job_id: str, job: _Job) -> list[UsageRecord]:
        v = job.values
        raw_state = v["state"].strip().rstrip("+")
        state, _, by = raw_state.partition(" by ")
        state = state.strip().upper()
        if state not in ENDED_STATES:
            if state in NOT_ENDED_STATES:
                raise ValueError(f"skipped: state {state} has not ended; ingest again once the job has ended")
            raise ValueError(f"unknown job state {raw_state!r}; known ended states: {sorted(ENDED_STATES)}")
        start = _parse_time(v["start"], self.tz, "Start")
        end = _parse_time(v["end"], self.tz, "End")
        if start is None:
            raise ValueError(
                f"skipped: never started (Start={v['start']!r}, state {state}); no usage to meter"
            )
        if end is None:
            raise ValueError(f"End={v['end']!r} for ended state {state}; cannot tell how long it ran")
        if end < start:
            raise ValueError(f"End {v['end']!r} is before Start {v['start']!r}")
        elapsed_s = self.elapsed_s(v, start, end)
        span_s = (end - start) / timedelta(seconds=1)
        if elapsed_s > span_s + ELAPSED_SLACK_S:
            raise ValueError(
                f"elapsed {elapsed_s:,.0f} s is longer than End - Start ({span_s:,.0f} s); "
                "Slurm's Elapsed/ElapsedRaw is at most that span: a corrupt line"
            )

        alloc = v.get("alloctres", "")
        if alloc.strip():
            gpus, gpu_types = _gpus_from_alloc_tres(alloc)
        elif v.get("allocgres", "").strip():
            gpus, gpu_types = _gpu_count_from_gres(v["allocgres"])
        elif v.get("reqgres", "").strip() and state in ENDED_STATES:
            # Slurm before 16.05 kept GPUs only as GRES, and some sites export only ReqGRES: for a job that
            # ran, what it requested is what it was given (XDMoD's shredder reads GPUs from ReqGRES the same way)
            gpus, gpu_types = _gpu_count_from_gres(v["reqgres"])
        else:
            gpus, gpu_types = _gpus_from_alloc_tres(alloc)
        check_device_count(gpus, "allocated GPUs")
        device_type = None
        if len(gpu_types) == 1:
            device_type = self.device_id(next(iter(gpu_types)))
        usage = self.step_usage(job, gpus)

        cluster = v.get("cluster", "").strip() or self.cluster or ""
        submit_raw = v.get("submit", "").strip()
        extra: dict[str, Any] = {
            "state": state,
            "source_line": job.line,
            "step_lines": list(job.step_lines),
            "elapsed_s": elapsed_s,
            "gpu_types": dict(gpu_types),
        }
        if by:
            extra["cancelled_by_uid"] = by.strip()
        layout = self.layout
        assert layout is not None
        for key, name in layout.extra_text_fields:
            extra[name] = v[key]
        for key, name in layout.extra_count_fields:
            text = v[key].strip()
            if text.isdigit():
                extra[name] = int(text)
        if "ncpus" in extra:
            extra["cpu_hours"] = extra["ncpus"] * elapsed_s / S_PER_H
        for key, name in (("submit", "submit"), ("eligible", "eligible")):
            if key in v:
                t = _parse_time(v[key], self.tz, key.capitalize())
                extra[name] = t.isoformat() if t else None
        if "timelimit" in v:
            extra["timelimit_s"] = parse_slurm_duration_s(v["timelimit"])
        if "totalcpu" in v:
            extra["total_cpu_s"] = parse_slurm_duration_s(v["totalcpu"])
        extra.update(usage["extra"])

        energy_kwh = usage["energy_kwh"]
        if "consumedenergyraw" in v and v["consumedenergyraw"].strip().isdigit():
            joules = int(v["consumedenergyraw"])
            if joules > 0:  # 0 means no energy plugin on the cluster, not zero energy
                energy_kwh = joules / J_PER_KWH

        request_id = None
        for key in ("comment", "admincomment"):
            m = _REQUEST_RE.search(v.get(key, ""))
            if m:
                request_id = m.group(1)
                break
        tags = {k: v[k].strip() for k in ("partition", "qos") if v.get(k, "").strip()}
        if cluster:
            tags["cluster"] = cluster
        node_list = v.get("nodelist", "").strip()
        records = []
        for task_job_id, task in _expand_array(job_id):
            task_extra = dict(extra)
            if task is not None:
                task_extra["array_job_id"] = task_job_id.partition("_")[0]
                task_extra["array_task_id"] = task
                if task_job_id != job_id:
                    task_extra["array_spec"] = job_id
            records.append(
                UsageRecord(
                    source="slurm",
                    source_key=f"slurm:{cluster}:{task_job_id}:{submit_raw}",
                    charge_period_start=start,
                    charge_period_end=end,
                    provider_name=cluster or None,
                    resource_id=node_list if node_list and node_list != "None assigned" else None,
                    service_category="Compute",
                    tags=dict(tags),
                    x_device_type=device_type,
                    x_device_count=float(gpus),
                    x_device_hours=gpus * elapsed_s / S_PER_H,
                    x_gpu_utilization=usage["gpu_utilization"],
                    x_energy_kwh=energy_kwh,
                    x_job_id=task_job_id,
                    x_request_id=request_id,
                    x_user=v.get("user", "").strip() or None,
                    x_account=v.get("account", "").strip() or None,
                    x_extra=task_extra,
                )
            )
        return records

    @staticmethod
    def elapsed_s(v: dict[str, str], start: datetime, end: datetime) -> float:
        if v.get("elapsedraw", "").strip().isdigit():
            return float(v["elapsedraw"])
        if v.get("elapsed", "").strip():
            value = parse_slurm_duration_s(v["elapsed"])
            if value is not None:
                return value
        return (end - start) / timedelta(seconds=1)

    def step_usage(self, job: _Job, gpus: int) -> dict[str, Any]:
        """Sum the steps' TRESUsageInTot, and an elapsed-weighted GPU utilization over the work steps.

        Slurm's ``gres/gpuutil`` (gpu_nvml plugin) is a percentage summed over the step's GPUs and tasks; it
        is divided by the job's GPU count and capped at 1. The ``.extern`` step holds the allocation open
        and runs no work, so it does not dilute the mean. Numbered steps (``.0``) carry the work of jobs
        launched with srun; when any carries a GPU utilization, the ``.batch`` step (which only waits for
        them) is left out as well.
        """
        energy_j = 0.0
        disk_read = disk_write = 0.0
        gpu_mem_max: float | None = None
        util_by_step: list[tuple[str, float, float]] = []  # (step, elapsed_s, util_frac)
        for s in job.steps:
            tot = parse_tres(s.get("tresusageintot", ""))
            mx = parse_tres(s.get("tresusageinmax", ""))
            out = parse_tres(s.get("tresusageouttot", ""))
            if tot.get("energy", "").isdigit():
                energy_j += int(tot["energy"])
            if "fs/disk" in tot:
                disk_read += _size_bytes(tot["fs/disk"]) or 0.0
            if "fs/disk" in out:
                disk_write += _size_bytes(out["fs/disk"]) or 0.0
            mem = _size_bytes(mx.get("gres/gpumem", tot.get("gres/gpumem", "")))
            if mem is not None:
                gpu_mem_max = mem if gpu_mem_max is None else max(gpu_mem_max, mem)
            if "gres/gpuutil" in tot and gpus > 0 and s["_step"] not in _WORK_STEP_SKIP:
                step_elapsed = parse_slurm_duration_s(s.get("elapsed", "")) if "elapsed" in s else None
                util = min(1.0, float(tot["gres/gpuutil"]) / 100.0 / gpus)
                util_by_step.append((s["_step"], step_elapsed or 0.0, util))
        numbered = [u for u in util_by_step if u[0].isdigit()]
        if numbered and any(u[2] > 0 for u in numbered):
            util_by_step = numbered
        gpu_utilization = None
        if util_by_step:
            weight = sum(e for _, e, _ in util_by_step)
            if weight > 0:
                gpu_utilization = sum(e * u for _, e, u in util_by_step) / weight
            else:
                gpu_utilization = sum(u for _, _, u in util_by_step) / len(util_by_step)
        extra: dict[str, Any] = {"steps": len(job.steps)}
        if job.steps:
            extra["disk_read_bytes"] = disk_read
            extra["disk_write_bytes"] = disk_write
        if gpu_mem_max is not None:
            extra["gpu_mem_max_bytes"] = gpu_mem_max
        return {
            "energy_kwh": energy_j / J_PER_KWH if energy_j > 0 else None,  # energy=0: no energy plugin
            "gpu_utilization": gpu_utilization,
            "extra": extra,
        }


def parse_sacct(
    lines: Iterable[str],
    *,
    rejected: list[RejectedRow],
    path: str = "<sacct>",
    fields: Sequence[str] | str | None = None,
    delimiter: str | None = None,
    cluster: str | None = None,
    catalog: Catalog | None = None,
    assume_tz: str | None = None,
) -> Iterator[UsageRecord]:
    """Stream ``sacct --parsable``/``--parsable2`` lines into one UsageRecord per job (per task for arrays).

    *lines*: an iterable of text lines (an open file is fine; it is never read whole). *rejected* receives a
    :class:`RejectedRow` (line number, reason, raw line) for every line not metered. *fields*: the
    ``--format`` field list, as a sequence, a comma-separated string or a :data:`SACCT_FORMATS` name; needed
    only when the output has no header line. *delimiter*: found when not given. *cluster*: the cluster name
    when the output has no Cluster field (it goes into ``source_key`` and ``provider_name``). *catalog*:
    resolves GPU type names (``a100``) to catalog device ids; names that do not resolve are kept as they are.
    *assume_tz*: the IANA zone of sacct's zone-less timestamps; without it every job is rejected.

    Each record keeps ``x_extra["source_line"]`` (its job line) and ``x_extra["step_lines"]`` (the steps
    rolled into it), so that input lines reconcile with records plus rejected rows. Raises IngestError when
    the file cannot be understood at all (no header and no field list, no delimiter, JobID/State/Start/End
    missing).
    """
    parser = _Parser(path, rejected, fields, delimiter, cluster, catalog, assume_tz)
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if parser.layout is None and parser.setup(line, lineno):
            continue
        yield from parser.feed(line, lineno)
    yield from parser.flush_all()
