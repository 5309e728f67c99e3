"""Checks of catalog/data/regions.csv and of scripts/fetch_regions.py, which must reproduce it byte for byte."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections import Counter
from pathlib import Path

import pytest

from flopwise.catalog.loader import BUILTIN_DATA_DIR, read_regions

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "fetch_regions.py"
CARBON_DIR = REPO / "tests" / "data" / "carbon"
REGIONS_CSV = BUILTIN_DATA_DIR / "regions.csv"


def _load_script():
    spec = importlib.util.spec_from_file_location("fetch_regions", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script is executed
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.fixture(scope="module")
def regions():
    return {r.id: r for r, _, _ in read_regions(REGIONS_CSV)}


@pytest.fixture(scope="module")
def carbon_dir():
    needed = [CARBON_DIR / "cloud-region-impact.csv", CARBON_DIR / "gcp-region-carbon-2024.csv"]
    missing = [str(p) for p in needed if not p.exists()]
    assert not missing, f"carbon sample data missing from tests/data: {', '.join(missing)}"
    return CARBON_DIR


def test_script_reproduces_committed_file(carbon_dir):
    module = _load_script()
    text = module.render_csv(module.build_regions(carbon_dir))
    assert text == REGIONS_CSV.read_text(encoding="utf-8"), (
        "regions.csv is stale: run scripts/fetch_regions.py"
    )


def test_script_check_mode(carbon_dir, tmp_path, capsys):
    module = _load_script()
    out = tmp_path / "regions.csv"
    assert module.main(["--carbon-dir", str(carbon_dir), "--out", str(out)]) == 0
    assert module.main(["--carbon-dir", str(carbon_dir), "--out", str(out), "--check"]) == 0
    out.write_text(out.read_text(encoding="utf-8") + "x\n", encoding="utf-8")
    assert module.main(["--carbon-dir", str(carbon_dir), "--out", str(out), "--check"]) == 1
    assert "stale" in capsys.readouterr().err


def test_every_gcp_region_of_the_inputs_is_written(carbon_dir, regions):
    module = _load_script()
    google = module.read_google(carbon_dir / module.GOOGLE_FILE)
    for name, row in google.items():
        region = regions[f"gcp:{name}"]
        # Google's own 2024 grid figure wins over codecarbon's
        assert math.isclose(
            region.grid_gco2e_per_kwh, float(row["Grid carbon intensity (gCO2eq / kWh)"]), rel_tol=1e-9
        )
        assert region.source_url == module.GOOGLE_URL
    for row in module.read_codecarbon(carbon_dir / module.CODECARBON_FILE):
        provider = row["provider"].strip()
        region = module.REGION_ID_FIXES.get((provider, row["region"].strip()), row["region"].strip())
        assert f"{provider}:{region}" in regions


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
    assert regions["lambda:us"].pue == regions["country:DE"].pue == 1.56


def test_spot_checks(regions):
    # Google 2024: Iowa 412.72, Montreal 5.48 gCO2e/kWh
    assert regions["gcp:us-central1"].grid_gco2e_per_kwh == pytest.approx(412.72)
    assert regions["gcp:northamerica-northeast1"].grid_gco2e_per_kwh == pytest.approx(5.48)
    # codecarbon's misspelt 'me-cenrtal1' is merged into me-central1
    assert "gcp:me-cenrtal1" not in regions and regions["gcp:me-central1"].country == "QA"
    # AWS us-east-1 takes the grid of the GCP region in the same metro (us-east4, Ashburn)
    assert regions["aws:us-east-1"].grid_gco2e_per_kwh == regions["gcp:us-east4"].grid_gco2e_per_kwh
    assert regions["aws:us-east-1"].basis == "derived"
    # Ember 2023 via OWID: France 56, Poland 662, India 713
    assert [regions[f"country:{c}"].grid_gco2e_per_kwh for c in ("FR", "PL", "IN")] == [56, 662, 713]
    assert regions["country:FR"].grid_gco2e_per_kwh < regions["country:US"].grid_gco2e_per_kwh


def test_aliases_are_unique(regions):
    seen = Counter(a.lower() for r in regions.values() for a in r.aliases)
    assert not [a for a, n in seen.items() if n > 1]
