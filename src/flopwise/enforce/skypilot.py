"""SkyPilot obeys flopwise: a RESTful admin policy (SkyPilot's ``admin_policy: <URL>``) that asks flopwise's
admission API before a cluster or a managed job is launched.

SkyPilot's ``RestfulAdminPolicy`` POSTs each user request as a JSON-encoded string of
``{task, skypilot_config, request_name, request_options, at_client_side, user}`` (task and config as YAML
strings) and expects 200 with a JSON-encoded string of ``{task, skypilot_config}`` (the possibly mutated
request), or 400 whose body is shown to the user as the rejection reason (``sky/admin_policy.py``,
SkyPilot 0.14).

For ``launch`` and ``jobs.launch`` requests whose resources ask for accelerators, the policy:

* reads the project from the resources label ``flopwise-project`` (a project id) and the most the task may run
  from ``flopwise-max-hours`` (else the configuration's ``default_max_hours``); a missing or bad label is a 400
  naming the label and the fix;
* prices the worst case = accelerators x nodes x hours at the configured price of that accelerator (alternatives
  in ``any_of``/``ordered``: the most expensive one);
* calls ``POST /api/v1/admission/decide`` (engine ``skypilot``) through :class:`flopwise.client.FlopwiseClient`;
* admitted: returns the task with the label ``flopwise-admission=<engine job id>`` added (200);
  denied, or needing an approval (SkyPilot has no wait verb): 400 with flopwise's reasons;
* flopwise unreachable (or too slow: the client's timeout): 503, which SkyPilot treats as a failed policy call,
  so the launch fails closed; unless every budget covering the project is soft (from the last read of
  budgets, at most 5 minutes old), where the launch passes unchanged and a warning is logged.

Other requests (``exec``, ``validate``, ``optimize``, CPU-only tasks) pass through unchanged.

Settlement (:func:`settle_launches`, ``flopwise enforce skypilot settle``): SkyPilot's cost report
(``sky.core.cost_report``, read by an interpreter with SkyPilot on the API server's host) lists each cluster with
its labels, so the admission id the policy injected finds its cluster: committed when it is up, settled with the
seconds it was up and SkyPilot's cost estimate when it is torn down.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from flopwise.enforce._client import SoftBudgets, borrowed
from flopwise.enforce._config import config_decimal, config_mapping
from flopwise.errors import InputError, suggest

__all__ = ["ADMISSION_LABEL", "SkyPilotConfig", "create_policy_app", "load_config", "settle_launches", "sky_cost_report",
           "worst_case"]

log = logging.getLogger("flopwise.enforce.skypilot")

ENGINE = "skypilot"
PROJECT_LABEL = "flopwise-project"
HOURS_LABEL = "flopwise-max-hours"
ADMISSION_LABEL = "flopwise-admission"
GATED_REQUESTS = ("launch", "jobs.launch")
_CONFIG_KEYS = ("accelerators", "default_max_hours")


@dataclass(frozen=True)
class Accelerator:
    name: str
    device: str
    usd_per_h: Decimal


@dataclass(frozen=True)
class SkyPilotConfig:
    accelerators: Mapping[str, Accelerator]
    default_max_hours: Decimal | None = None


def load_config(data: Mapping[str, Any], *, source: str = "config") -> SkyPilotConfig:
    """``{accelerators: {H100: {device: h100-sxm, usd_per_h: '2.50'}}, default_max_hours: 24}``, validated."""
    data = config_mapping(data, _CONFIG_KEYS, source=source, expected="accelerators")
    accs = data.get("accelerators")
    if not isinstance(accs, Mapping) or not accs:
        raise InputError(f"{source}.accelerators", accs, "map SkyPilot accelerator names to {device, usd_per_h}")
    out: dict[str, Accelerator] = {}
    for name, spec in accs.items():
        where = f"{source}.accelerators.{name}"
        if not isinstance(spec, Mapping) or set(spec) != {"device", "usd_per_h"}:
            raise InputError(where, spec, "give exactly {device: <catalog device id>, usd_per_h: '<price>'}")
        price = config_decimal(spec["usd_per_h"], f"{where}.usd_per_h", "a price such as '2.50'")
        out[str(name).lower()] = Accelerator(str(name), str(spec["device"]), price)
    hours = data.get("default_max_hours")
    return SkyPilotConfig(
        out, None if hours is None else _positive(config_decimal(hours, f"{source}.default_max_hours", "hours"),
                                                  f"{source}.default_max_hours"),
    )  # fmt: skip



def _positive(d: Decimal, field: str) -> Decimal:
    if d <= 0:
        raise InputError(field, str(d), "give more than 0 hours")
    return d


def _accelerator_options(acc: Any) -> list[tuple[str, int]]:
    """``H100:8``, ``{H100: 8}``, ``[H100:8, A100:8]`` or ``{H100: 8, A100: 8}`` (alternatives) as (name, count)."""
    if acc is None:
        return []
    if isinstance(acc, str):
        name, _, count = acc.partition(":")
        return [(name.strip(), int(float(count)) if count else 1)]
    if isinstance(acc, Mapping):
        return [(str(k), int(float(v)) if v is not None else 1) for k, v in acc.items()]
    if isinstance(acc, (list, tuple, set)):
        return [opt for item in acc for opt in _accelerator_options(item)]
    raise InputError("resources.accelerators", acc, "give NAME:COUNT, {NAME: COUNT} or a list of them")


def worst_case(task: Mapping[str, Any], config: SkyPilotConfig) -> tuple[Accelerator, int, Mapping[str, Any]] | None:
    """The most expensive (accelerator, total count) the task may get, and the resources entry carrying the
    labels; None for a task without accelerators."""
    resources = task.get("resources") or {}
    candidates = [resources]
    for key in ("any_of", "ordered"):
        for alt in resources.get(key) or ():
            candidates.append({**{k: v for k, v in resources.items() if k not in ("any_of", "ordered")}, **alt})
    nodes = int(task.get("num_nodes") or 1)
    best: tuple[Decimal, Accelerator, int] | None = None
    for res in candidates:
        for name, count in _accelerator_options(res.get("accelerators")):
            acc = config.accelerators.get(name.lower())
            if acc is None:
                hint = suggest(name, [a.name for a in config.accelerators.values()])
                raise InputError(
                    "resources.accelerators", name,
                    "flopwise has no price for this accelerator; use one of "
                    + ", ".join(a.name for a in config.accelerators.values())
                    + (f" (did you mean {hint[0]}?)" if hint else ""),
                )  # fmt: skip
            cost = acc.usd_per_h * count * nodes
            if best is None or cost > best[0]:
                best = (cost, acc, count * nodes)
    return None if best is None else (best[1], best[2], resources)


def _label(resources: Mapping[str, Any], name: str) -> str | None:
    value = (resources.get("labels") or {}).get(name)
    return None if value is None else str(value)


def admission_body(task: Mapping[str, Any], config: SkyPilotConfig, job_id: str) -> dict[str, Any] | None:
    """The ``/admission/decide`` body for a task, or None when nothing is to be admitted (no accelerators)."""
    found = worst_case(task, config)
    if found is None:
        return None
    acc, count, resources = found
    project = _label(resources, PROJECT_LABEL)
    if project is None or not re.fullmatch(r"[1-9][0-9]{0,17}", project):
        raise InputError(f"resources.labels.{PROJECT_LABEL}", project,
                         "label the task with its flopwise project id (resources: labels: {flopwise-project: '7'})")  # fmt: skip
    hours_text = _label(resources, HOURS_LABEL)
    if hours_text is None:
        if config.default_max_hours is None:
            raise InputError(f"resources.labels.{HOURS_LABEL}", None,
                             "label the task with the most hours it may run (flopwise-max-hours: '12')")  # fmt: skip
        hours = config.default_max_hours
    else:
        hours = _positive(config_decimal(hours_text, f"resources.labels.{HOURS_LABEL}", "hours"),
                          f"resources.labels.{HOURS_LABEL}")  # fmt: skip
    return {
        "engine": ENGINE,
        "engine_job_id": job_id,
        "project_id": int(project),
        "device": acc.device,
        "device_count": count,
        "max_duration_h": str(hours),
        "usd_per_device_h": str(acc.usd_per_h),
    }


def _yaml_classes() -> tuple[Any, Any]:
    """libyaml's safe loader and dumper where PyYAML was built with it (several times faster), else PyYAML's."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader), getattr(yaml, "CSafeDumper", yaml.SafeDumper)


_LOADER, _DUMPER = _yaml_classes()


def _decode_request(body: Any) -> dict[str, Any]:
    import yaml

    if isinstance(body, str):  # SkyPilot sends json=<the JSON text>, so the body is a JSON string
        body = json.loads(body)
    if not isinstance(body, Mapping) or "task" not in body:
        raise InputError("body", "...", "send SkyPilot's user request: {task, skypilot_config, request_name, ...}")
    out = dict(body)
    try:
        task = yaml.load(body["task"], Loader=_LOADER) or {}
    except yaml.YAMLError as exc:
        raise InputError("task", "...", f"send the task as YAML text ({exc})") from None
    if not isinstance(task, dict):
        raise InputError("task", "...", "send the task as a YAML mapping")
    out["task_dict"] = task
    return out


def create_policy_app(client: Any, config: SkyPilotConfig, soft: SoftBudgets | None = None) -> Any:
    """The policy server: ``POST /skypilot/policy`` (the URL to put in SkyPilot's ``admin_policy:``) and
    ``GET /healthz``. *client* is a :class:`flopwise.client.FlopwiseClient` shared by every call (its
    connections kept alive), or a factory of them (one per call, closed after use). *soft*: the fail-open rule
    (a launch passes unchecked while flopwise is unreachable only if every budget of its project is soft)."""
    soft = soft if soft is not None else SoftBudgets()
    import yaml
    from fastapi import Body, FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse

    from flopwise.client import ServerError, ServerUnreachableError

    app = FastAPI(title="flopwise SkyPilot admin policy", docs_url=None, redoc_url=None)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/skypilot/policy")
    def policy(payload: Any = Body(None)) -> Any:  # noqa: B008 - FastAPI's way to take the raw JSON body
        # a plain def: FastAPI runs it in its thread pool, so the blocking call to flopwise never stalls the loop
        try:
            req = _decode_request(payload)
        except (ValueError, InputError, TypeError) as exc:
            return PlainTextResponse(f"flopwise: not a SkyPilot user request: {exc}", status_code=400)
        unchanged = json.dumps({"task": req["task"], "skypilot_config": req.get("skypilot_config", "")})
        if req.get("request_name") not in GATED_REQUESTS:
            return JSONResponse(unchanged)
        task = req["task_dict"]
        cluster = ((req.get("request_options") or {}).get("cluster_name") or "job").replace("/", "_")
        job_id = f"{cluster[:60]}.{uuid.uuid4().hex[:16]}"
        try:
            body = admission_body(task, config, job_id)
        except InputError as exc:
            return PlainTextResponse(f"flopwise: {exc}", status_code=400)
        if body is None:
            return JSONResponse(unchanged)
        try:
            with borrowed(client) as fw:
                result = fw.call("POST", "/admission/decide", json_body=body)
                soft.maybe_refresh(fw)
        except ServerUnreachableError as exc:
            if soft.all_soft(body["project_id"]):
                log.warning("launch %s: flopwise unreachable; every budget of project %s is soft: let through "
                            "unchecked (%s)", job_id, body["project_id"], exc)  # fmt: skip
                return JSONResponse(unchanged)
            return PlainTextResponse(f"flopwise: cannot decide, so the launch fails closed: {exc}", status_code=503)
        except ServerError as exc:
            return PlainTextResponse(f"flopwise: {exc}", status_code=400 if exc.status < 500 else 502)
        if not result["admitted"]:
            reasons = "; ".join(result.get("reasons") or ["denied"])
            return PlainTextResponse(f"flopwise: {reasons}", status_code=400)
        resources = task.setdefault("resources", {})
        resources.setdefault("labels", {})[ADMISSION_LABEL] = job_id
        mutated = {"task": yaml.dump(task, Dumper=_DUMPER, sort_keys=False),
                   "skypilot_config": req.get("skypilot_config", "")}  # fmt: skip
        return JSONResponse(json.dumps(mutated))

    return app


# --- settlement -------------------------------------------------------------------------------------------

#: Run by the interpreter that has SkyPilot (on the SkyPilot API server's host, whose state database holds the
#: clusters): ``sky.core.cost_report`` lists live and torn-down clusters with their launched resources (their
#: labels carry the admission id the policy injected), status (None once torn down), seconds up and SkyPilot's
#: cost estimate. Prints them as JSON.
SKY_COST_REPORT = """
import json, sys
from sky import core
out = []
for r in core.cost_report(days=int(sys.argv[1])):
    res = r.get('resources')
    status = r.get('status')
    cost = r.get('total_cost')
    out.append({'name': r.get('name'), 'status': getattr(status, 'value', status),
                'launched_at': r.get('launched_at'), 'duration_s': int(r.get('duration') or 0),
                'num_nodes': r.get('num_nodes'), 'total_cost': None if cost is None else repr(float(cost)),
                'labels': dict(getattr(res, 'labels', None) or {})})
print(json.dumps(out))
"""


def sky_cost_report(python: str, days: int = 30, *, timeout_s: float = 300, env: Mapping[str, str] | None = None
                    ) -> list[dict[str, Any]]:  # fmt: skip
    """SkyPilot's cost report, read by *python* (an interpreter with the skypilot package)."""
    import os
    import subprocess

    try:
        out = subprocess.run([python, "-c", SKY_COST_REPORT, str(days)], capture_output=True, text=True,
                             timeout=timeout_s, check=False, env=dict(env) if env is not None else os.environ.copy())  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError("--sky-python", python, f"cannot run SkyPilot's cost report ({exc})") from None
    if out.returncode != 0:
        raise InputError("--sky-python", python, "SkyPilot's cost report failed: " + out.stderr.strip()[-500:])
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("[")]
    if not lines:
        raise InputError("--sky-python", python, "SkyPilot's cost report printed no JSON")
    return list(json.loads(lines[-1]))


def settle_launches(client: Any, records: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Commit and settle the admissions of SkyPilot clusters from their cost-report records.

    A cluster labelled ``flopwise-admission=<id>``: while it exists (``INIT``, ``UP``, ``STOPPED``) an
    ``admitted`` admission is committed once it is ``UP``; once it is torn down (status None) the admission is
    settled with the seconds it was up (``duration``) x its GPUs (from the admission), and SkyPilot's own cost
    estimate when it has one (else flopwise prorates the worst case by the hours); one torn down before it was
    ever up (0 s) is released. Settled, released and rejected admissions are left alone, so a pass can be
    repeated. Returns ``{"committed": [...], "settled": [...], "released": [...], "errors": [...]}``."""
    from flopwise.client import NotFoundError
    from flopwise.errors import FlopwiseError

    report: dict[str, list[str]] = {"committed": [], "settled": [], "released": [], "errors": []}
    with borrowed(client) as fw:
        for rec in records:
            job_id = (rec.get("labels") or {}).get(ADMISSION_LABEL)
            if not job_id:
                continue
            try:
                adm = fw.call("GET", f"/admission/{ENGINE}/{job_id}")
                if adm["state"] not in ("admitted", "committed"):
                    continue
                status, seconds = rec.get("status"), int(rec.get("duration_s") or 0)
                if status is not None:
                    if status == "UP" and adm["state"] == "admitted":
                        fw.call("POST", f"/admission/{ENGINE}/{job_id}/commit")
                        report["committed"].append(job_id)
                    continue
                if seconds == 0 and adm["state"] == "admitted":
                    fw.call("POST", f"/admission/{ENGINE}/{job_id}/release")
                    report["released"].append(job_id)
                    continue
                hours = (Decimal(seconds) / 3600).quantize(Decimal("0.000001"))
                body: dict[str, str] = {"actual_duration_h": str(hours),
                                        "device_hours": str(hours * int(adm["device_count"]))}  # fmt: skip
                cost = rec.get("total_cost")
                if cost is not None and Decimal(str(cost)) > 0:
                    body["cost_usd"] = str(Decimal(str(cost)).quantize(Decimal("0.000001")))
                fw.call("POST", f"/admission/{ENGINE}/{job_id}/settle", json_body=body)
                report["settled"].append(job_id)
            except NotFoundError:
                report["errors"].append(f"{rec.get('name')}: admission {job_id} is unknown to flopwise")
            except FlopwiseError as exc:
                report["errors"].append(f"{rec.get('name')}: {exc}")
    return report
