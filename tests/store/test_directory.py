"""store.directory on SQLite and PostgreSQL: names resolve (with suggestions), rules are added and audited, and
``apply_attribution`` gives rows that already belong to an organization a project from that organization's rules
only."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from flopwise.errors import InputError
from flopwise.meter.burn import apply_attribution
from flopwise.store import Organization, Project, UsageRecordRow, write_session
from flopwise.store.directory import (
    DEFAULT_SCOPE_PRIORITY,
    add_rule,
    create_project,
    create_team,
    list_rules,
    resolve_org,
    resolve_project,
    resolve_team,
)
from flopwise.store.reports import unattributed_usage

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def _row(key: str, org_id: int | None, account: str) -> UsageRecordRow:
    return UsageRecordRow(
        source="slurm", source_key=key, charge_period_start=T0, charge_period_end=T0, x_account=account,
        org_id=org_id, x_device_hours=2.0,
    )  # fmt: skip


def test_directory_and_org_scoped_attribution(factory, seed):
    with write_session(factory) as s:
        org = resolve_org(s, str(seed.org_id))
        assert resolve_org(s, org.name).id == seed.org_id
        with pytest.raises(InputError, match="did you mean"):
            resolve_team(s, org, "reserch")
        team = resolve_team(s, org, "research")
        infra = create_team(s, org, "infra", "cli:test")
        gpus = create_project(s, infra, "gpus", "cli:test")
        assert resolve_project(s, org, "infra/gpus").id == gpus.id
        llm = resolve_project(s, org, "llm")
        add_rule(s, org, {"account": "physics"}, "cli:test", project=llm)
        add_rule(s, org, {"source": "slurm"}, "cli:test", project=gpus, priority=DEFAULT_SCOPE_PRIORITY)
        assert [r["project"] for r in list_rules(s, org)] == ["llm", "gpus"]
        with pytest.raises(InputError, match="did you mean 'slurm'"):
            add_rule(s, org, {"source": "slrum"}, "cli:test", team=team)
        other = Organization(name=f"other-{seed.org_id}")
        s.add(other)
        s.flush()
        tag = f"dir-{seed.org_id}"
        s.add_all([_row(f"{tag}-a", org.id, "physics"), _row(f"{tag}-b", org.id, "chem"),
                   _row(f"{tag}-c", other.id, "physics")])  # fmt: skip
        s.flush()
        apply_attribution(s)
        got = {
            r.source_key: (r.org_id, r.project_id)
            for r in s.scalars(select(UsageRecordRow).where(UsageRecordRow.source_key.like(f"{tag}-%")))
        }
        assert got == {
            f"{tag}-a": (org.id, llm.id),  # its organization's rule
            f"{tag}-b": (org.id, gpus.id),  # the source's default scope
            f"{tag}-c": (other.id, None),  # another organization's rules never apply
        }
        left = unattributed_usage(s, org_id=other.id)
        assert (left["records"], left["no_org"], left["device_hours"]) == (1, 0, 2.0)
        assert s.scalar(select(Project.id).where(Project.id == gpus.id)) == gpus.id
