"""Shared builders for the governance tests: a request's facts with sensible defaults."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from flopwise.govern import RequestFacts

NOW = datetime(2025, 5, 14, 12, 0, tzinfo=UTC)


def make_facts(**kw) -> RequestFacts:
    base = dict(
        workload="train",
        flops=1e21,
        device_type="h100-sxm",
        device_class="gpu",
        device_count=8,
        duration_s=36_000.0,
        device_hours=80.0,
        cost_usd=Decimal("240.00"),
        energy_kwh=470.4,
        co2e_kg=180.5,
        provider="aws",
        region="aws:us-east-1",
        pricing="on_demand",
        data_classification="internal",
        requester="alice",
        requester_teams=("research", "nlp"),
        project="llm-pretrain",
        org="acme",
    )
    base.update(kw)
    return RequestFacts(**base)


@pytest.fixture
def facts():
    return make_facts
