"""Checks of catalog/data/regions.csv (written by `flopwise catalog refresh`; tests/catalog/test_fetch.py holds it
to the carbon snapshots)."""

from __future__ import annotations

from collections import Counter

import pytest

from flopwise.catalog.loader import BUILTIN_DATA_DIR, read_regions

REGIONS_CSV = BUILTIN_DATA_DIR / "regions.csv"


@pytest.fixture(scope="module")
def regions():
    return {r.id: r for r, _, _ in read_regions(REGIONS_CSV)}


def test_ids_unique_and_shaped(regions):
    counts = Counter(r.id for r in regions.values())
    assert all(n == 1 for n in counts.values())
    for r in regions.values():
        provider, _, rest = r.id.partition(":")
        assert provider == r.provider and rest, r.id
        assert r.country and r.country.upper() == r.country, r.id


def test_values_plausible_with_provenance(regions):
    for r in regions.values():
        assert 0 < r.grid_gco2e_per_kwh < 1200, r.id
        assert 1.0 <= r.pue <= 2.0, r.id
        assert r.source_url.startswith("https://"), r.id
        assert r.basis in ("datasheet", "measured", "derived"), r.id
        assert "PUE" in r.note, f"{r.id}: the note must name the PUE source"


def test_at_least_40_countries(regions):
    countries = [r for r in regions.values() if r.provider == "country"]
    assert len(countries) >= 40
    for r in countries:
        assert r.id == f"country:{r.country}" and len(r.country) == 2


def test_each_cloud_has_regions(regions):
    per_provider = Counter(r.provider for r in regions.values())
    assert per_provider["aws"] >= 20 and per_provider["gcp"] >= 40 and per_provider["azure"] >= 20
    for gpu_cloud in ("lambda", "coreweave", "nebius"):
        assert per_provider[gpu_cloud] >= 1, gpu_cloud


def test_provider_pue(regions):
    assert regions["gcp:us-central1"].pue == 1.10
    assert regions["aws:us-east-1"].pue == 1.15
    assert regions["azure:eastus"].pue == 1.18
    assert regions["lambda:us-east-1"].pue == regions["country:DE"].pue == 1.56


def test_spot_checks(regions):
    # Google 2025 (newest year first): Iowa 431.95, Montreal 11.36 gCO2e/kWh
    assert regions["gcp:us-central1"].grid_gco2e_per_kwh == pytest.approx(431.95)
    assert regions["gcp:northamerica-northeast1"].grid_gco2e_per_kwh == pytest.approx(11.36)
    assert regions["gcp:me-central1"].country == "QA"
    # AWS us-east-1 takes the grid of the GCP region in the same metro (us-east4, Ashburn)
    assert regions["aws:us-east-1"].grid_gco2e_per_kwh == regions["gcp:us-east4"].grid_gco2e_per_kwh
    assert regions["aws:us-east-1"].basis == "derived"
    # Ember via OWID, newest year (2024): France 44.18, Poland 614.98, India 708.32
    assert [regions[f"country:{c}"].grid_gco2e_per_kwh for c in ("FR", "PL", "IN")] == [44.18, 614.98, 708.32]
    assert regions["country:FR"].grid_gco2e_per_kwh < regions["country:US"].grid_gco2e_per_kwh


def test_aliases_are_unique(regions):
    seen = Counter(a.lower() for r in regions.values() for a in r.aliases)
    assert not [a for a, n in seen.items() if n > 1]
