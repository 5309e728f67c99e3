"""Quotas: the most devices a scope may hold at once, per device type (``h100-sxm``) or class (``gpu``).

A quota limits *concurrent* use, unlike a budget, which limits a total over a period. The store counts the
devices the scope already holds (approved and running requests that match the quota); a request fits when
``in_use + device_count <= max_devices``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from decimal import Decimal

from flopwise.errors import InputError
from flopwise.govern.budget import SCOPE_KINDS
from flopwise.govern.facts import RequestFacts, to_decimal

__all__ = ["Quota", "QuotaCheck", "check_quota", "quota_applies"]


@dataclass(frozen=True)
class Quota:
    """At most ``max_devices`` at once for a scope, on devices matching ``device_type`` or ``device_class``.

    Exactly one of ``device_type`` (a catalog device id or glob, ``h100-*``) and ``device_class``
    (``gpu``, ``tpu``, a segment such as ``datacenter``, or a glob) is set. ``max_devices`` is a Decimal
    so fractional devices (MIG slices, shared GPUs) can be counted.
    """

    id: str
    scope_kind: str
    scope_id: str
    max_devices: Decimal
    device_type: str = ""
    device_class: str = ""

    def __post_init__(self) -> None:
        if self.scope_kind not in SCOPE_KINDS:
            raise InputError("scope_kind", self.scope_kind, f"use one of {', '.join(SCOPE_KINDS)}")
        if not self.scope_id:
            raise InputError(
                "scope_id", self.scope_id, "name the org, team, project or user the quota covers"
            )
        if bool(self.device_type) == bool(self.device_class):
            raise InputError(
                "device_type", self.device_type or None, "set exactly one of device_type and device_class"
            )
        value = to_decimal(self.max_devices, "max_devices")
        if value < 0:
            raise InputError("max_devices", self.max_devices, "a quota is zero or more devices")
        object.__setattr__(self, "max_devices", value)


@dataclass(frozen=True)
class QuotaCheck:
    """A quota against one request."""

    quota_id: str
    in_use: Decimal
    requested: Decimal
    max_devices: Decimal
    is_exceeded: bool
    message: str


def quota_applies(quota: Quota, facts: RequestFacts) -> bool:
    """True when *facts* is in the quota's scope and on a matching device type or class."""
    if quota.scope_kind == "org":
        in_scope = facts.org == quota.scope_id
    elif quota.scope_kind == "team":
        in_scope = quota.scope_id in facts.requester_teams
    elif quota.scope_kind == "project":
        in_scope = facts.project == quota.scope_id
    else:
        in_scope = facts.requester == quota.scope_id
    if not in_scope:
        return False
    if quota.device_type:
        return fnmatch.fnmatchcase(facts.device_type, quota.device_type)
    return fnmatch.fnmatchcase(facts.device_class, quota.device_class)


def check_quota(quota: Quota, in_use: Decimal, facts: RequestFacts) -> QuotaCheck:
    """Check *facts* against *quota* with *in_use* devices already held in the scope."""
    held = to_decimal(in_use, "in_use")
    if held < 0:
        raise InputError("in_use", in_use, "devices in use are zero or more")
    requested = Decimal(facts.device_count)
    after = held + requested
    target = quota.device_type or quota.device_class
    exceeded = after > quota.max_devices
    if exceeded:
        message = (
            f"quota {quota.id!r} ({quota.scope_kind} {quota.scope_id}, {target}): {requested} more would make "
            f"{after} of at most {quota.max_devices}; wait for running work to finish or ask for fewer devices"
        )
    else:
        message = f"quota {quota.id!r} ({target}): {after} of {quota.max_devices} devices after this request"
    return QuotaCheck(quota.id, held, requested, quota.max_devices, exceeded, message)
