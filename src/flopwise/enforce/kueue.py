"""Kueue obeys flopwise: an AdmissionCheck controller for ``kueue.x-k8s.io/v1beta2`` Workloads, and a generator of
the ResourceFlavor / Cohort / ClusterQueue / AdmissionCheck manifests that put flopwise's quotas into Kueue.

Kueue reserves quota for a Workload in a ClusterQueue, then waits for every AdmissionCheck the queue lists
(``spec.admissionChecksStrategy``) to turn ``Ready`` in ``status.admissionChecks`` before the job starts. The
AdmissionCheck objects whose ``spec.controllerName`` is this controller's (``flopwise.io/admission`` unless
configured otherwise) are flopwise's: for each Workload with quota reserved and one of them ``Pending``, the
controller asks ``POST /api/v1/admission/decide`` (engine ``kueue``, job id = the Workload's uid, ``<uid>.<n>``
for the n-th later attempt, since a decision is never re-made for the same id) and answers with Kueue's verbs:

* admitted -> ``Ready`` with ``flopwise: admitted as kueue/<id>``;
* the policy needs an approval -> ``Retry`` (``requeueAfterSeconds`` = ``approval_poll_s``) until the
  Workload links an approved compute request (annotation ``flopwise.io/request: "<id>"``), then ``Ready``;
  ``Rejected`` once that request is denied, cancelled or expired;
* refused only by hard budgets whose window will reset (the job fits the budget's amount) -> ``Retry`` with
  ``requeueAfterSeconds`` = seconds until the latest of those windows ends, so Kueue re-queues it then;
* refused only by device quotas (busy now, free later) -> ``Retry`` after ``retry_s``;
* anything else (a policy denial, a job larger than the whole budget, an unaccepted acceptable-use policy, a
  bad label) -> ``Rejected`` with flopwise's reasons (Kueue deactivates the Workload).

The Workload is the state: the admission id, the phase (``admitted``, ``committed``, ``settled``,
``released``), when it started and the attempt count live in its annotations (``kueue.flopwise.io/*``), so a restarted
controller settles what ended while it was down. When Kueue marks the Workload ``Admitted`` the admission is
committed; when it is ``Finished`` it is settled with the time between those two conditions x GPUs x price; a
Workload deleted or finished before it started is released.

Fail modes: flopwise unreachable or slow -> ``Retry`` after ``retry_s`` with the error (fails closed), unless
every budget covering the project (from the last successful budget read, at most ``max_cache_age_s`` old) is
soft, where the Workload is let through (``Ready``), logged, and decided when flopwise is back.

The Workload's project: label ``flopwise.io/project`` (a project id) on the Workload, else on its
ClusterQueue (the generated ClusterQueues carry it). Its worst case: the GPUs (``gpu_resource``) its pod sets
request x their counts, the flavor Kueue assigned (``status.admission.podSetAssignments[].flavors``) priced by
the configuration, and the most hours it may run (annotation ``flopwise.io/max-hours``, else
``spec.maximumExecutionTimeSeconds``, else ``default_max_hours``).

The Kubernetes API is reached with plain list + watch + merge-patch over httpx (no kopf: the controller needs
only these four calls, and kopf would add aiohttp, its own finalizers and annotations on every Workload).
References: Kueue's AdmissionCheck API, ``apis/kueue/v1beta2/admissioncheck_types.go`` and
``workload_types.go`` (kubernetes-sigs/kueue, Apache-2.0); ``status.admissionChecks[].requeueAfterSeconds``
(int32, >= 0; Kueue re-queues after ``lastTransitionTime`` + that) and ``retryCount`` as in Kueue's published
v1beta2 Workload CRD schema (the copy the tests validate against is in tests/data/kueue/).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

from flopwise.enforce._client import SoftBudgets
from flopwise.enforce._config import config_decimal, config_mapping
from flopwise.errors import FlopwiseError, InputError

__all__ = [
    "ADMISSION_ANN",
    "CONTROLLER_NAME",
    "KubeApi",
    "KubeError",
    "KueueConfig",
    "KueueController",
    "load_config",
    "manifests",
]

log = logging.getLogger("flopwise.enforce.kueue")

ENGINE = "kueue"
GROUP = "kueue.x-k8s.io"
VERSION = "v1beta2"
CONTROLLER_NAME = "flopwise.io/admission"
PROJECT_LABEL = "flopwise.io/project"
HOURS_ANN = "flopwise.io/max-hours"
REQUEST_ANN = "flopwise.io/request"
ADMISSION_ANN = "kueue.flopwise.io/admission"
PHASE_ANN = "kueue.flopwise.io/phase"
ATTEMPT_ANN = "kueue.flopwise.io/attempts"
STARTED_ANN = "kueue.flopwise.io/started-at"
_CONFIG_KEYS = ("flavors", "gpu_resource", "controller_name", "check_name", "default_max_hours", "retry_s",
                "approval_poll_s", "max_cache_age_s", "queueing_strategy")  # fmt: skip
_FLAVOR_KEYS = ("device", "usd_per_h", "node_labels")
_REQUEST_FINAL_NO = ("denied", "cancelled", "expired")
_DNS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class KubeError(FlopwiseError):
    """The Kubernetes API answered with an error (or not at all)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Flavor:
    name: str
    device: str
    usd_per_h: Decimal
    node_labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KueueConfig:
    """Flavors (Kueue ResourceFlavor name -> catalog device and price per GPU-hour) and the controller's knobs."""

    flavors: Mapping[str, Flavor]
    gpu_resource: str = "nvidia.com/gpu"
    controller_name: str = CONTROLLER_NAME
    check_name: str = "flopwise"
    default_max_hours: Decimal | None = None
    retry_s: int = 60
    approval_poll_s: int = 60
    max_cache_age_s: int = 300
    queueing_strategy: str = "BestEffortFIFO"



def _seconds(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 86_400 * 366:
        raise InputError(where, value, "give whole seconds from 1 to 31622400")
    return value


def load_config(data: Mapping[str, Any], *, source: str = "config") -> KueueConfig:
    """``{flavors: {h100: {device: h100-sxm, usd_per_h: '2.50', node_labels: {...}}}, default_max_hours: 24}``."""
    data = config_mapping(data, _CONFIG_KEYS, source=source, expected="flavors")
    flavors = data.get("flavors")
    if not isinstance(flavors, Mapping) or not flavors:
        raise InputError(f"{source}.flavors", flavors, "map Kueue ResourceFlavor names to {device, usd_per_h}")
    out: dict[str, Flavor] = {}
    for name, spec in flavors.items():
        where = f"{source}.flavors.{name}"
        if not _DNS.match(str(name)) or len(str(name)) > 253:
            raise InputError(where, name, "name the flavor as Kubernetes names objects: lowercase, digits, '-', '.'")
        if not isinstance(spec, Mapping) or not {"device", "usd_per_h"} <= set(spec) or set(spec) - set(_FLAVOR_KEYS):
            raise InputError(where, spec, "give {device: <catalog device id>, usd_per_h: '<price>'} "
                             "and optionally node_labels")  # fmt: skip
        labels = spec.get("node_labels") or {}
        if not isinstance(labels, Mapping) or len(labels) > 8:
            raise InputError(f"{where}.node_labels", labels, "give up to 8 node labels as a mapping")
        out[str(name)] = Flavor(str(name), str(spec["device"]), config_decimal(spec["usd_per_h"], f"{where}.usd_per_h",
                                "a price such as '2.50'"), {str(k): str(v) for k, v in labels.items()})  # fmt: skip
    hours = data.get("default_max_hours")
    strategy = str(data.get("queueing_strategy", "BestEffortFIFO"))
    if strategy not in ("StrictFIFO", "BestEffortFIFO"):
        raise InputError(f"{source}.queueing_strategy", strategy, "use StrictFIFO or BestEffortFIFO")
    check = str(data.get("check_name", "flopwise"))
    if not _DNS.match(check):
        raise InputError(f"{source}.check_name", check, "give a Kubernetes object name (lowercase, digits, '-')")
    return KueueConfig(
        out,
        gpu_resource=str(data.get("gpu_resource", "nvidia.com/gpu")),
        controller_name=str(data.get("controller_name", CONTROLLER_NAME)),
        check_name=check,
        default_max_hours=None if hours is None else config_decimal(hours, f"{source}.default_max_hours", "hours",
                                                               positive=True),  # fmt: skip
        retry_s=_seconds(data.get("retry_s", 60), f"{source}.retry_s"),
        approval_poll_s=_seconds(data.get("approval_poll_s", 60), f"{source}.approval_poll_s"),
        max_cache_age_s=_seconds(data.get("max_cache_age_s", 300), f"{source}.max_cache_age_s"),
        queueing_strategy=strategy,
    )


# --- manifests --------------------------------------------------------------------------------------------


def _slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return s or "x"


def queue_name(team: str, project: str | None = None) -> str:
    """Cohort of a team (``fw-research``) or ClusterQueue of one of its projects (``fw-research-llm``)."""
    return ("fw-" + _slug(team) + ("" if project is None else "-" + _slug(project)))[:63].rstrip("-")


def _flavors_for(quota: Mapping[str, Any], config: KueueConfig) -> list[str]:
    import fnmatch

    pattern, on = str(quota["device"]), str(quota.get("match_on", "device_type"))
    if on == "device_class":
        return list(config.flavors) if fnmatch.fnmatch("gpu", pattern) else []
    return [n for n, f in config.flavors.items() if fnmatch.fnmatch(f.device, pattern)]


def _quota_per_flavor(quotas: Iterable[Mapping[str, Any]], kind: str, scope_id: int, config: KueueConfig
                      ) -> dict[str, int]:  # fmt: skip
    """The tightest device quota per flavor on one scope (flavors no quota names are left out)."""
    out: dict[str, int] = {}
    for q in quotas:
        if q["scope_kind"] == kind and int(q["scope_id"]) == scope_id:
            count = int(Decimal(str(q["max_concurrent_devices"])))
            for name in _flavors_for(q, config):
                out[name] = min(out.get(name, count), count)
    return out


def _resource_groups(quota: Mapping[str, int], config: KueueConfig, *, all_flavors: bool) -> list[dict[str, Any]]:
    names = list(config.flavors) if all_flavors else [n for n in config.flavors if n in quota]
    if not names:
        return []
    return [{
        "coveredResources": [config.gpu_resource],
        "flavors": [{"name": n, "resources": [{"name": config.gpu_resource, "nominalQuota": quota.get(n, 0)}]}
                    for n in names],
    }]  # fmt: skip


def manifests(
    teams: Iterable[Mapping[str, Any]],
    projects: Iterable[Mapping[str, Any]],
    quotas: Iterable[Mapping[str, Any]],
    config: KueueConfig,
) -> list[dict[str, Any]]:
    """Kueue objects for flopwise's teams, projects and device quotas:

    * one ``ResourceFlavor`` per configured flavor (its ``node_labels``);
    * one ``AdmissionCheck`` (``check_name``) naming this controller;
    * one ``Cohort`` per team; the team's device quotas become the Cohort's own quota (``resourceGroups``):
      a pool its projects' queues borrow from;
    * one ``ClusterQueue`` per project in its team's Cohort, labelled ``flopwise.io/project=<id>``, requiring
      the AdmissionCheck; the project's device quotas become ``nominalQuota`` (0 where it has none: it runs
      on what it borrows from its team's pool), with ``borrowingLimit`` unset.

    An organization-wide quota cannot be expressed without a root Cohort: it becomes the parent Cohort
    ``fw-org`` of every team Cohort. Quantities are whole GPUs (Kubernetes quantities)."""
    quota_list = list(quotas)
    team_list = sorted(teams, key=lambda t: int(t["id"]))
    out: list[dict[str, Any]] = []
    meta = {"app.kubernetes.io/managed-by": "flopwise"}
    for name, flavor in config.flavors.items():
        spec: dict[str, Any] = {"nodeLabels": dict(flavor.node_labels)} if flavor.node_labels else {}
        out.append({"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResourceFlavor",
                    "metadata": {"name": name, "labels": dict(meta)}, "spec": spec})  # fmt: skip
    out.append({"apiVersion": f"{GROUP}/{VERSION}", "kind": "AdmissionCheck",
                "metadata": {"name": config.check_name, "labels": dict(meta)},
                "spec": {"controllerName": config.controller_name}})  # fmt: skip
    org_quota = {}
    for q in quota_list:
        if q["scope_kind"] == "org":
            org_quota = _quota_per_flavor(quota_list, "org", int(q["scope_id"]), config)
            break
    if org_quota:
        out.append({"apiVersion": f"{GROUP}/{VERSION}", "kind": "Cohort",
                    "metadata": {"name": "fw-org", "labels": dict(meta)},
                    "spec": {"resourceGroups": _resource_groups(org_quota, config, all_flavors=False)}})  # fmt: skip
    team_names = {int(t["id"]): str(t["name"]) for t in team_list}
    for team in team_list:
        tq = _quota_per_flavor(quota_list, "team", int(team["id"]), config)
        spec = {"resourceGroups": _resource_groups(tq, config, all_flavors=False)} if tq else {}
        if org_quota:
            spec["parentName"] = "fw-org"
        out.append({"apiVersion": f"{GROUP}/{VERSION}", "kind": "Cohort",
                    "metadata": {"name": queue_name(str(team["name"])),
                                 "labels": {**meta, "flopwise.io/team": str(team["id"])}},
                    "spec": spec})  # fmt: skip
    for project in sorted(projects, key=lambda p: int(p["id"])):
        team_name = team_names.get(int(project["team_id"]))
        if team_name is None:
            continue
        pq = _quota_per_flavor(quota_list, "project", int(project["id"]), config)
        out.append({
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ClusterQueue",
            "metadata": {"name": queue_name(team_name, str(project["name"])),
                         "labels": {**meta, PROJECT_LABEL: str(project["id"])}},
            "spec": {
                "cohortName": queue_name(team_name),
                "namespaceSelector": {},
                "queueingStrategy": config.queueing_strategy,
                "resourceGroups": _resource_groups(pq, config, all_flavors=True),
                "admissionChecksStrategy": {"admissionChecks": [{"name": config.check_name}]},
            },
        })  # fmt: skip
    return out


# --- the Kubernetes API -----------------------------------------------------------------------------------


class KubeApi:
    """The few Kubernetes API calls the controller makes, over one keep-alive httpx client."""

    def __init__(self, base_url: str, *, token: str | None = None, verify: Any = True,
                 transport: Any = None, timeout_s: float = 10.0) -> None:  # fmt: skip
        import httpx

        headers = {"Accept": "application/json", "User-Agent": "flopwise-kueue"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, verify=verify, transport=transport,
                                  timeout=timeout_s)  # fmt: skip

    @classmethod
    def in_cluster(cls) -> KubeApi:
        """From the pod's service account (``KUBERNETES_SERVICE_HOST``, token and CA under
        /var/run/secrets/kubernetes.io/serviceaccount)."""
        import os
        from pathlib import Path

        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise InputError("--kube-url", None, "give the API server's URL (not running in a pod)")
        sa = Path("/var/run/secrets/kubernetes.io/serviceaccount")
        return cls(f"https://{host}:{port}", token=(sa / "token").read_text().strip(), verify=str(sa / "ca.crt"))

    def close(self) -> None:
        self._http.close()

    @staticmethod
    def path(plural: str, name: str | None = None, namespace: str | None = None, sub: str | None = None) -> str:
        out = f"/apis/{GROUP}/{VERSION}"
        if namespace:
            out += f"/namespaces/{namespace}"
        out += f"/{plural}"
        if name:
            out += f"/{name}"
        if sub:
            out += f"/{sub}"
        return out

    def request(self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None,
                content_type: str = "application/json") -> Any:  # fmt: skip
        import httpx

        try:
            r = self._http.request(method, path, params=params,
                                   content=None if body is None else json.dumps(body).encode(),
                                   headers={"Content-Type": content_type} if body is not None else None)  # fmt: skip
        except httpx.TransportError as exc:
            raise KubeError(0, f"cannot reach the Kubernetes API at {self.base_url}: {exc.__class__.__name__}: "
                            f"{exc}") from None  # fmt: skip
        if r.status_code >= 400:
            try:
                message = r.json().get("message", r.text)
            except ValueError:
                message = r.text
            raise KubeError(r.status_code, f"{method} {path}: {r.status_code} {message}")
        return r.json() if r.content else None

    def list(self, plural: str) -> tuple[list[dict[str, Any]], str]:
        body = self.request("GET", self.path(plural))
        return list(body.get("items") or []), str(body.get("metadata", {}).get("resourceVersion", ""))

    def get(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        return self.request("GET", self.path(plural, name, namespace))

    def merge_patch(self, plural: str, name: str, patch: Mapping[str, Any], *, namespace: str | None = None,
                    status: bool = False) -> dict[str, Any]:  # fmt: skip
        return self.request("PATCH", self.path(plural, name, namespace, "status" if status else None),
                            body=patch, content_type="application/merge-patch+json")  # fmt: skip

    def watch(self, plural: str, resource_version: str, timeout_s: int = 30) -> Iterator[dict[str, Any]]:
        """Events after *resource_version* until the server ends the watch; a 410 (expired) is a KubeError."""
        import httpx

        params = {"watch": "1", "resourceVersion": resource_version, "timeoutSeconds": str(timeout_s),
                  "allowWatchBookmarks": "true"}  # fmt: skip
        try:
            with self._http.stream("GET", self.path(plural), params=params,
                                   timeout=httpx.Timeout(10.0, read=timeout_s + 10)) as r:  # fmt: skip
                if r.status_code >= 400:
                    raise KubeError(r.status_code, f"watch {plural}: {r.status_code} {r.read().decode()[:300]}")
                for line in r.iter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        obj = event.get("object") or {}
                        raise KubeError(int(obj.get("code") or 500), f"watch {plural}: {obj.get('message', '')}")
                    yield event
        except httpx.TransportError as exc:
            raise KubeError(0, f"watch {plural}: {exc.__class__.__name__}: {exc}") from None


# --- the controller ---------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _condition(wl: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for c in (wl.get("status") or {}).get("conditions") or ():
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def _quantity(value: Any, where: str) -> int:
    """A GPU count as a Kubernetes quantity ("2", 2); GPUs are whole devices."""
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise InputError(where, value, "give a whole number of GPUs") from None
    if not d.is_finite() or d < 0 or d != d.to_integral_value():
        raise InputError(where, value, "give a whole number of GPUs")
    return int(d)


@dataclass
class Verdict:
    """What the controller sets on its check: state, message, and seconds to wait for a Retry."""

    state: str
    message: str
    requeue_after_s: int | None = None


class KueueController:
    """Decides Workloads for the AdmissionChecks this controller owns, and settles what they ran."""

    def __init__(self, kube: KubeApi, client: Any, config: KueueConfig, *,
                 clock: Callable[[], datetime] = _now) -> None:  # fmt: skip
        self.kube, self.client, self.config, self.clock = kube, client, config, clock
        self.soft = SoftBudgets(max_age_s=config.max_cache_age_s, refresh_s=0.0)
        self._queues: dict[str, dict[str, Any]] = {}
        self._checks: set[str] = set()

    # the checks and queues this controller owns
    def checks(self) -> set[str]:
        """Names of the AdmissionChecks naming this controller; each is marked Active (Kueue waits for it)."""
        items, _ = self.kube.list("admissionchecks")
        mine = {c["metadata"]["name"] for c in items
                if (c.get("spec") or {}).get("controllerName") == self.config.controller_name}  # fmt: skip
        for c in items:
            name = c["metadata"]["name"]
            if name not in mine:
                continue
            conds = (c.get("status") or {}).get("conditions") or []
            if any(x.get("type") == "Active" and x.get("status") == "True" for x in conds):
                continue
            active = {"type": "Active", "status": "True", "reason": "Active", "message": "flopwise decides",
                      "lastTransitionTime": _iso(self.clock())}  # fmt: skip
            self.kube.merge_patch("admissionchecks", name,
                                  {"status": {"conditions": [*[x for x in conds if x.get("type") != "Active"],
                                                             active]}}, status=True)  # fmt: skip
        return mine

    def _queue(self, name: str) -> Mapping[str, Any]:
        if name not in self._queues:
            self._queues[name] = self.kube.get("clusterqueues", name)
        return self._queues[name]

    # reading a Workload
    def _project(self, wl: Mapping[str, Any]) -> int:
        labels = (wl.get("metadata") or {}).get("labels") or {}
        value = labels.get(PROJECT_LABEL)
        if value is None:
            cq = ((wl.get("status") or {}).get("admission") or {}).get("clusterQueue")
            if cq:
                value = ((self._queue(cq).get("metadata") or {}).get("labels") or {}).get(PROJECT_LABEL)
        if value is None or not re.fullmatch(r"[1-9][0-9]{0,17}", str(value)):
            raise InputError(f"metadata.labels.{PROJECT_LABEL}", value,
                             "label the Workload (or its ClusterQueue) with its flopwise project id")  # fmt: skip
        return int(str(value))

    def worst_case(self, wl: Mapping[str, Any]) -> tuple[int, Flavor | None, Decimal]:
        """(GPUs, the flavor Kueue assigned them, the most hours it may run)."""
        gpu = self.config.gpu_resource
        assigned = {a.get("name"): a for a in ((wl.get("status") or {}).get("admission") or {}).get(
            "podSetAssignments") or ()}  # fmt: skip
        gpus, flavor = 0, None
        for ps in (wl.get("spec") or {}).get("podSets") or ():
            pod = ((ps.get("template") or {}).get("spec") or {})
            per_pod = 0
            for c in [*(pod.get("containers") or ()), *(pod.get("initContainers") or ())]:
                res = c.get("resources") or {}
                value = (res.get("requests") or {}).get(gpu, (res.get("limits") or {}).get(gpu))
                if value is not None:
                    per_pod += _quantity(value, f"spec.podSets.{ps.get('name')}.resources.{gpu}")
            a = assigned.get(ps.get("name")) or {}
            count = int(a.get("count", ps.get("count", 1)))
            if per_pod:
                gpus += per_pod * count
                fname = (a.get("flavors") or {}).get(gpu)
                if fname is not None:
                    flavor = self.config.flavors.get(fname)
                    if flavor is None:
                        raise InputError(f"status.admission.podSetAssignments.flavors.{gpu}", fname,
                                         "flopwise has no price for this flavor; add it to the configuration's "
                                         "flavors")  # fmt: skip
        annotations = (wl.get("metadata") or {}).get("annotations") or {}
        if HOURS_ANN in annotations:
            hours = config_decimal(annotations[HOURS_ANN], f"metadata.annotations.{HOURS_ANN}", "hours", positive=True)
        elif (wl.get("spec") or {}).get("maximumExecutionTimeSeconds"):
            hours = (Decimal(int(wl["spec"]["maximumExecutionTimeSeconds"])) / 3600).quantize(
                Decimal("0.000001"), rounding=ROUND_CEILING)
        elif self.config.default_max_hours is not None:
            hours = self.config.default_max_hours
        else:
            raise InputError(f"metadata.annotations.{HOURS_ANN}", None,
                             "annotate the Workload with the most hours it may run (or set "
                             "spec.maximumExecutionTimeSeconds)")  # fmt: skip
        return gpus, flavor, hours

    # deciding
    def refresh_budgets(self) -> None:
        """Read budgets and projects for the fail-open rule (all budgets soft -> a Workload may pass)."""
        self.soft.refresh(self.client)

    def _classify(self, result: Mapping[str, Any]) -> Verdict:
        trace = result.get("decision_trace") or {}
        reasons = "; ".join(result.get("reasons") or ["denied"])
        if trace.get("policy_outcome") == "require_approval":
            return Verdict("Retry", f"flopwise: needs approval ({reasons}); file a compute request and annotate the "
                           f"Workload {REQUEST_ANN}=<request id>: it waits until the request is approved",
                           self.config.approval_poll_s)  # fmt: skip
        inner = trace.get("trace") or {}
        budgets = [b for b in inner.get("budgets") or () if b.get("outcome") == "deny"]
        quotas = [q for q in inner.get("quotas") or () if q.get("is_exceeded")]
        policy_denied = (inner.get("policy") or {}).get("outcome") == "deny"
        aup = inner.get("is_aup_accepted", True)
        if policy_denied or not aup or (not budgets and not quotas):
            return Verdict("Rejected", f"flopwise: {reasons}")
        if any(Decimal(str(b["request_amount"])) > Decimal(str(b["limit"])) for b in budgets):
            return Verdict("Rejected", f"flopwise: {reasons} (larger than the whole budget: it never fits)")
        now = self.clock()
        waits = [int(((_parse_time(b["window_end"]) or now) - now).total_seconds()) + 1 for b in budgets]
        wait = max([*waits, self.config.retry_s if quotas else 1])
        return Verdict("Retry", f"flopwise: {reasons}; retrying in {wait} s", max(1, wait))

    def decide(self, wl: Mapping[str, Any]) -> tuple[Verdict, dict[str, str]]:
        """The verdict for a Workload's pending check, and the annotations to record first."""
        from flopwise.client import NotFoundError, ServerError, ServerUnreachableError

        meta = wl.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        if annotations.get(ADMISSION_ANN) and annotations.get(PHASE_ANN) in ("admitted", "committed"):
            return Verdict("Ready", f"flopwise: admitted as kueue/{annotations[ADMISSION_ANN]}"), {}
        try:
            project = self._project(wl)
            if annotations.get(REQUEST_ANN):
                return self._linked_request(str(annotations[REQUEST_ANN]), project), {}
            gpus, flavor, hours = self.worst_case(wl)
        except InputError as exc:
            return Verdict("Rejected", f"flopwise: {exc}"), {}
        except ServerUnreachableError as exc:
            return Verdict("Retry", f"flopwise: cannot decide, so the Workload waits (fails closed): {exc}",
                           self.config.retry_s), {}  # fmt: skip
        except ServerError as exc:  # the linked request: unknown (404), not ours (403), or the server failed
            if exc.status < 500:
                return Verdict("Rejected", f"flopwise: {exc}"), {}
            return Verdict("Retry", f"flopwise: {exc}", self.config.retry_s), {}
        if gpus == 0 or flavor is None:
            return Verdict("Ready", "flopwise: no GPUs requested; nothing to decide"), {}
        attempt = int(annotations.get(ATTEMPT_ANN, "0") or 0)
        job_id = str(meta["uid"]) + ("" if attempt == 0 else f".{attempt}")
        body = {"engine": ENGINE, "engine_job_id": job_id, "project_id": project, "device": flavor.device,
                "device_count": gpus, "max_duration_h": str(hours), "usd_per_device_h": str(flavor.usd_per_h)}  # fmt: skip
        try:
            result = self.client.call("POST", "/admission/decide", json_body=body)
        except ServerUnreachableError as exc:
            if self.soft.all_soft(project):
                log.warning("workload %s/%s: flopwise unreachable; every budget of project %s is soft: let "
                            "through unchecked (%s)", meta.get("namespace"), meta.get("name"), project, exc)  # fmt: skip
                return Verdict("Ready", "flopwise: unreachable; soft budgets only, let through unchecked"), {}
            return Verdict("Retry", f"flopwise: cannot decide, so the Workload waits (fails closed): {exc}",
                           self.config.retry_s), {}  # fmt: skip
        except NotFoundError as exc:
            return Verdict("Rejected", f"flopwise: {exc}"), {}
        except ServerError as exc:
            if exc.status < 500:
                return Verdict("Rejected", f"flopwise: {exc}"), {}
            return Verdict("Retry", f"flopwise: {exc}", self.config.retry_s), {}
        if result["admitted"]:
            return (Verdict("Ready", f"flopwise: admitted as kueue/{job_id}"),
                    {ADMISSION_ANN: job_id, PHASE_ANN: "admitted", ATTEMPT_ANN: str(attempt + 1)})  # fmt: skip
        return self._classify(result), {ATTEMPT_ANN: str(attempt + 1)}

    def _linked_request(self, rid: str, project: int) -> Verdict:
        if not re.fullmatch(r"[1-9][0-9]{0,17}", rid):
            return Verdict("Rejected", f"flopwise: annotation {REQUEST_ANN}={rid!r} is not a request id")
        req = self.client.call("GET", f"/requests/{rid}")
        if int(req["project_id"]) != project:
            return Verdict("Rejected", f"flopwise: request {rid} is for project {req['project_id']}, "
                           f"the Workload is project {project}")  # fmt: skip
        if req["state"] == "approved":
            return Verdict("Ready", f"flopwise: request {rid} is approved")
        if req["state"] in _REQUEST_FINAL_NO:
            return Verdict("Rejected", f"flopwise: request {rid} is {req['state']}")
        return Verdict("Retry", f"flopwise: waiting for request {rid} to be approved (it is {req['state']})",
                       self.config.approval_poll_s)  # fmt: skip

    # the state on the Workload
    def _set(self, wl: Mapping[str, Any], check: str, verdict: Verdict) -> None:
        meta = wl["metadata"]
        entry: dict[str, Any] = {"name": check, "state": verdict.state, "message": verdict.message[:32768],
                                 "lastTransitionTime": _iso(self.clock())}  # fmt: skip
        if verdict.state == "Retry" and verdict.requeue_after_s:
            entry["requeueAfterSeconds"] = int(min(verdict.requeue_after_s, 2**31 - 1))
        others = [c for c in (wl.get("status") or {}).get("admissionChecks") or () if c.get("name") != check]
        # a merge patch replaces the list whole: the other checks' states are sent back as they were, on the
        # version read (409 if Kueue or another check changed it meanwhile: the next event re-reads it)
        patch: dict[str, Any] = {"status": {"admissionChecks": [*others, entry]}}
        if meta.get("resourceVersion"):
            patch["metadata"] = {"resourceVersion": meta["resourceVersion"]}
        updated = self.kube.merge_patch("workloads", meta["name"], patch, namespace=meta.get("namespace"),
                                        status=True)  # fmt: skip
        wl["metadata"], wl["status"] = updated.get("metadata", meta), updated.get("status", wl.get("status"))

    def _annotate(self, wl: dict[str, Any], values: Mapping[str, str]) -> None:
        meta = wl["metadata"]
        updated = self.kube.merge_patch("workloads", meta["name"], {"metadata": {"annotations": dict(values)}},
                                        namespace=meta.get("namespace"))  # fmt: skip
        wl["metadata"] = updated.get("metadata", meta)

    def reconcile(self, wl: dict[str, Any], checks: Iterable[str]) -> list[str]:
        """One Workload: answer its pending checks, commit, settle or release. What was done, as words."""
        done: list[str] = []
        meta = wl.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        done += self._account(wl)
        status = wl.get("status") or {}
        if not status.get("admission") or _condition(wl, "Finished"):
            return done
        mine = set(checks)
        for c in status.get("admissionChecks") or ():
            if c.get("name") not in mine or c.get("state") != "Pending":
                continue
            verdict, notes = self.decide(wl)
            if notes:
                self._annotate(wl, notes)
            self._set(wl, c["name"], verdict)
            log.info("workload %s: %s %s", key, verdict.state, verdict.message)
            done.append(f"{c['name']}={verdict.state}")
        return done

    def _account(self, wl: dict[str, Any]) -> list[str]:
        """Commit when Kueue admits, settle when it finishes, release what finished without running."""
        annotations = (wl.get("metadata") or {}).get("annotations") or {}
        job_id, phase = annotations.get(ADMISSION_ANN), annotations.get(PHASE_ANN)
        if not job_id or phase not in ("admitted", "committed"):
            return []
        admitted, finished = _condition(wl, "Admitted"), _condition(wl, "Finished")
        out: list[str] = []
        try:
            if phase == "admitted" and admitted is not None:
                self.client.call("POST", f"/admission/{ENGINE}/{job_id}/commit")
                started = str(admitted.get("lastTransitionTime") or _iso(self.clock()))
                self._annotate(wl, {PHASE_ANN: "committed", STARTED_ANN: started})
                phase = "committed"
                out.append("committed")
            if finished:
                out.append(self._end(wl, job_id, phase, _parse_time((finished or {}).get("lastTransitionTime"))))
        except FlopwiseError as exc:
            log.warning("workload %s: %s", (wl.get("metadata") or {}).get("name"), exc)
        return out

    def _end(self, wl: dict[str, Any], job_id: str, phase: str, ended: datetime | None) -> str:
        # when Kueue first admitted it (kept at commit: an evicted Workload loses its Admitted condition)
        annotations = (wl.get("metadata") or {}).get("annotations") or {}
        started = _parse_time(annotations.get(STARTED_ANN)) or _parse_time(
            (_condition(wl, "Admitted") or {}).get("lastTransitionTime"))  # fmt: skip
        if phase == "committed" and started is not None:
            end = ended or self.clock()
            hours = (Decimal(str(max(0.0, (end - started).total_seconds()))) / 3600).quantize(Decimal("0.000001"))
            gpus, flavor, _ = self.worst_case(wl)
            body = {"actual_duration_h": str(hours), "device_hours": str(hours * gpus)}
            if flavor is not None:
                body["cost_usd"] = str((hours * gpus * flavor.usd_per_h).quantize(Decimal("0.000001")))
            # evicted, no flavor assigned now: flopwise prorates the admitted worst case (same price) by the hours
            self.client.call("POST", f"/admission/{ENGINE}/{job_id}/settle", json_body=body)
            if wl.get("metadata", {}).get("resourceVersion"):
                self._annotate(wl, {PHASE_ANN: "settled"})
            return "settled"
        self.client.call("POST", f"/admission/{ENGINE}/{job_id}/release")
        if wl.get("metadata", {}).get("resourceVersion"):
            self._annotate(wl, {PHASE_ANN: "released"})
        return "released"

    def deleted(self, wl: dict[str, Any]) -> str | None:
        """A Workload was deleted: settle what it ran (until now) or release what it never started."""
        annotations = (wl.get("metadata") or {}).get("annotations") or {}
        job_id, phase = annotations.get(ADMISSION_ANN), annotations.get(PHASE_ANN)
        if not job_id or phase not in ("admitted", "committed"):
            return None
        wl = {**wl, "metadata": {**wl["metadata"], "resourceVersion": None}}  # gone: nothing to annotate
        try:
            return self._end(wl, job_id, phase, None)
        except FlopwiseError as exc:
            log.warning("deleted workload %s: %s", wl["metadata"].get("name"), exc)
            return None

    # the loop
    def pass_once(self) -> tuple[dict[str, list[str]], str]:
        """List every Workload and reconcile each; the outcomes by Workload and the list's resourceVersion."""
        from flopwise.client import ServerError

        try:
            self.refresh_budgets()
        except ServerError as exc:
            log.warning("budgets not refreshed (the fail-open rule uses the last read): %s", exc)
        checks = self._checks = self.checks()
        self._queues.clear()
        items, rv = self.kube.list("workloads")
        out: dict[str, list[str]] = {}
        for wl in items:
            key = f"{wl['metadata'].get('namespace')}/{wl['metadata']['name']}"
            try:
                done = self.reconcile(wl, checks)
            except KubeError as exc:
                log.warning("workload %s: %s", key, exc)
                done = [f"error: {exc}"]
            if done:
                out[key] = done
        return out, rv

    def run(self, stop: threading.Event, *, resync_s: float = 30.0, watch_timeout_s: int = 30) -> None:
        """List, then watch from the list's resourceVersion; re-list every *resync_s* (settlement, retries) and
        whenever the watch expires (410) or fails."""
        while not stop.is_set():
            try:
                _, rv = self.pass_once()
                checks = self._checks
                deadline = time.monotonic() + resync_s
                while not stop.is_set() and time.monotonic() < deadline:
                    for event in self.kube.watch("workloads", rv, timeout_s=min(watch_timeout_s, int(resync_s) + 1)):
                        obj = event.get("object") or {}
                        rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                        if event.get("type") == "DELETED":
                            self.deleted(obj)
                        elif event.get("type") in ("ADDED", "MODIFIED"):
                            self.reconcile(obj, checks)
                        if stop.is_set() or time.monotonic() >= deadline:
                            break
            except KubeError as exc:
                if exc.status != 410:
                    log.warning("%s; re-listing", exc)
                    stop.wait(1.0)
            except FlopwiseError as exc:
                log.warning("%s; re-listing", exc)
                stop.wait(1.0)
