"""Approvals: n-of-m with roles, separation of duties, deny ends it, expiry, comments, illegal transitions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flopwise.errors import InputError
from flopwise.govern import add_comment, approve, cancel, deny, expire, open_approval

from .conftest import NOW

LATER = NOW + timedelta(hours=1)
EXPIRY = NOW + timedelta(days=3)


def _open(n=2, role="approver"):
    return open_approval("req-1", "alice", n, role, NOW, EXPIRY)


def test_two_of_m_approvals():
    s = _open()
    s = approve(s, "bob", "approver", LATER, "looks fine")
    assert (s.status, s.approvals, s.approvals_missing) == ("pending", 1, 1)
    s = approve(s, "carol", "admin", LATER)  # a higher role qualifies
    assert (s.status, s.closed_by, s.closed_at, s.approvals_missing) == ("approved", "carol", LATER, 0)
    assert [v.comment for v in s.votes] == ["looks fine", ""]


def test_separation_of_duties_and_one_vote_each():
    s = _open()
    with pytest.raises(InputError, match="their own request"):
        approve(s, "alice", "admin", LATER)
    with pytest.raises(InputError, match="their own request"):
        deny(s, "alice", "admin", LATER, "never mind")
    s = approve(s, "bob", "approver", LATER)
    with pytest.raises(InputError, match="already voted"):
        approve(s, "bob", "approver", LATER)


def test_role_requirement():
    s = _open(role="admin")
    with pytest.raises(InputError) as err:
        approve(s, "bob", "approver", LATER)
    assert err.value.field == "actor_role" and "admin or higher" in str(err.value)
    with pytest.raises(InputError, match="use one of viewer"):
        approve(s, "bob", "superuser", LATER)


def test_any_qualified_deny_ends_it_and_needs_a_reason():
    s = approve(_open(), "bob", "approver", LATER)
    with pytest.raises(InputError, match="say why"):
        deny(s, "carol", "approver", LATER, " ")
    s = deny(s, "carol", "approver", LATER, "use spot capacity instead")
    assert (s.status, s.closed_by) == ("denied", "carol")
    with pytest.raises(InputError, match="only a pending request can be approved; this one is denied"):
        approve(s, "dave", "approver", LATER)


def test_expiry_at_now():
    s = _open()
    assert expire(s, EXPIRY - timedelta(seconds=1)).status == "pending"
    expired = expire(s, EXPIRY)
    assert (expired.status, expired.closed_at) == ("expired", EXPIRY)
    with pytest.raises(InputError, match="expired before it was approved"):
        approve(s, "bob", "approver", EXPIRY)  # not yet marked, but past its time
    with pytest.raises(InputError, match="this one is expired"):
        approve(expired, "bob", "approver", LATER)
    assert (
        expire(approve(_open(1), "bob", "approver", LATER), EXPIRY + timedelta(days=1)).status == "approved"
    )


def test_cancel_by_requester_or_admin_only():
    s = _open()
    with pytest.raises(InputError, match="requester or an admin"):
        cancel(s, "bob", "approver", LATER)
    assert cancel(s, "alice", "member", LATER).status == "cancelled"
    approved = approve(_open(1), "bob", "approver", LATER)
    assert cancel(approved, "root", "admin", LATER).status == "cancelled"
    with pytest.raises(InputError, match="pending or approved"):
        cancel(cancel(s, "alice", "member", LATER), "alice", "member", LATER)


def test_comments_in_any_state():
    s = add_comment(_open(), "bob", LATER, "what is the data classification?")
    s = deny(s, "bob", "approver", LATER, "restricted data")
    s = add_comment(s, "alice", LATER, "resubmitting on-prem")
    assert [(c.actor, c.text) for c in s.comments] == [
        ("bob", "what is the data classification?"),
        ("alice", "resubmitting on-prem"),
    ]
    with pytest.raises(InputError, match="some text"):
        add_comment(s, "bob", LATER, "")


@pytest.mark.parametrize(
    ("args", "field"),
    [(("", "alice", 1, "approver"), "request_id"), (("r", "", 1, "approver"), "requester"),
     (("r", "alice", 0, "approver"), "approvals_required"), (("r", "alice", 1, "boss"), "role")],
)  # fmt: skip
def test_bad_open(args, field):
    with pytest.raises(InputError) as err:
        open_approval(*args, NOW, EXPIRY)
    assert err.value.field == field
    with pytest.raises(InputError, match="after created_at"):
        open_approval("r", "alice", 1, "approver", NOW, NOW)
