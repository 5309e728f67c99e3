"""The lifecycle of ingest runs beyond one process: who owns a ``running`` run (``host:pid``), and closing the
runs whose process is gone (kill -9, a crash) by undoing what they wrote."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sqlalchemy import update

from flopwise.meter.ledger_write import undo_run
from flopwise.store.ledger import IngestRun
from flopwise.store.session import write_session
from flopwise.store.types import utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

__all__ = ["IngestInterrupted", "close_stale_runs"]


class IngestInterrupted(KeyboardInterrupt):  # noqa: N818 - a KeyboardInterrupt, named like the event
    """Ctrl-C (or SIGTERM, which the CLI turns into it) stopped run *run_id*; what it wrote was undone."""

    def __init__(self, run_id: int) -> None:
        super().__init__(run_id)
        self.run_id = run_id


def _owner() -> str:
    """This process as ``host:pid`` (kept on a running run, to tell a live one from one whose process died)."""
    import socket

    return f"{socket.gethostname()[:180]}:{os.getpid()}"


def _process_gone(owner: str | None) -> bool:
    """Whether *owner* (``host:pid``) names a process of this host that no longer exists."""
    import socket

    if not owner or ":" not in owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname()[:180] or not pid.isdigit():
        return False  # another machine's run: only it can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def close_stale_runs(factory: sessionmaker[Session]) -> list[int]:
    """Close the ``running`` runs whose ingesting process is gone (killed with -9, the machine rebooted): undo
    what each wrote, mark it ``interrupted`` with the reason. Returns their ids. Runs of live processes, of other
    hosts and of the usage API (no owner) are left alone."""
    from sqlalchemy import select

    with write_session(factory) as session:
        stale = [
            (run_id, owner)
            for run_id, owner in session.execute(
                select(IngestRun.id, IngestRun.owner).where(IngestRun.status == "running")
            )
            if _process_gone(owner)
        ]
    closed = []
    for run_id, owner in stale:
        with write_session(factory) as session:
            still = session.scalar(select(IngestRun.status).where(IngestRun.id == run_id).with_for_update())
            if still != "running":
                continue
            undo_run(session, run_id)
            session.execute(
                update(IngestRun)
                .where(IngestRun.id == run_id)
                .values(
                    finished_at=utcnow(),
                    status="interrupted",
                    message=f"its process ({owner}) ended without finishing (killed?); what it wrote was "
                    "undone - ingest the input again",
                )
            )
        closed.append(run_id)
    return closed
