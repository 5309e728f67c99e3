"""Approvals: n-of-m sign-off with a role requirement, separation of duties, comments and expiry.

States and transitions (anything else raises InputError naming the state)::

    pending --approve (n-th distinct qualified approver)--> approved
    pending --deny (any qualified approver)---------------> denied
    pending --cancel (the requester or an admin)----------> cancelled
    pending --expire (now >= expires_at)------------------> expired
    approved --cancel (the requester or an admin)---------> cancelled

Rules: nobody approves or denies their own request (separation of duties); each approver counts once; an
approver qualifies when their role in the request's scope ranks at or above the required role
(admin > approver > member > viewer); one deny by a qualified approver ends the request. Comments can be
added in any state by anyone the caller lets see the request. A pending request at or past ``expires_at``
can no longer be approved or denied: call :func:`expire` (the store does so when it reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from flopwise.errors import InputError
from flopwise.govern.budget import utc
from flopwise.govern.policy import role_rank

__all__ = [
    "APPROVAL_STATES",
    "ApprovalState",
    "Comment",
    "Vote",
    "add_comment",
    "approve",
    "cancel",
    "deny",
    "expire",
    "open_approval",
]

APPROVAL_STATES = ("pending", "approved", "denied", "cancelled", "expired")
_MAX_COMMENT_CHARS = 10_000


@dataclass(frozen=True)
class Vote:
    """One approver's verdict."""

    actor: str
    role: str
    verdict: str  # approve | deny
    at: datetime
    comment: str = ""


@dataclass(frozen=True)
class Comment:
    actor: str
    at: datetime
    text: str


@dataclass(frozen=True)
class ApprovalState:
    """Where one request stands. Build it with :func:`open_approval`; every transition returns a new one."""

    request_id: str
    requester: str
    approvals_required: int
    role: str
    status: str
    created_at: datetime
    expires_at: datetime
    votes: tuple[Vote, ...] = ()
    comments: tuple[Comment, ...] = ()
    closed_at: datetime | None = None
    closed_by: str = ""

    @property
    def approvals(self) -> int:
        return sum(1 for v in self.votes if v.verdict == "approve")

    @property
    def approvals_missing(self) -> int:
        return max(self.approvals_required - self.approvals, 0) if self.status == "pending" else 0


def open_approval(
    request_id: str,
    requester: str,
    approvals_required: int,
    role: str,
    created_at: datetime,
    expires_at: datetime,
) -> ApprovalState:
    """A pending approval needing *approvals_required* distinct approvers of *role* or higher."""
    if not request_id:
        raise InputError("request_id", request_id, "give the request's id")
    if not requester:
        raise InputError("requester", requester, "give the requesting user's id")
    if (
        isinstance(approvals_required, bool)
        or not isinstance(approvals_required, int)
        or approvals_required < 1
    ):
        raise InputError(
            "approvals_required", approvals_required, "give a whole number of approvers, 1 or more"
        )
    role_rank(role)
    created, expires = utc(created_at, "created_at"), utc(expires_at, "expires_at")
    if expires <= created:
        raise InputError("expires_at", expires_at, "must be after created_at")
    return ApprovalState(request_id, requester, approvals_required, role, "pending", created, expires)


def _require_pending(state: ApprovalState, action: str, now: datetime) -> None:
    if state.status != "pending":
        raise InputError(
            "status", state.status, f"only a pending request can be {action}; this one is {state.status}"
        )
    if now >= state.expires_at:
        raise InputError(
            "expires_at",
            state.expires_at.isoformat(),
            f"the request expired before it was {action}; resubmit it",
        )


def _vote(
    state: ApprovalState, actor: str, actor_role: str, now: datetime, verdict: str, comment: str
) -> Vote:
    now = utc(now)
    action = "approved" if verdict == "approve" else "denied"
    _require_pending(state, action, now)
    if not actor:
        raise InputError("actor", actor, "give the acting user's id")
    if actor == state.requester:
        raise InputError("actor", actor, f"nobody may {verdict} their own request (separation of duties)")
    if role_rank(actor_role, "actor_role") < role_rank(state.role):
        raise InputError(
            "actor_role", actor_role, f"this request needs a {state.role} or higher to {verdict} it"
        )
    if any(v.actor == actor for v in state.votes):
        raise InputError("actor", actor, "this approver has already voted on the request")
    if len(comment) > _MAX_COMMENT_CHARS:
        raise InputError(
            "comment", f"{len(comment)} characters", f"keep comments to {_MAX_COMMENT_CHARS} characters"
        )
    return Vote(actor, actor_role, verdict, now, comment)


def approve(
    state: ApprovalState, actor: str, actor_role: str, now: datetime, comment: str = ""
) -> ApprovalState:
    """Record *actor*'s approval; the request becomes approved at the n-th distinct qualified approval."""
    vote = _vote(state, actor, actor_role, now, "approve", comment)
    votes = (*state.votes, vote)
    if sum(1 for v in votes if v.verdict == "approve") >= state.approvals_required:
        return replace(state, votes=votes, status="approved", closed_at=vote.at, closed_by=actor)
    return replace(state, votes=votes)


def deny(state: ApprovalState, actor: str, actor_role: str, now: datetime, comment: str) -> ApprovalState:
    """Deny the request; one qualified approver's deny ends it. A reason (*comment*) is required."""
    if not comment or not comment.strip():
        raise InputError("comment", comment, "say why the request is denied")
    vote = _vote(state, actor, actor_role, now, "deny", comment)
    return replace(state, votes=(*state.votes, vote), status="denied", closed_at=vote.at, closed_by=actor)


def cancel(state: ApprovalState, actor: str, actor_role: str, now: datetime) -> ApprovalState:
    """Cancel a pending or approved request: the requester may, and so may an admin."""
    now = utc(now)
    if state.status not in ("pending", "approved"):
        raise InputError("status", state.status, "only a pending or approved request can be cancelled")
    if actor != state.requester and role_rank(actor_role, "actor_role") < role_rank("admin"):
        raise InputError("actor", actor, "only the requester or an admin may cancel a request")
    return replace(state, status="cancelled", closed_at=now, closed_by=actor)


def expire(state: ApprovalState, now: datetime) -> ApprovalState:
    """The state at *now*: a pending request at or past ``expires_at`` becomes expired; others are unchanged."""
    now = utc(now)
    if state.status == "pending" and now >= state.expires_at:
        return replace(state, status="expired", closed_at=state.expires_at, closed_by="")
    return state


def add_comment(state: ApprovalState, actor: str, now: datetime, text: str) -> ApprovalState:
    """Append a comment (any state)."""
    if not actor:
        raise InputError("actor", actor, "give the commenting user's id")
    if not text or not text.strip():
        raise InputError("text", text, "a comment needs some text")
    if len(text) > _MAX_COMMENT_CHARS:
        raise InputError(
            "text", f"{len(text)} characters", f"keep comments to {_MAX_COMMENT_CHARS} characters"
        )
    return replace(state, comments=(*state.comments, Comment(actor, utc(now), text)))
