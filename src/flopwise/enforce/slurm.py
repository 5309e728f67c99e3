"""Slurm obeys flopwise: accounts and limits synced with sacctmgr, admission in job_submit.lua, settlement by sacct.

Three parts (deployment in docs/enforce/slurm.md):

* **sync** (:func:`desired_accounts`, :func:`read_accounts`, :func:`plan_sync`): each flopwise team becomes a
  Slurm account under ``root`` and each project an account under its team's (names: :func:`account_name`).
  Device quotas become ``GrpTRES`` (``gres/gpu:<type>=N``, or ``gres/gpu=N`` when the quota covers every GPU
  type), usd budgets become ``GrpTRESMins=billing=<cents x 60>`` with the partition's
  ``TRESBillingWeights=GRES/gpu:<type>=<cents per GPU-hour>`` (so one billing-minute is one cent-minute: a
  GPU-hour at $2.50 is 250 x 60 billing-minutes), and hard vs soft becomes the account's QOS:
  ``flopwise_hard`` carries ``Flags=DenyOnLimit`` (a job over the limit is refused at submission),
  ``flopwise_soft`` does not (it pends with reason ``AssocGrpBillingMinutes``). What Slurm holds is read back
  with ``sacctmgr show`` and compared field by field: every difference is reported as drift and the
  ``sacctmgr`` commands that fix it are printed (``--dry-run``) or run.
* **admission** (``job_submit.lua``, rendered by :func:`render_plugin`): decides from the local decision cache
  written by :func:`render_cache` (budgets' remaining amounts, prices, accounts), with no network call under
  slurmctld's locks; see the script's header.
* **agent** (:class:`SlurmAgent`): each step reports the jobs the plugin admitted to
  ``POST /api/v1/admission/decide`` (engine ``slurm``, job id ``<cluster>.<jobid>``), cancels a pending job the
  server's full decision denies, commits started jobs, settles ended ones from sacct (elapsed time x GPUs x
  price), releases jobs that never started, then rewrites the cache. The plugin trusts the cache for
  ``max_age_s``; a stale cache fails closed for hard budgets.

Money is Decimal here; the cache carries integer micro-dollars (and micro-device-hours) because Lua 5.1 has only
doubles, exact for integers up to 2**53 (9e9 dollars).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from flopwise.enforce._config import config_mapping
from flopwise.errors import FlopwiseError, InputError

__all__ = [
    "HARD_QOS",
    "SOFT_QOS",
    "AccountSpec",
    "Drift",
    "GpuPrice",
    "SlurmAgent",
    "SlurmConfig",
    "SlurmError",
    "account_name",
    "billing_weights",
    "desired_accounts",
    "load_config",
    "plan_sync",
    "read_accounts",
    "render_cache",
    "render_plugin",
    "write_atomically",
]

log = logging.getLogger("flopwise.enforce.slurm")

HARD_QOS = "flopwise_hard"
SOFT_QOS = "flopwise_soft"
ENGINE = "slurm"
MICRO = Decimal(1_000_000)
CENTS = Decimal(100)
COMMENT_TAG = re.compile(r"flopwise:adm=([0-9]+-[0-9]+)")
REQUEST_TAG = re.compile(r"flopwise:request=([0-9]+)")
_REQUEST_FINAL_NO = ("denied", "cancelled", "expired")
_CONFIG_KEYS = ("cache", "state_dir", "partition", "cluster", "max_cache_age_s", "gpus")

Runner = Callable[[Sequence[str]], str]


class SlurmError(FlopwiseError):
    """A Slurm command failed (names the command and what it printed)."""


# --- configuration ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuPrice:
    """A Slurm gres GPU type, the catalog device it is, and what an hour of one costs."""

    gres_type: str
    device: str
    usd_per_h: Decimal


@dataclass(frozen=True)
class SlurmConfig:
    """What the sync and the agent need to know about the cluster (YAML, see docs/enforce/slurm.md)."""

    cache: Path
    state_dir: Path
    gpus: Mapping[str, GpuPrice]
    partition: str = "gpu"
    cluster: str | None = None
    max_cache_age_s: int = 30

    @property
    def default_gpu_type(self) -> str:
        return next(iter(self.gpus))


def load_config(data: Mapping[str, Any], *, source: str = "config") -> SlurmConfig:
    """Validate a parsed YAML mapping into a :class:`SlurmConfig`; InputError names the field and the fix."""
    data = config_mapping(data, _CONFIG_KEYS, source=source, expected="cache, state_dir and gpus")
    for key in ("cache", "state_dir", "gpus"):
        if key not in data:
            raise InputError(f"{source}.{key}", None, "is required")
    gpus_in = data["gpus"]
    if not isinstance(gpus_in, Mapping) or not gpus_in:
        raise InputError(f"{source}.gpus", gpus_in, "map each gres GPU type to {device: ..., usd_per_h: ...}")
    gpus: dict[str, GpuPrice] = {}
    for gtype, spec in gpus_in.items():
        where = f"{source}.gpus.{gtype}"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(gtype)):
            raise InputError(where, gtype, "a gres type is letters, digits, '_', '.', '-'")
        if not isinstance(spec, Mapping) or set(spec) != {"device", "usd_per_h"}:
            raise InputError(where, spec, "give exactly {device: <catalog device id>, usd_per_h: '<price>'}")
        try:
            price = Decimal(str(spec["usd_per_h"]))
        except ArithmeticError:
            raise InputError(f"{where}.usd_per_h", spec["usd_per_h"], "give a price such as '2.50'") from None
        if not price.is_finite() or price < 0 or price > 1_000_000:
            raise InputError(f"{where}.usd_per_h", spec["usd_per_h"], "give a price from 0 to 1000000")
        gpus[str(gtype)] = GpuPrice(str(gtype), str(spec["device"]), price)
    age = data.get("max_cache_age_s", 30)
    if not isinstance(age, int) or isinstance(age, bool) or not 1 <= age <= 86_400:
        raise InputError(f"{source}.max_cache_age_s", age, "give whole seconds from 1 to 86400")
    return SlurmConfig(
        cache=Path(str(data["cache"])),
        state_dir=Path(str(data["state_dir"])),
        gpus=gpus,
        partition=str(data.get("partition", "gpu")),
        cluster=None if data.get("cluster") is None else str(data["cluster"]),
        max_cache_age_s=age,
    )


# --- the desired state (pure) -------------------------------------------------------------------------------


def _slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return s or "x"


def account_name(team: str, project: str | None = None) -> str:
    """Slurm account of a team (``research``) or of one of its projects (``research_llm``); Slurm folds case
    and limits names, so non-alphanumerics become ``_`` and names are cut to 60 characters."""
    return (_slug(team) if project is None else f"{_slug(team)}_{_slug(project)}")[:60]


@dataclass(frozen=True)
class AccountSpec:
    """One Slurm account as flopwise wants it (or as sacctmgr shows it)."""

    name: str
    parent: str
    grp_tres: Mapping[str, int] = field(default_factory=dict)
    grp_tres_mins: Mapping[str, int] = field(default_factory=dict)
    qos: str = ""
    project_id: int | None = None
    team_id: int | None = None


def _cents(usd: Decimal) -> int:
    return int((usd * CENTS).to_integral_value(rounding=ROUND_CEILING))


def billing_weights(config: SlurmConfig) -> str:
    """The partition's ``TRESBillingWeights``: cents per GPU-hour per type, CPUs and memory free (weight 0),
    so that a job's billing-minutes are the cents it can spend times 60."""
    parts = ["CPU=0", "Mem=0"]
    parts += [f"GRES/gpu:{g.gres_type}={_cents(g.usd_per_h)}" for g in config.gpus.values()]
    return ",".join(parts)


def _in_window(budget: Mapping[str, Any]) -> bool:
    return budget.get("current_window_start") is not None


def _quota_tres(quota: Mapping[str, Any], config: SlurmConfig) -> dict[str, int]:
    pattern, on = str(quota["device"]), str(quota.get("match_on", "device_type"))
    count = int(Decimal(str(quota["max_concurrent_devices"])))
    if on == "device_class":
        matched = list(config.gpus) if fnmatch.fnmatch("gpu", pattern) else []
    else:
        matched = [t for t, g in config.gpus.items() if fnmatch.fnmatch(g.device, pattern)]
    if not matched:
        return {}
    if len(matched) == len(config.gpus):
        return {"gres/gpu": count}
    return {f"gres/gpu:{t}": count for t in matched}


def _merge_min(into: dict[str, int], more: Mapping[str, int]) -> None:
    for k, v in more.items():
        into[k] = min(into.get(k, v), v)


def desired_accounts(
    teams: Iterable[Mapping[str, Any]],
    projects: Iterable[Mapping[str, Any]],
    budgets: Iterable[Mapping[str, Any]],
    quotas: Iterable[Mapping[str, Any]],
    config: SlurmConfig,
) -> list[AccountSpec]:
    """The accounts flopwise wants, parents first: a team's account, then its projects'. Several budgets or
    quotas on one scope: the tightest wins. A scope with any hard usd budget gets ``flopwise_hard``."""
    team_by_id = {int(t["id"]): t for t in teams}
    usd = [b for b in budgets if b["unit"] == "usd" and _in_window(b)]
    quota_list = list(quotas)

    def limits(kind: str, scope_id: int) -> tuple[dict[str, int], dict[str, int], str]:
        tres: dict[str, int] = {}
        for q in quota_list:
            if q["scope_kind"] == kind and int(q["scope_id"]) == scope_id:
                _merge_min(tres, _quota_tres(q, config))
        mins: dict[str, int] = {}
        mine = [b for b in usd if b["scope_kind"] == kind and int(b["scope_id"]) == scope_id]
        for b in mine:
            _merge_min(mins, {"billing": _cents(Decimal(str(b["amount"]))) * 60})
        qos = HARD_QOS if any(b["is_hard"] for b in mine) else SOFT_QOS
        return tres, mins, qos

    out: list[AccountSpec] = []
    by_team: dict[int, list[Mapping[str, Any]]] = {}
    for p in projects:
        by_team.setdefault(int(p["team_id"]), []).append(p)
    for team_id in sorted(team_by_id):
        team = team_by_id[team_id]
        tres, mins, qos = limits("team", team_id)
        out.append(AccountSpec(account_name(team["name"]), "root", tres, mins, qos, team_id=team_id))
        for p in sorted(by_team.get(team_id, []), key=lambda p: int(p["id"])):
            tres, mins, pqos = limits("project", int(p["id"]))
            if qos == HARD_QOS:
                pqos = HARD_QOS
            out.append(
                AccountSpec(
                    account_name(team["name"], p["name"]), account_name(team["name"]), tres, mins, pqos,
                    project_id=int(p["id"]), team_id=team_id,
                )
            )  # fmt: skip
    names = [a.name for a in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError("account", dupes[0], "two teams or projects map to this Slurm account name; rename one")
    return out


# --- what Slurm holds, and the difference ----------------------------------------------------------------


def _parse_tres(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in filter(None, text.split(",")):
        k, _, v = item.partition("=")
        if v.isdigit():
            out[k] = int(v)
    return out


def read_accounts(run: Runner) -> dict[str, AccountSpec]:
    """Accounts as Slurm's database holds them (account-level associations only), keyed by name."""
    text = run(
        ["sacctmgr", "-n", "-P", "show", "assoc", "where", "user=",
         "format=Account,ParentName,GrpTRES,GrpTRESMins,QOS,User"]
    )  # fmt: skip
    out: dict[str, AccountSpec] = {}
    for line in text.splitlines():
        cols = line.split("|")
        if len(cols) < 6 or cols[5]:
            continue
        name, parent, tres, mins, qos = cols[:5]
        out[name] = AccountSpec(name, parent, _parse_tres(tres), _parse_tres(mins), qos)
    return out


@dataclass(frozen=True)
class Drift:
    """One difference between flopwise and Slurm: the account, the field, what Slurm has and what it should."""

    account: str
    field: str
    slurm: str
    flopwise: str


def _tres_text(tres: Mapping[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tres.items()))


def _tres_set(want: Mapping[str, int], have: Mapping[str, int]) -> str:
    """GrpTRES value that sets *want* and clears (``=-1``) what Slurm has beyond it."""
    items = dict(want)
    for k in have:
        if k not in want:
            items[k] = -1
    return ",".join(f"{k}={v}" for k, v in sorted(items.items()))


def plan_sync(
    desired: Sequence[AccountSpec], actual: Mapping[str, AccountSpec], existing_qos: Iterable[str]
) -> tuple[list[Drift], list[list[str]]]:
    """The drift between *desired* and *actual*, and the sacctmgr commands (argument lists) that remove it.

    Only accounts flopwise manages are compared; other accounts in Slurm are left alone and not reported."""
    drift: list[Drift] = []
    cmds: list[list[str]] = []
    qos_have = set(existing_qos)
    if HARD_QOS not in qos_have:
        drift.append(Drift(HARD_QOS, "qos", "missing", "Flags=DenyOnLimit"))
        cmds.append(["sacctmgr", "-i", "add", "qos", HARD_QOS, "Flags=DenyOnLimit"])
    if SOFT_QOS not in qos_have:
        drift.append(Drift(SOFT_QOS, "qos", "missing", "no flags"))
        cmds.append(["sacctmgr", "-i", "add", "qos", SOFT_QOS])
    for want in desired:
        have = actual.get(want.name)
        if have is None:
            drift.append(Drift(want.name, "account", "missing", f"parent={want.parent}"))
            cmds.append(["sacctmgr", "-i", "add", "account", want.name, f"parent={want.parent}",
                         f"Description=flopwise {'project' if want.project_id else 'team'}"])  # fmt: skip
            have = AccountSpec(want.name, want.parent)
        sets: list[str] = []
        if have.parent != want.parent:
            drift.append(Drift(want.name, "parent", have.parent, want.parent))
            sets.append(f"parent={want.parent}")
        if dict(have.grp_tres) != dict(want.grp_tres):
            drift.append(Drift(want.name, "GrpTRES", _tres_text(have.grp_tres), _tres_text(want.grp_tres)))
            sets.append(f"GrpTRES={_tres_set(want.grp_tres, have.grp_tres)}")
        if dict(have.grp_tres_mins) != dict(want.grp_tres_mins):
            drift.append(
                Drift(want.name, "GrpTRESMins", _tres_text(have.grp_tres_mins), _tres_text(want.grp_tres_mins))
            )
            sets.append(f"GrpTRESMins={_tres_set(want.grp_tres_mins, have.grp_tres_mins)}")
        if have.qos != want.qos:
            drift.append(Drift(want.name, "QOS", have.qos, want.qos))
            sets += [f"QOS={want.qos}", f"DefaultQOS={want.qos}"]
        if sets:
            cmds.append(["sacctmgr", "-i", "modify", "account", "where", f"name={want.name}", "set", *sets])
    return drift, cmds


# --- the decision cache and the plugin ---------------------------------------------------------------------


def _covers(budget: Mapping[str, Any], account: AccountSpec) -> bool:
    """Whether *budget* counts the jobs of *account*: its project's, its team's and the organization's do."""
    kind, scope = budget["scope_kind"], int(budget["scope_id"])
    return kind == "org" or (kind, scope) in {("project", account.project_id), ("team", account.team_id)}


def _micro(value: Decimal) -> int:
    """*value* in integer micro-units, rounded down (a remaining amount is never overstated)."""
    return int((value * MICRO).to_integral_value(rounding=ROUND_FLOOR))


def _lua_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=True)  # a JSON string literal is a valid Lua 5.1 string literal


def render_cache(
    accounts: Sequence[AccountSpec],
    budgets: Iterable[Mapping[str, Any]],
    config: SlurmConfig,
    decided: Iterable[str],
    now_s: float,
    undecided: Mapping[str, Mapping[str, int]] | None = None,
    requests: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """The decision cache as a Lua chunk returning a table (job_submit.lua loads it with ``loadfile`` in an empty
    environment). Each managed account lists the budgets that cover it: its project's, its team's, the org's;
    each budget its remaining amount in micro-units and whether it is hard. ``decided`` lists the admission
    ids the server already counts, so the plugin drops them from its ledger; ``undecided`` the charges (budget id
    -> micro-units) of admitted jobs the server does not count yet, which the plugin adds to its own ledger
    (keyed by admission id, so nothing is counted twice); ``requests`` the state and account of the compute
    requests that jobs name (``flopwise:request=<id>`` in their comment)."""
    budget_list = [b for b in budgets if _in_window(b) and b["unit"] in ("usd", "device_hours")]
    lines = [
        f"-- flopwise decision cache generated_at={now_s!r}: written by `flopwise enforce slurm agent`; do not edit",
        "return {",
        f"  generated_at = {int(now_s)},",
        f"  max_age_s = {config.max_cache_age_s},",
        f"  default_gpu_type = {_lua_str(config.default_gpu_type)},",
        "  gpu_usd_micro_per_h = {"
        + ", ".join(f"[{_lua_str(t)}] = {_micro(g.usd_per_h)}" for t, g in config.gpus.items())
        + "},",
        "  budgets = {",
    ]
    for b in budget_list:
        lines.append(
            f"    [{int(b['id'])}] = {{name = {_lua_str(str(b['name']))}, unit = {_lua_str(b['unit'])}, "
            f"hard = {'true' if b['is_hard'] else 'false'}, "
            f"remaining_micro = {_micro(Decimal(str(b['remaining'])))}}},"
        )
    lines.append("  },")
    lines.append("  accounts = {")
    for a in accounts:
        if a.project_id is None:
            continue
        ids = [int(b["id"]) for b in budget_list if _covers(b, a)]
        lines.append(
            f"    [{_lua_str(a.name)}] = {{project_id = {a.project_id}, "
            f"budgets = {{{', '.join(str(i) for i in ids)}}}}},"
        )
    lines.append("  },")
    lines.append("  decided = {" + ", ".join(f"[{_lua_str(t)}] = true" for t in sorted(decided)) + "},")
    lines.append("  requests = {")
    for rid, req in sorted((requests or {}).items()):
        lines.append(
            f"    [{_lua_str(str(rid))}] = {{state = {_lua_str(req['state'])}, account = {_lua_str(req['account'])}}},"
        )
    lines.append("  },")
    lines.append("  undecided = {")
    for token, charges in sorted((undecided or {}).items()):
        inner = ", ".join(f"[{int(k)}] = {int(v)}" for k, v in sorted(charges.items()))
        lines.append(f"    [{_lua_str(token)}] = {{{inner}}},")
    lines.append("  },")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_plugin(cache_path: Path) -> str:
    """job_submit.lua with the cache's absolute path filled in."""
    text = resources.files("flopwise.enforce").joinpath("job_submit.lua").read_text(encoding="utf-8")
    return text.replace("@CACHE_PATH@", str(cache_path.resolve()).replace("\\", "\\\\").replace('"', '\\"'))


def write_atomically(path: Path, text: str) -> None:
    """Write *text* to *path* through a temporary file and a rename, so a reader sees the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --- running Slurm's commands -----------------------------------------------------------------------------


def subprocess_runner(env: Mapping[str, str] | None = None, timeout_s: float = 60) -> Runner:
    """A :data:`Runner` that runs Slurm's commands and raises :class:`SlurmError` on failure."""

    def run(args: Sequence[str]) -> str:
        try:
            r = subprocess.run(
                list(args), env=dict(env) if env is not None else None, capture_output=True, text=True,
                timeout=timeout_s, check=False,
            )  # fmt: skip
        except FileNotFoundError:
            raise SlurmError(f"{args[0]} not found: install Slurm's client commands (slurm-client)") from None
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{' '.join(args)} timed out after {timeout_s} s") from None
        if r.returncode != 0:
            raise SlurmError(f"{' '.join(args)} failed ({r.returncode}): {(r.stderr or r.stdout).strip()}")
        return r.stdout

    return run


# --- the agent --------------------------------------------------------------------------------------------


#: hours go to the server with at most 6 decimal places (3.6 ms), the precision it keeps amounts to
_HOUR_STEP = Decimal(1).scaleb(-6)


def _slurm_duration_h(text: str, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    """A Slurm duration in hours, rounded to :data:`_HOUR_STEP` (limits round up, so a reservation never falls
    short of the job's time limit)."""
    from flopwise.meter.sacct import parse_slurm_duration_s

    return (Decimal(repr(parse_slurm_duration_s(text))) / 3600).quantize(_HOUR_STEP, rounding=rounding)


def _gpus(tres: str, default_type: str) -> tuple[int, str]:
    count, gtype = 0, default_type
    for item in tres.split(","):
        k, _, v = item.partition("=")
        if k == "gres/gpu" and v.isdigit():
            count = int(v)
        elif k.startswith("gres/gpu:"):
            gtype = k.split(":", 1)[1]
    return count, gtype


def _tres_from_gres(gres: str, nodes: int) -> str:
    """squeue's per-node GPU request (``gres:gpu:h100:2``, ``gres/gpu:2``, ``gpu``) as a job TRES string."""
    m = re.search(r"gpu(?:[:/]([A-Za-z][\w.-]*))?(?:[:=](\d+))?", gres)
    if m is None:
        return ""
    count = int(m.group(2) or 1) * max(nodes, 1)
    typed = f",gres/gpu:{m.group(1)}={count}" if m.group(1) else ""
    return f"gres/gpu={count}{typed}"


@dataclass
class StepReport:
    decided: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    committed: list[str] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


_STARTED = {"RUNNING", "COMPLETING", "SUSPENDED"}
_ENDED_RAN = {"COMPLETED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


class SlurmAgent:
    """Keeps the decision cache fresh and the server's admissions in step with Slurm's jobs.

    *client* is a :class:`flopwise.client.FlopwiseClient`; *run* a :data:`Runner` for Slurm's commands. State
    (which admission ids were reported, which jobs are settled) lives in ``state_dir/slurm-agent.json``."""

    def __init__(self, client: Any, config: SlurmConfig, run: Runner, clock: Callable[[], float] = time.time):
        self.client, self.config, self.run, self.clock = client, config, run, clock
        self.state_path = config.state_dir / "slurm-agent.json"
        self.state: dict[str, Any] = {"jobs": {}, "requests": {}}
        if self.state_path.exists():
            self.state.update(json.loads(self.state_path.read_text(encoding="utf-8")))
        self._cluster = config.cluster

    @property
    def cluster(self) -> str:
        if self._cluster is None:
            out = self.run(["scontrol", "show", "config"])
            m = re.search(r"^ClusterName\s*=\s*(\S+)", out, re.M)
            if m is None:
                raise SlurmError("scontrol show config printed no ClusterName; set cluster: in the config")
            self._cluster = m.group(1)
        return self._cluster

    def _get_all(self) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        return (
            self.client.call("GET", "/teams"),
            self.client.call("GET", "/projects"),
            self.client.list_budgets(),
            self.client.call("GET", "/quotas"),
        )

    def desired(self) -> tuple[list[AccountSpec], list[Any]]:
        teams, projects, budgets, quotas = self._get_all()
        return desired_accounts(teams, projects, budgets, quotas, self.config), budgets

    def sync(self, *, dry_run: bool) -> tuple[list[Drift], list[list[str]]]:
        """Compare and (unless *dry_run*) apply; also sets the partition's TRESBillingWeights live."""
        desired, _ = self.desired()
        actual = read_accounts(self.run)
        qos = [ln.strip() for ln in self.run(["sacctmgr", "-n", "-P", "show", "qos", "format=Name"]).splitlines()]
        drift, cmds = plan_sync(desired, actual, qos)
        weights = billing_weights(self.config)
        part = self.run(["scontrol", "show", "partition", self.config.partition])
        m = re.search(r"TRESBillingWeights=(\S*)", part)
        have = m.group(1) if m else ""
        if have != weights:
            drift.append(Drift(f"partition {self.config.partition}", "TRESBillingWeights", have, weights))
            cmds.append(
                ["scontrol", "update", f"PartitionName={self.config.partition}", f"TRESBillingWeights={weights}"]
            )
        if not dry_run:
            for cmd in cmds:
                self.run(cmd)
        return drift, cmds

    # one pass of the loop
    def _jobs(self) -> list[dict[str, str]]:
        """Jobs from squeue (live jobs, and ended ones for MinJobAge) and sacct (the last 7 days, for jobs that
        ended while the agent was down), sacct's row winning where it has the field: slurmdbd learns of a job
        late (a held job not at all until it is released; the comment only when it ends)."""
        fmt = "--format=JobIDRaw,Account,State,Elapsed,Timelimit,AllocTRES,ReqTRES,Comment"
        keys = ("job", "account", "state", "elapsed", "timelimit", "alloc", "req", "comment")
        rows: dict[str, dict[str, str]] = {}
        queue = self.run(["squeue", "-h", "-a", "-t", "all", "-o", "%i|%a|%T|%M|%l|%b|%D|%k"])
        for line in queue.splitlines():
            cols = line.split("|", 7)
            if len(cols) == 8:
                jid, account, state, used, limit, gres, nodes, comment = cols
                req = _tres_from_gres(gres, int(nodes) if nodes.strip().isdigit() else 1)
                rows[jid.strip()] = dict(zip(keys, (jid.strip(), account, state, used, limit, "", req, comment),
                                             strict=True))  # fmt: skip
        following = [j for j, e in self.state["jobs"].items() if e["phase"] in ("new", "admitted", "committed")]
        ids = sorted(set(rows) | set(following), key=lambda j: (len(j), j))
        text = self.run(["sacct", "-X", "-a", "-n", "-P", "--starttime", "now-7days", fmt])
        if ids:
            text += "\n" + self.run(["sacct", "-X", "-a", "-n", "-P", "-j", ",".join(ids), fmt])
        for line in text.splitlines():
            cols = line.split("|", len(keys) - 1)
            if len(cols) != len(keys):
                continue
            row = dict(zip(keys, cols, strict=True))
            if row["comment"] == "(null)":
                row["comment"] = ""
            have = rows.get(row["job"])
            if have is not None:  # squeue knows the live state and comment; sacct the rest, once it has it
                row = {k: v or have[k] for k, v in row.items()}
                row["state"], row["comment"] = have["state"] or row["state"], have["comment"] or row["comment"]
            rows[row["job"]] = row
        return list(rows.values())

    def step(self) -> StepReport:
        """Report, settle and refresh once; a server or Slurm error on one job is recorded and the rest go on.

        A job is reported to the server when it starts (admission is the right to run: Slurm's own limits,
        synced from flopwise's quotas, decide when a pending job may start); until then its worst case stays
        in the cache's ``undecided`` charges, so the plugin keeps counting it even after slurmctld restarts."""
        report = StepReport()
        accounts, budgets = self.desired()
        by_name = {a.name: a for a in accounts if a.project_id is not None}
        by_project = {a.project_id: a.name for a in by_name.values()}
        jobs: dict[str, dict[str, Any]] = self.state["jobs"]
        for row in self._jobs():
            jid = row["job"]
            m = COMMENT_TAG.search(row["comment"])
            if (m is None and jid not in jobs) or row["account"] not in by_name:
                continue
            engine_id = f"{self.cluster}.{jid}"
            entry = jobs.setdefault(jid, {"token": m.group(1) if m else "", "phase": "new"})
            state = row["state"].split()[0]
            linked = REQUEST_TAG.search(row["comment"])
            if linked is not None or entry["phase"] == "request":
                if linked is not None:
                    entry["phase"], entry["request"] = "request", linked.group(1)
                self._request_job(row, entry, by_project, report)
                continue
            try:
                if entry["phase"] == "new":
                    if state == "PENDING":
                        entry["charges"] = self._charges(row, by_name[row["account"]], budgets)
                        continue
                    if state == "CANCELLED" and row["elapsed"] in ("", "00:00:00"):
                        entry["phase"] = "never_ran"
                        continue
                    if not row["timelimit"]:
                        continue  # not in slurmdbd yet: the next pass decides it
                    self._decide(row, by_name[row["account"]], engine_id, entry, report)
                if entry["phase"] == "admitted":
                    self.client.call("POST", f"/admission/{ENGINE}/{engine_id}/commit")
                    entry["phase"] = "committed"
                    report.committed.append(jid)
                if entry["phase"] == "committed" and (state in _ENDED_RAN or state == "CANCELLED"):
                    self._settle(row, engine_id)
                    entry["phase"] = "settled"
                    report.settled.append(jid)
            except FlopwiseError as exc:
                report.errors.append(f"job {jid}: {exc}")
                log.warning("job %s: %s", jid, exc)
        self._save()
        self.refresh(accounts, budgets)
        return report

    def _request_job(
        self, row: Mapping[str, str], entry: dict[str, Any], by_project: Mapping[int | None, str], report: StepReport
    ) -> None:
        """A job waiting on (or running under) a compute request: look the request up; release the held job
        once it is approved, cancel it if the request is denied, cancelled or expired. A job that started
        without an approved request (its owner released the hold: Slurm shows a job_submit hold as
        ``JobHeldUser``) is cancelled."""
        rid, jid = entry["request"], row["job"]
        state = row["state"].split()[0]
        if entry.get("done") or (state not in _STARTED and state != "PENDING"):
            entry["done"] = True
            return
        try:
            req = self.client.call("GET", f"/requests/{rid}")
            account = by_project.get(req["project_id"], "")
            self.state["requests"][rid] = {"state": req["state"], "account": account}
            ok = req["state"] == "approved" and account == row["account"]
            if state in _STARTED:
                if not ok:
                    reason = f"request {rid} is {req['state']}" + ("" if account == row["account"] else
                                                                  f" and for account {account}")  # fmt: skip
                    self.run(["scontrol", "update", f"JobId={jid}", f"Comment=flopwise: {reason}"])
                    self.run(["scancel", jid])
                    report.cancelled.append(jid)
                    log.warning("slurm job %s started without an approved request: %s; cancelled", jid, reason)
                entry["done"] = True
            elif account != row["account"]:
                return  # the plugin rejects such jobs; one submitted before the cache knew it waits held
            elif ok:
                self.run(["scontrol", "release", jid])
                report.released.append(jid)
                entry["done"] = True
            elif req["state"] in _REQUEST_FINAL_NO:
                self.run(["scontrol", "update", f"JobId={jid}", f"Comment=flopwise: request {rid} is {req['state']}"])
                self.run(["scancel", jid])
                report.cancelled.append(jid)
                entry["done"] = True
        except FlopwiseError as exc:
            report.errors.append(f"job {jid}: request {rid}: {exc}")

    def _worst(self, row: Mapping[str, str]) -> tuple[int, GpuPrice | None, Decimal | None]:
        gpus, gtype = _gpus(row["alloc"] or row["req"], self.config.default_gpu_type)
        limit_h = (
            _slurm_duration_h(row["timelimit"], ROUND_CEILING) if row["timelimit"] not in ("", "UNLIMITED") else None
        )
        return gpus, self.config.gpus.get(gtype), limit_h

    def _charges(self, row: Mapping[str, str], account: AccountSpec, budgets: Sequence[Any]) -> dict[str, int]:
        """What the plugin charged this pending job, per budget id (the same worst case, in micro-units)."""
        gpus, price, limit_h = self._worst(row)
        if gpus == 0 or price is None or limit_h is None:
            return {}
        need = {"usd": gpus * _micro(price.usd_per_h) * limit_h, "device_hours": gpus * MICRO * limit_h}
        out: dict[str, int] = {}
        for b in budgets:
            if b["unit"] in need and _in_window(b) and _covers(b, account):
                out[str(b["id"])] = int(need[b["unit"]].to_integral_value(rounding=ROUND_CEILING))
        return out

    def _decide(
        self, row: Mapping[str, str], account: AccountSpec, engine_id: str, entry: dict[str, Any], report: StepReport
    ) -> None:
        gpus, price, limit_h = self._worst(row)
        if gpus == 0 or price is None or limit_h is None or limit_h <= 0:
            # CPU-only or unknown type: nothing for a GPU budget to count
            entry["phase"], entry["why"] = "unpriced", f"tres={row['alloc'] or row['req']} limit={row['timelimit']}"
            return
        body = {
            "engine": ENGINE,
            "engine_job_id": engine_id,
            "project_id": account.project_id,
            "device": price.device,
            "device_count": gpus,
            "max_duration_h": str(limit_h),
            "usd_per_device_h": str(price.usd_per_h),
        }
        result = self.client.call("POST", "/admission/decide", json_body=body)
        report.decided.append(row["job"])
        entry.pop("charges", None)
        if result["admitted"]:
            entry["phase"] = "admitted"
            return
        entry["phase"] = "denied"
        reason = "; ".join(result.get("reasons") or ["denied by flopwise"])
        self.run(["scontrol", "update", f"JobId={row['job']}", f"Comment=flopwise denied: {reason}"[:250]])
        self.run(["scancel", row["job"]])
        report.cancelled.append(row["job"])
        log.warning("slurm job %s denied by flopwise's full decision, cancelled: %s", row["job"], reason)

    def _settle(self, row: Mapping[str, str], engine_id: str) -> None:
        hours = _slurm_duration_h(row["elapsed"])
        gpus, gtype = _gpus(row["alloc"], self.config.default_gpu_type)
        price = self.config.gpus[gtype].usd_per_h if gtype in self.config.gpus else Decimal(0)
        body = {
            "actual_duration_h": str(hours),
            "device_hours": str(hours * gpus),
            "cost_usd": str((hours * gpus * price).quantize(Decimal("0.000001"))),
        }
        self.client.call("POST", f"/admission/{ENGINE}/{engine_id}/settle", json_body=body)

    def _save(self) -> None:
        write_atomically(self.state_path, json.dumps(self.state, sort_keys=True))

    def refresh(self, accounts: Sequence[AccountSpec] | None = None, budgets: Sequence[Any] | None = None) -> None:
        """Rewrite the decision cache from the server's current budgets."""
        if accounts is None or budgets is None:
            accounts, budgets = self.desired()
        jobs = self.state["jobs"].values()
        decided = [e["token"] for e in jobs if e["phase"] != "new"]
        undecided = {e["token"]: e.get("charges", {}) for e in jobs if e["phase"] == "new"}
        write_atomically(
            self.config.cache,
            render_cache(accounts, budgets, self.config, decided, self.clock(), undecided, self.state["requests"]),
        )

