"""Attribution: which organization, team and project a usage record belongs to. Pure: no store, no I/O.

Two ways a record finds its scope, in this order:

1. **A request id.** A record that names a flopwise compute request (``x_request_id``, set by the parsers from a
   ``flopwise-request=<id>`` token in Slurm's Comment/AdminComment, or a ``flopwise-request`` /
   ``flopwise-request-id`` tag or Kubernetes label) belongs to that request's project, team and organization.
   The caller looks the ids up (``request_scopes``); an id that names no known request falls through to the rules.
2. **Rules**, tried in ascending ``priority`` (1 before 10; ties by rule id), first match wins. A rule's
   ``match`` is a JSON object whose conditions must all hold:

   ==============  ===============================================================================
   key             compared with
   ==============  ===============================================================================
   ``source``      ``record.source`` (slurm, focus, aws-cur, dcgm, opencost, ...)
   ``account``     ``record.x_account`` (Slurm account, cloud sub-account, Kubernetes namespace)
   ``partition``   the Slurm partition (``tags["partition"]`` or ``x_extra["partition"]``)
   ``user``        ``record.x_user``
   ``namespace``   the Kubernetes namespace (``tags["namespace"]``, else ``x_account`` of a k8s source)
   ``tags``        ``{"key": "value"}``: every pair in ``record.tags`` (cloud tags); ``tag`` the same, or
                   ``"key=value"``, or a list of ``"key=value"`` of which any may match
   ``labels``      ``{"key": "value"}``: every pair in ``record.tags`` (Kubernetes labels); ``label`` likewise
   ``resource_id`` ``record.resource_id``
   ==============  ===============================================================================

   Every value is a shell-style glob (``fnmatch``, case-sensitive: ``gpu-*``, ``ml?``; no wildcard means an
   exact match) or a list of globs (any may match). A rule with an empty ``match`` matches everything (a
   catch-all, usually with the highest priority number).

A record that neither names a known request nor matches a rule stays **unattributed** (every scope ``None``):
it is stored and reported as such, never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from flopwise.govern.match import MATCH_KEYS, validate_match
from flopwise.meter.record import UsageRecord

__all__ = [
    "MATCH_KEYS",
    "REQUEST_TAGS",
    "Attribution",
    "AttributionRule",
    "Scope",
    "attribute",
    "parse_request_id",
    "record_request_id",
    "rule_matches",
    "validate_match",
]

#: tag or label keys that name a flopwise request (the parsers also read these into ``x_request_id``)
REQUEST_TAGS = (
    "flopwise-request",
    "flopwise-request-id",
    "flopwise_request",
    "flopwise_request_id",
    "flopwise:request-id",
    "flopwise/request-id",
    "flopwise.io/request",
)
#: sources whose ``x_account`` is a Kubernetes namespace
K8S_SOURCES = ("opencost", "dcgm")
_REQUEST_TOKEN = re.compile(r"flopwise[-_]request(?:[-_]id)?\s*[=:]\s*([A-Za-z0-9._:-]+)")
_REQUEST_ID = re.compile(r"^(?:req(?:uest)?[-_:]?)?(\d{1,18})$", re.IGNORECASE)


@dataclass(frozen=True)
class Scope:
    """Where usage belongs: an organization and, when known, a team and a project (ids in the store)."""

    org_id: int
    team_id: int | None = None
    project_id: int | None = None


@dataclass(frozen=True)
class AttributionRule:
    """One mapping rule: records matching ``match`` belong to ``scope``. Lower ``priority`` is tried first."""

    id: int
    priority: int
    match: Mapping[str, Any]
    scope: Scope

    def __post_init__(self) -> None:
        validate_match(self.match)


@dataclass(frozen=True)
class Attribution:
    """The scope found for one record, and why (``basis``: request | rule | none)."""

    scope: Scope | None
    basis: str
    rule_id: int | None = None
    request_id: int | None = None
    reasons: tuple[str, ...] = field(default=())

    @property
    def is_attributed(self) -> bool:
        return self.scope is not None


def _globs(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


def _matches(actual: Any, pattern: Any) -> bool:
    if actual is None:
        return False
    text = str(actual)
    return any(fnmatchcase(text, p) for p in _globs(pattern))


def _pairs(value: Any) -> list[tuple[str, str]]:
    if isinstance(value, Mapping):
        return [(str(k), v) for k, v in value.items()]
    return [tuple(item.split("=", 1)) for item in _globs(value)]  # type: ignore[misc]


def _partition(record: UsageRecord) -> str | None:
    return record.tags.get("partition") or _text(record.x_extra.get("partition"))


def _namespace(record: UsageRecord) -> str | None:
    ns = record.tags.get("namespace") or _text(record.x_extra.get("namespace"))
    if ns:
        return ns
    return record.x_account if record.source in K8S_SOURCES else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def rule_matches(match: Mapping[str, Any], record: UsageRecord) -> bool:
    """True when every condition of *match* holds for *record* (an empty match holds for every record)."""
    for key, pattern in match.items():
        if key == "source":
            ok = _matches(record.source, pattern)
        elif key == "account":
            ok = _matches(record.x_account, pattern)
        elif key == "partition":
            ok = _matches(_partition(record), pattern)
        elif key == "user":
            ok = _matches(record.x_user, pattern)
        elif key == "namespace":
            ok = _matches(_namespace(record), pattern)
        elif key == "resource_id":
            ok = _matches(record.resource_id, pattern)
        elif key in ("tags", "labels", "tag", "label"):
            pairs = _pairs(pattern)
            ok = all(_matches(record.tags.get(k), v) for k, v in pairs)
            if isinstance(pattern, list):  # a list of 'k=v': any may match
                ok = any(_matches(record.tags.get(k), v) for k, v in pairs)
        else:  # validate_match keeps unknown keys out
            ok = False
        if not ok:
            return False
    return True


def parse_request_id(text: str | None) -> int | None:
    """The integer id of a flopwise request from ``42``, ``req-42`` or ``request_42``; None otherwise."""
    if text is None:
        return None
    m = _REQUEST_ID.match(str(text).strip())
    return int(m.group(1)) if m else None


def record_request_id(record: UsageRecord) -> int | None:
    """The request a record names: ``x_request_id``, a request tag or label, or a token in a Slurm comment."""
    candidates: list[str | None] = [record.x_request_id]
    candidates += [record.tags.get(k) for k in REQUEST_TAGS]
    for key in ("comment", "admincomment", "Comment", "AdminComment"):
        text = record.x_extra.get(key)
        if isinstance(text, str):
            m = _REQUEST_TOKEN.search(text)
            if m:
                candidates.append(m.group(1))
    for candidate in candidates:
        request_id = parse_request_id(candidate)
        if request_id is not None:
            return request_id
    return None


def attribute(
    record: UsageRecord,
    rules: Sequence[AttributionRule] | Iterable[AttributionRule],
    request_scopes: Mapping[int, Scope] | None = None,
) -> Attribution:
    """The scope of *record*: its request's (when *request_scopes* knows the id), else the first matching rule.

    *rules* may come in any order; they are tried by ``(priority, id)``. Unattributed records come back with
    ``scope=None`` and ``basis='none'`` and the reasons, so the caller can store and report them.
    """
    reasons: list[str] = []
    request_id = record_request_id(record)
    if request_id is not None:
        scope = (request_scopes or {}).get(request_id)
        if scope is not None:
            return Attribution(scope, "request", request_id=request_id)
        reasons.append(f"request {request_id} is not known")
    ordered = sorted(rules, key=lambda r: (r.priority, r.id))
    for rule in ordered:
        if rule_matches(rule.match, record):
            return Attribution(rule.scope, "rule", rule_id=rule.id, request_id=None)
    reasons.append(f"no rule of {len(ordered)} matched" if ordered else "no attribution rules")
    return Attribution(None, "none", request_id=None, reasons=tuple(reasons))
