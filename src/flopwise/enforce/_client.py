"""How an adapter holds its flopwise client: one shared client (kept-alive connections, built once), or a
factory called per use (each use builds an httpx client: a TLS context and a new connection, then closes it)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from flopwise.errors import FlopwiseError

__all__ = ["SoftBudgets", "borrowed"]

log = logging.getLogger("flopwise.enforce")


@contextmanager
def borrowed(source: Any) -> Iterator[Any]:
    """*source* itself when it is a client (anything with ``call``), left open for the next use; else a client
    from the factory *source*, closed after use."""
    if hasattr(source, "call"):
        yield source
        return
    with source() as fw:
        yield fw


class SoftBudgets:
    """The fail-open rule shared by the adapters: while flopwise cannot be reached, a job may pass unchecked only
    when every budget covering its project is soft, judged from the last good read of budgets and projects (at
    most *max_age_s* old; older, nothing is known and everything fails closed). The read is renewed at most
    every *refresh_s* by :meth:`maybe_refresh`, called after calls that reached flopwise."""

    def __init__(self, *, max_age_s: float = 300.0, refresh_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.max_age_s, self.refresh_s, self.clock = max_age_s, refresh_s, clock
        self.budgets: list[Mapping[str, Any]] = []
        self.teams: dict[int, int] = {}  # project id -> team id
        self.at = 0.0
        self.tried = 0.0

    def refresh(self, fw: Any) -> None:
        budgets = list(fw.list_budgets())
        teams = {int(p["id"]): int(p["team_id"]) for p in fw.call("GET", "/projects")}
        self.budgets, self.teams, self.at = budgets, teams, self.clock()

    def maybe_refresh(self, fw: Any) -> None:
        now = self.clock()
        if self.tried and now - self.tried < self.refresh_s:
            return
        self.tried = now  # a failing read (e.g. a token that may not read budgets) is retried only as often
        try:
            self.refresh(fw)
        except FlopwiseError as exc:
            log.warning("budgets not re-read (the fail-open rule keeps the last read): %s", exc)

    def all_soft(self, project_id: int) -> bool:
        """True only when the last read is fresh, knows the project, and no budget covering it is hard."""
        if not self.at or self.clock() - self.at > self.max_age_s or project_id not in self.teams:
            return False
        team = self.teams[project_id]
        covering = [b for b in self.budgets
                    if b["scope_kind"] == "org"
                    or (b["scope_kind"], int(b["scope_id"])) in {("project", project_id), ("team", team)}]  # fmt: skip
        return not any(b["is_hard"] for b in covering)
