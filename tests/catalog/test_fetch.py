"""The catalog fetchers: offline on the snapshot copies, over a local HTTP server, and against bad input."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flopwise.catalog import load_catalog
from flopwise.catalog.fetch import SOURCES, read_region_grids
from flopwise.catalog.fetch.carbon import parse_gcp_carbon, parse_owid
from flopwise.catalog.fetch.regions import build_regions
from flopwise.catalog.fetch.shell import read_csv_rows
from flopwise.catalog.fetch.skypilot import CPU_FAMILIES, PREEMPTIBLE_RULES, ParseResult, finish, parse_vms
from flopwise.catalog.fetch.table import FetchError
from flopwise.catalog.loader import BUILTIN_DATA_DIR
from flopwise.cli.main import app

SNAP = Path(__file__).resolve().parents[1] / "data" / "catalogs"
CPU_DEVICES = {dev for fams in CPU_FAMILIES.values() for dev, _ in fams.values()}
SMALL = [
    "skypilot-azure",
    "skypilot-oci",
    "skypilot-lambda",
    "skypilot-cudo",
    "skypilot-nebius",
    "skypilot-fluidstack",
]
runner = CliRunner()


def _parse(cloud: str, *paths: Path) -> ParseResult:
    acc: dict = {}
    res = ParseResult()
    for path in paths:
        parse_vms(
            cloud,
            path.read_text(encoding="utf-8"),
            source=f"skypilot-{cloud}",
            location=str(path),
            known_regions=read_region_grids(),
            into=acc,
            result=res,
        )
    return finish(cloud, acc, source_url="https://example.org/vms.csv", retrieved="2026-12-06", result=res)


def _snapshot_files(name: str) -> list[Path]:
    """The files of source *name* that tests/data holds (the CPU extracts are not copied there)."""
    return [SNAP / f.snapshot for f in SOURCES[name].files if (SNAP / f.snapshot).is_file()]


@pytest.mark.parametrize("name", [*SMALL, "skypilot-aws", "skypilot-gcp"])
def test_shipped_offerings_equal_the_snapshot_to_the_cent(name: str):
    # the AWS and GCP copies are the accelerator extracts (GCP's with its GPU machine-type host rows): their CPU
    # rows (from the CPU extracts) are left out
    source = SOURCES[name]
    fetched = {r["id"]: r for r in _parse(source.cloud, *_snapshot_files(name)).rows}
    shipped = {
        k: r
        for k, r in read_csv_rows(BUILTIN_DATA_DIR / source.output).items()
        if r["device_id"] not in CPU_DEVICES
    }
    assert set(shipped) == set(fetched), "an offering no source lists, or a listed one missing"
    for key, row in fetched.items():
        for column in ("on_demand_usd_per_h", "spot_usd_per_h"):
            a, b = shipped[key][column], row[column]
            assert (Decimal(a) if a else None) == (Decimal(b) if b else None), (key, column)
        assert shipped[key]["source_url"].startswith("https://github.com/skypilot-org/skypilot-catalog/blob/")


def test_gcp_gpu_machine_types_are_host_plus_gpus_per_zone():
    res = _parse("gcp", *_snapshot_files("skypilot-gcp"))
    rows = {r["id"]: r for r in res.rows}
    a2 = rows["gcp:a2-highgpu-1g:us-central1"]
    # a2-highgpu-1g host 0.73948 (spot 0.38812) + one A100 2.93391 (spot 1.5399), all four us-central1 zones
    assert (a2["device_id"], a2["device_count"], a2["vcpus"]) == ("a100-sxm-40gb", "1", "12")
    assert Decimal(a2["on_demand_usd_per_h"]) == Decimal("0.73948") + Decimal("2.93391")
    assert Decimal(a2["spot_usd_per_h"]) == Decimal("0.38812") + Decimal("1.5399")
    assert "spot = lowest of 4 zone prices" in a2["note"]
    # L4 x1 on g2-standard-4 (SkyPilot's cheapest host for one L4): 0.14679 + 0.56004
    g2 = rows["gcp:g2-standard-4:us-central1"]
    assert g2["device_id"] == "l4" and Decimal(g2["on_demand_usd_per_h"]) == Decimal("0.70683")
    # A4: the source lists the host at 0.0 because the B200 SKU includes the VM (skypilot-org/skypilot#8125)
    a4 = rows["gcp:a4-highgpu-8g:us-central1"]
    assert Decimal(a4["on_demand_usd_per_h"]) == Decimal("90.216") and "#8125" in a4["note"]
    # H100 x8: host + GPUs spot 47.86592 is not below on demand 43.06615, so no spot price is claimed
    a3 = rows["gcp:a3-highgpu-8g:us-central1"]
    assert Decimal(a3["on_demand_usd_per_h"]) == Decimal("43.06615") and a3["spot_usd_per_h"] == ""
    # the source's GPU spot above its own GPU on-demand price is said, not hidden
    assert "treat it as approximate" in rows["gcp:a2-ultragpu-1g:us-central1"]["note"]
    # GPU rows with no host row in their zone are counted, not priced
    assert res.skipped["GCP GPU with no host machine-type row in its zone"] == 39  # e.g. a2-megagpu-16g in asia
    assert "gcp:a2-megagpu-16g:asia-northeast1" not in rows


def test_gcp_n1_gpus_are_the_cheapest_fitting_n1_host_plus_gpus_as_skypilot_lists_them():
    # sky/catalog/gcp_catalog.py list_accelerators: host = cheapest n1-standard/highmem/highcpu row in the zone
    # with >= _NUM_ACC_TO_NUM_CPU[gpu][count] vCPUs and >= 4 GiB per such vCPU; price = host + GPUs, spot likewise
    res = _parse("gcp", *_snapshot_files("skypilot-gcp"))
    rows = {r["id"]: r for r in res.rows}
    # 1 x T4 asks for 4 vCPUs and 16 GiB: n1-standard-4 (15 GiB) is too small, n1-highmem-4 (26 GiB, 0.23661 /
    # spot 0.07948) is the cheapest that fits; T4 0.35 / spot 0.1915 in every us-central1 zone
    t4 = rows["gcp:n1-highmem-4+1xT4:us-central1"]
    assert (t4["device_id"], t4["device_count"], t4["vcpus"]) == ("t4", "1", "4")
    assert Decimal(t4["on_demand_usd_per_h"]) == Decimal("0.23661") + Decimal("0.35")
    assert Decimal(t4["spot_usd_per_h"]) == Decimal("0.07948") + Decimal("0.1915")
    assert "list_accelerators" in t4["note"]
    # 4 x T4 asks for 48 vCPUs and 192 GiB: n1-standard-64 (240 GiB, 3.03998) beats n1-highmem-64 and -96
    assert "gcp:n1-standard-64+4xT4:us-central1" in rows
    # V100 asks for 8 vCPUs per GPU: n1-highmem-8 for one (n1-standard-8 has 30 GiB < 32), n1-highmem-64 for 8
    assert rows["gcp:n1-highmem-8+1xV100:us-central1"]["device_id"] == "v100-sxm2-16gb"
    assert "gcp:n1-highmem-64+8xV100:us-central1" in rows
    p100 = [r for r in rows.values() if r["device_id"] == "p100-pcie-16gb"]
    p4 = [r for r in rows.values() if r["device_id"] == "tesla-p4"]
    assert p100 and p4
    n1 = [r for r in rows.values() if r["instance_type"].startswith("n1-")]
    assert len(n1) == 131  # every (GPU, count, region) the source lists for T4, V100, P100 and P4
    assert all(r["spot_usd_per_h"] for r in n1)  # the source lists host and GPU spot prices for all of them


def test_gcp_n1_host_choice_follows_skypilot(tmp_path: Path):
    head = "InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,GpuInfo,Region,AvailabilityZone,Price,SpotPrice\n"
    gpu = ",,,P4,2,,us-central1,us-central1-{z},1.2,0.4\n"
    host = "{t},{v}.0,{m}.0,,,,us-central1,us-central1-{z},{p},{s}\n"
    path = tmp_path / "vms.csv"
    # P4 x2 falls under SkyPilot's DEFAULT row: 16 vCPUs and 64 GiB. n1-standard-16 (60 GiB) does not fit; of the
    # two that fit the cheaper wins, and a host with no spot price leaves the offering without one
    path.write_text(
        head
        + gpu.format(z="a")
        + host.format(t="n1-standard-16", v=16, m=60, z="a", p="0.5", s="0.1")
        + host.format(t="n1-highmem-32", v=32, m=208, z="a", p="1.9", s="0.6")
        + host.format(t="n1-highmem-16", v=16, m=104, z="a", p="0.95", s="")
    )
    rows = {r["id"]: r for r in _parse("gcp", path).rows}
    assert set(rows) == {"gcp:n1-highmem-16+2xP4:us-central1"}
    row = rows["gcp:n1-highmem-16+2xP4:us-central1"]
    assert Decimal(row["on_demand_usd_per_h"]) == Decimal("2.15") and row["spot_usd_per_h"] == ""
    # no N1 host in the GPU's zone: no offering, the GPU row is counted
    path.write_text(head + gpu.format(z="b") + host.format(t="n1-highmem-16", v=16, m=104, z="a", p="0.95", s=""))
    res = _parse("gcp", path)
    assert res.rows == [] and res.skipped["GCP GPU with no host machine-type row in its zone"] == 1


def test_oci_preemptible_spot_is_derived_from_the_published_rule_on_vm_shapes_only():
    # OCI bills preemptible capacity at 50% of on demand on VM shapes; bare metal shapes cannot be preemptible
    rows = {r["id"]: r for r in _parse("oci", *_snapshot_files("skypilot-oci")).rows}
    vm = rows["oci:VM.GPU.A10.1:us-ashburn-1"]
    assert Decimal(vm["on_demand_usd_per_h"]) == 2 and Decimal(vm["spot_usd_per_h"]) == 1
    assert vm["basis"] == "derived"
    assert "derived from the provider's published preemptible discount" in vm["note"]
    assert PREEMPTIBLE_RULES["oci"].price_url in vm["note"] and PREEMPTIBLE_RULES["oci"].eligibility_url in vm["note"]
    bm = rows["oci:BM.GPU.H100.8:us-ashburn-1"]
    assert bm["spot_usd_per_h"] == "" and "preemptible" not in bm["note"]
    for row in rows.values():
        spot = row["spot_usd_per_h"]
        if row["instance_type"].startswith("VM."):
            assert Decimal(spot) == Decimal(row["on_demand_usd_per_h"]) / 2, row["id"]
        else:
            assert spot == "", row["id"]
    # no other provider's rows get a derived spot price
    for name in ("skypilot-nebius", "skypilot-lambda", "skypilot-cudo", "skypilot-fluidstack"):
        cloud = SOURCES[name].cloud
        assert not any("preemptible discount" in r["note"] for r in _parse(cloud, *_snapshot_files(name)).rows)


def test_catalog_offerings_shows_which_spot_prices_come_from_a_published_rule():
    args = ["catalog", "offerings", "--provider", "oci", "--region", "oci:us-ashburn-1"]
    csv_out = runner.invoke(app, [*args, "--csv"])
    assert csv_out.exit_code == 0, csv_out.output
    lines = {line.split(",")[1]: line.split(",") for line in csv_out.output.splitlines()}
    header = lines["instance"]
    basis, spot = header.index("spot basis"), header.index("spot")
    assert (lines["VM.GPU.A10.1"][spot], lines["VM.GPU.A10.1"][basis]) == ("1.00", "rule")
    assert (lines["BM.GPU.H100.8"][spot], lines["BM.GPU.H100.8"][basis]) == ("", "")
    table = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert "published preemptible discount" in table.output
    # a catalog with no rule-derived spot price has no such column
    aws = runner.invoke(app, ["catalog", "offerings", "--provider", "aws", "--region", "aws:us-east-1", "--csv"])
    assert "spot basis" not in aws.output.splitlines()[0]


def test_a_spot_plan_says_which_spot_prices_come_from_a_published_rule():
    args = ["plan", "train", "-m", "llama-3.1-8b", "--tokens", "1B", "--method", "lora", "--spot-ok"]
    result = runner.invoke(app, [*args, "--pricing", "spot", "--providers", "oci", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    prices = answer["assumptions"]["spot"]["prices"]
    used = {f"oci:{o['instance_type']}:{o['region'].split(':', 1)[1]}" for o in answer["options"]}
    assert used and set(prices["derived_from_published_rule"]) == used  # every OCI spot price is the 50% rule
    aws = json.loads(runner.invoke(app, [*args, "--pricing", "spot", "--providers", "aws", "--json"]).output)
    assert aws["assumptions"]["spot"]["prices"]["derived_from_published_rule"] == []


def test_shipped_gpu_spot_coverage_per_provider():
    """Spot coverage of the shipped GPU offerings, per provider (the numbers the issue's closing note gives)."""
    cat = load_catalog()
    gpu = [o for o in cat.offerings if cat.devices[o.device_id].kind == "gpu"]
    with_spot = [o for o in gpu if o.spot_usd_per_h is not None]
    providers = sorted({o.provider for o in gpu})
    coverage = {p: (sum(o.provider == p for o in with_spot), sum(o.provider == p for o in gpu)) for p in providers}
    assert coverage["oci"] == (234, 546)  # the 6 VM GPU shapes x 39 regions; the 8 bare metal shapes have none
    assert coverage["nebius"] == (10, 22)  # H100/H200/B200; its L40S platforms are not sold preemptible
    assert coverage["aws"] == (633, 651)  # with the 43 g5g (NVIDIA T4G) offerings, all with spot
    assert coverage["azure"] == (137, 148)  # with the 8 NC K80 and 18 NV/NVv3 M60 offerings (one GPU each), all spot
    assert coverage["gcp"] == (342, 365)  # with the 131 N1-hosted T4/V100/P100/P4 offerings, all with spot
    assert (len(with_spot), len(gpu)) == (1356, 2240)  # 60.5%


def test_gcp_zone_prices_that_disagree_name_the_line(tmp_path: Path):
    head = "InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,GpuInfo,Region,AvailabilityZone,Price,SpotPrice\n"
    gpu = ",,,A100,1,,us-central1,us-central1-{z},2.93391,1.5399\n"
    host = "a2-highgpu-1g,12.0,85.0,,,,us-central1,us-central1-{z},{p},0.38812\n"
    text = head + gpu.format(z="a") + gpu.format(z="b") + host.format(z="a", p="0.73948") + host.format(z="b", p="0.8")
    path = tmp_path / "vms.csv"
    path.write_text(text)
    with pytest.raises(FetchError) as err:
        _parse("gcp", path)
    assert err.value.line == 5 and "must agree across the zones" in str(err.value)
    # the same zone listed twice at two prices is an error too; an exact repeat is not
    path.write_text(head + gpu.format(z="a") + gpu.format(z="a") + host.format(z="a", p="0.73948"))
    assert len(_parse("gcp", path).rows) == 1
    path.write_text(head + gpu.format(z="a") + gpu.format(z="a").replace("2.93391", "2.9") + host.format(z="a", p="1"))
    with pytest.raises(FetchError) as err:
        _parse("gcp", path)
    assert err.value.line == 3 and "a zone has one price" in str(err.value)


def test_lambda_prices_are_todays_not_the_old_ones():
    cat = load_catalog()
    gh200 = next(o for o in cat.offerings if o.id == "lambda:gpu_1x_gh200:us-east-1")
    assert gh200.on_demand_usd_per_h == Decimal("2.29")
    h100x8 = next(o for o in cat.offerings if o.id == "lambda:gpu_8x_h100_sxm5:us-east-1")
    assert h100x8.on_demand_usd_per_h == Decimal("31.92")


def test_offerings_no_source_lists_are_gone():
    ids = {o.id for o in load_catalog().offerings}
    for gone in (
        "aws:p4de.24xlarge:us-east-2",
        "azure:Standard_ND96isr_H100_v5:southcentralus",
        "azure:Standard_ND96asr_v4:eastus2",
        "gcp:tpu-v4:us-central1",
        "nebius:gpu-b200-sxm-8gpu-160vcpu-1792gb:eu-north1",
    ):
        assert gone not in ids


def test_shipped_regions_equal_the_carbon_snapshots():
    c = SNAP / "carbon"
    gcp = parse_gcp_carbon(
        [
            (2025, "2025", "https://x.org/2025.csv", (c / "gcp-region-carbon-2025.csv").read_text()),
            (2024, "2024", "https://x.org/2024.csv", (c / "gcp-region-carbon-2024.csv").read_text()),
        ]
    )
    owid = parse_owid("owid", "https://x.org/owid.csv", (c / "owid-carbon-intensity-elec.csv").read_text())
    built = {r["id"]: r for r in build_regions(read_region_grids(), gcp, owid, "2026-12-06")}
    shipped = read_csv_rows(BUILTIN_DATA_DIR / "regions.csv")
    assert set(built) == set(shipped)
    for key, row in built.items():
        assert float(shipped[key]["grid_gco2e_per_kwh"]) == float(row["grid_gco2e_per_kwh"]), key
    # newest year first: Google's 2025 value, not 2024's
    assert gcp["gcp:asia-east1"].year == 2025 and gcp["gcp:asia-east1"].gco2e_per_kwh == 427.95
    assert owid["FIN"].year == 2024


def test_one_value_per_grid_finland():
    regions = load_catalog().regions
    assert regions["nebius:eu-north1"].grid_gco2e_per_kwh == regions["gcp:europe-north1"].grid_gco2e_per_kwh
    assert regions["fluidstack:FINLAND"].grid_gco2e_per_kwh == regions["gcp:europe-north1"].grid_gco2e_per_kwh
    assert regions["nebius:eu-west1"].grid_gco2e_per_kwh == regions["gcp:europe-west9"].grid_gco2e_per_kwh
    # every region that names a grid reads exactly that grid's value
    for r in read_region_grids().values():
        if r.grid != r.id and r.grid in regions:  # (countries without a row of their own are not compared)
            assert regions[r.id].grid_gco2e_per_kwh == regions[r.grid].grid_gco2e_per_kwh, r.id


def test_device_fixes():
    cat = load_catalog()
    assert cat.devices["b200"].memory_bandwidth_gb_per_s == 7700
    assert cat.devices["gaudi3"].peak_bf16_tflop_per_s == pytest.approx(1835 * 1.6 / 1.75, rel=1e-3)


def _refresh_cli(target: Path, origin: str, *extra: str):
    args = ["catalog", "refresh", "--from", origin, "--catalog", str(target), "--json"]
    for name in SMALL + ["gcp-carbon", "owid-carbon"]:
        args += ["--source", name]
    return runner.invoke(app, [*args, *extra])


def test_refresh_from_folder_writes_user_dir_keeps_history_and_diffs(tmp_path: Path):
    target = tmp_path / "cat"
    first = _refresh_cli(target, str(SNAP))
    assert first.exit_code == 0, first.output
    data = json.loads(first.output)
    assert data["changes"]["offerings/lambda.csv"]["moved"] == []  # shipped == snapshot
    assert (target / "offerings" / "lambda.csv").is_file() and (target / "refresh.json").is_file()
    # a price moves upstream: the second refresh reports it and keeps the first files under history/
    changed = tmp_path / "snap"
    shutil.copytree(SNAP, changed)
    lam = changed / "skypilot" / "v9-lambda-vms.csv"
    lam.write_bytes(lam.read_bytes().replace(b",2.29,", b",2.79,"))
    second = _refresh_cli(target, str(changed))
    assert second.exit_code == 0, second.output
    moved = json.loads(second.output)["changes"]["offerings/lambda.csv"]["moved"]
    assert any(m["id"] == "lambda:gpu_1x_gh200:us-east-1" and m["new"] == "2.79" for m in moved)
    assert (target / "history").is_dir()
    cat = load_catalog(target)
    assert next(
        o for o in cat.offerings if o.id == "lambda:gpu_1x_gh200:us-east-1"
    ).on_demand_usd_per_h == Decimal("2.79")
    diff = runner.invoke(app, ["catalog", "diff", "--catalog", str(target), "--json"])
    assert diff.exit_code == 0, diff.output
    assert any(
        m["id"] == "lambda:gpu_1x_gh200:us-east-1"
        for m in json.loads(diff.output)["changes"]["offerings/lambda.csv"]["moved"]
    )
    status = runner.invoke(app, ["catalog", "status", "--catalog", str(target), "--json"])
    assert status.exit_code == 0
    assert any(r["provider"] == "lambda" and r["age_days"] >= 0 for r in json.loads(status.output)["sources"])


def test_refresh_never_writes_into_the_package():
    result = runner.invoke(app, ["catalog", "refresh", "--from", str(SNAP)], env={"FLOPWISE_CATALOG_DIR": ""})
    assert result.exit_code == 2
    assert "--catalog" in result.output
    before = (BUILTIN_DATA_DIR / "offerings" / "lambda.csv").read_bytes()
    into_package = runner.invoke(
        app,
        [
            "catalog",
            "refresh",
            "--from",
            str(SNAP),
            "--catalog",
            str(BUILTIN_DATA_DIR),
            "--source",
            "skypilot-lambda",
        ],
    )
    assert into_package.exit_code == 2 and "installed package" in into_package.output
    assert (BUILTIN_DATA_DIR / "offerings" / "lambda.csv").read_bytes() == before


def test_check_exits_nonzero_when_the_shipped_catalog_differs(tmp_path: Path):
    same = runner.invoke(
        app, ["catalog", "refresh", "--from", str(SNAP), "--check", "--source", "skypilot-lambda"]
    )
    assert same.exit_code == 0, same.output
    changed = tmp_path / "snap"
    shutil.copytree(SNAP, changed)
    lam = changed / "skypilot" / "v9-lambda-vms.csv"
    lam.write_bytes(lam.read_bytes().replace(b",2.29,", b",2.79,"))
    differs = runner.invoke(
        app, ["catalog", "refresh", "--from", str(changed), "--check", "--source", "skypilot-lambda"]
    )
    assert differs.exit_code == 1


class _Handler(http.server.SimpleHTTPRequestHandler):
    fail_500 = False
    truncate = False

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):  # noqa: N802
        if type(self).fail_500:
            self.send_error(500, "Internal Server Error")
            return
        if type(self).truncate:
            path = Path(self.translate_path(self.path))
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server():
    handler = type("H", (_Handler,), {})

    def factory(*args, **kwargs):
        return handler(*args, directory=str(SNAP), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_refresh_over_http(tmp_path: Path, server):
    # every source over HTTP; the optional CPU extracts are absent here (HTTP 404) and are skipped
    _, url = server
    args = ["catalog", "refresh", "--from", url, "--catalog", str(tmp_path / "cat"), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    written = {Path(p).name for p in json.loads(result.output)["written"]}
    assert {"aws.csv", "gcp.csv", "lambda.csv", "regions.csv"} <= written
    for name in ("nebius.csv", "aws.csv"):
        rows = read_csv_rows(tmp_path / "cat" / "offerings" / name)
        assert rows and all(r["source_url"].startswith(url) for r in rows.values())


def test_http_500_and_truncated_download_leave_the_catalog_in_place(tmp_path: Path, server):
    handler, url = server
    target = tmp_path / "cat"
    assert _refresh_cli(target, str(SNAP)).exit_code == 0
    before = (target / "offerings" / "lambda.csv").read_bytes()
    handler.fail_500 = True
    bad = _refresh_cli(target, url)
    assert bad.exit_code == 1 and "HTTP 500" in bad.output and "source skypilot-" in bad.output
    handler.fail_500 = False
    handler.truncate = True
    bad = _refresh_cli(target, url)
    assert bad.exit_code == 1 and "truncated" in bad.output
    assert (target / "offerings" / "lambda.csv").read_bytes() == before


def _broken_snapshot(tmp_path: Path, edit) -> Path:
    snap = tmp_path / "snap"
    shutil.copytree(SNAP, snap)
    path = snap / "skypilot" / "v9-lambda-vms.csv"
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8", newline="")
    return snap


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace("SpotPrice", "Spot", 1), "lacks column 'SpotPrice'"),
        (lambda t: t.replace("Price,Region", "PriceUSD,Region", 1), "(renamed to 'PriceUSD'?)"),
        (lambda t: t.replace(",2.29,", ",N/A,", 1), "'N/A' is not a price"),
        (lambda t: t.replace(",2.29,", ",-2.29,", 1), "is negative"),
        (lambda t: t.replace(",us-east-1,", ",mars-north-1,", 1), "never seen for lambda"),
        (lambda t: t[: len(t) // 2].rsplit(",", 3)[0], "truncated"),
    ],
    ids=["missing-column", "renamed-column", "na-price", "negative-price", "unknown-region", "truncated"],
)
def test_bad_input_names_source_and_line_and_writes_nothing(tmp_path: Path, edit, expected):
    target = tmp_path / "cat"
    assert _refresh_cli(target, str(SNAP)).exit_code == 0
    before = {p: p.read_bytes() for p in target.rglob("*.csv")}
    result = _refresh_cli(target, str(_broken_snapshot(tmp_path, edit)))
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert expected in text
    assert "source skypilot-lambda" in text and "v9-lambda-vms.csv:" in text
    assert {p: p.read_bytes() for p in target.rglob("*.csv")} == before


def test_fetch_error_is_a_catalog_file_error_with_line():
    with pytest.raises(FetchError) as err:
        _parse_text("lambda", "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo,SpotPrice\n"
                    "gpu_1x_a10,A10,1,30,200,abc,us-east-1,,\n")  # fmt: skip
    assert err.value.line == 2 and err.value.field == "Price"


def _parse_text(cloud: str, text: str) -> ParseResult:
    return parse_vms(
        cloud,
        text,
        source=f"skypilot-{cloud}",
        location="mem",
        known_regions=read_region_grids(),
    )


def test_unknown_source_name_suggests():
    result = runner.invoke(app, ["catalog", "refresh", "--check", "--source", "skypilot-lamda"])
    assert result.exit_code == 2 and "skypilot-lambda" in result.output


def test_as_of_reads_the_snapshot_of_that_date(tmp_path: Path):
    from datetime import date

    from flopwise.catalog.fetch.shell import refresh
    from flopwise.errors import InputError

    target = tmp_path / "cat"
    target.mkdir()
    # only Lambda refreshed: the other files hold no price from before the date, so the answer is refused
    refresh(target, ["skypilot-lambda"], str(SNAP), today=date(2026, 3, 1))
    with pytest.raises(InputError, match=r"offerings/aws.csv \(\d+ rows\)"):
        load_catalog(target, as_of=date(2026, 3, 15))
    refresh(target, None, str(SNAP), today=date(2026, 3, 1))
    changed = tmp_path / "snap"
    shutil.copytree(SNAP, changed)
    lam = changed / "skypilot" / "v9-lambda-vms.csv"
    lam.write_bytes(lam.read_bytes().replace(b",2.29,", b",2.79,"))
    refresh(target, ["skypilot-lambda"], str(changed), today=date(2026, 6, 1))
    gh200 = "lambda:gpu_1x_gh200:us-east-1"

    def price(cat):
        return next(o for o in cat.offerings if o.id == gh200).on_demand_usd_per_h

    assert price(load_catalog(target)) == Decimal("2.79")
    assert price(load_catalog(target, as_of=date(2026, 3, 15))) == Decimal(
        "2.29"
    )  # "what did it cost in March"
    assert price(load_catalog(target, as_of=date(2026, 7, 1))) == Decimal("2.79")
    with pytest.raises(InputError, match="oldest snapshot of offerings/aws.csv is from 2026-03-01"):
        load_catalog(target, as_of=date(2026, 1, 1))


def test_plan_as_of_rejects_a_bad_date():
    result = runner.invoke(
        app, ["plan", "serve", "--model", "llama-3.1-8b", "--rps", "1", "--as-of", "March"]
    )
    assert result.exit_code == 2 and "--as-of" in result.output


def test_stale_prices_are_said_in_assumptions_and_on_the_table(monkeypatch):
    # with a 1-day threshold every shipped price is stale after a day; FLOPWISE_STALE_DAYS configures it
    from datetime import date, timedelta

    from flopwise.catalog import staleness

    class _Later(date):
        @classmethod
        def today(cls):
            return date(2026, 12, 6) + timedelta(days=2)

    monkeypatch.setattr(staleness, "date", _Later)
    monkeypatch.setenv("FLOPWISE_STALE_DAYS", "1")
    args = ["plan", "serve", "--model", "llama-3.1-8b", "--rps", "1", "--top", "3"]
    data = json.loads(runner.invoke(app, [*args, "--json"]).output)
    note = data["assumptions"]["data_age"]["stale"]
    assert note.startswith("stale: the ") and "over 1)" in note
    assert all(o["stale"] for o in data["options"] if o["price_retrieved"])
    table = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert "stale: the" in table.output
    monkeypatch.setenv("FLOPWISE_STALE_DAYS", "365")
    fresh = json.loads(runner.invoke(app, [*args, "--json"]).output)
    assert fresh["assumptions"]["data_age"]["stale"] is None


def test_catalog_status_flags_stale_sources(monkeypatch):
    result = runner.invoke(app, ["catalog", "status", "--json", "--stale-days", "1"])
    assert result.exit_code == 0
    rows = json.loads(result.output)["sources"]
    assert {r["provider"] for r in rows} >= {"aws", "lambda", "oci", "coreweave", "gcp"}
    assert all(r["rows"] > 0 and r["age_days"] >= 0 for r in rows)


def test_refresh_of_every_source_is_fast(tmp_path: Path):
    import time

    from flopwise.catalog.fetch.shell import refresh

    t = time.perf_counter()
    result = refresh(tmp_path / "cat", None, str(SNAP))
    assert (
        time.perf_counter() - t < 10.0
    )  # target: full snapshots in under 10 s (bench/bench_catalog.py: 0.6 s)
    assert {s.name for s in result.sources} >= {"skypilot-aws", "skypilot-gcp", "gcp-carbon+owid-carbon"}


def test_estimate_says_when_its_price_is_stale():
    # CoreWeave's hand-entered prices were retrieved 2025-03-01: over 90 days before the shipped fetch date
    args = ["estimate", "serve", "--model", "llama-3.1-8b", "--device", "h100", "--provider", "coreweave"]
    data = json.loads(runner.invoke(app, [*args, "--json"]).output)
    age = data["assumptions"]["data_age"]
    assert age["price_retrieved"] == "2025-03-01"
    assert age["stale"].startswith("stale: the coreweave:gd-8xh100ib-i128:us price")
    table = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "STALE" in table.output


def test_cpu_sizes_below_a_socket_are_slices_and_burstables_say_their_baseline():
    head = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,AvailabilityZone\n"
    text = head + (
        "c7g.xlarge,,,4.0,8.0,,0.145,0.05,us-east-1,use1-az1\n"
        "c7i.large,,,2.0,4.0,,0.08925,0.03,us-east-1,use1-az1\n"
        "t4g.large,,,2.0,8.0,,0.0672,0.02,us-east-1,use1-az1\n"
        "c7i.48xlarge,,,192.0,384.0,,8.568,3.0,us-east-1,use1-az1\n"
    )
    acc: dict = {}
    res = ParseResult()
    parse_vms(
        "aws",
        text,
        source="skypilot-aws",
        location="mem",
        known_regions=read_region_grids(),
        into=acc,
        result=res,
    )
    rows = {
        r["instance_type"]: r
        for r in finish(
            "aws", acc, source_url="https://example.org/vms.csv", retrieved="2026-12-06", result=res
        ).rows
    }
    assert (
        rows["c7g.xlarge"]["device_id"],
        rows["c7g.xlarge"]["device_count"],
        rows["c7g.xlarge"]["vcpus"],
    ) == ("graviton3", "1", "4")
    assert rows["c7i.48xlarge"]["device_count"] == "2"
    assert "burstable" in rows["t4g.large"]["note"] and "30%" in rows["t4g.large"]["note"]
    assert "burstable" not in rows["c7i.large"]["note"]


def test_shipped_catalog_has_small_cpu_vms_priced_per_vm():
    from flopwise.catalog import load_catalog
    from flopwise.catalog.cpu import offering_slice

    cat = load_catalog()
    by_id = {o.id: o for o in cat.offerings}
    o = by_id["aws:c7g.xlarge:us-east-1"]
    part = offering_slice(cat.devices["graviton3"], o)
    assert part is not None and part.cores == 4
    x86 = by_id["aws:c7i.xlarge:us-east-1"]
    assert offering_slice(cat.devices["xeon-8480plus"], x86).cores == 2  # 4 vCPUs = 2 cores with SMT
    for family in ("c7g.", "c7i.", "c8g.", "m7g.", "m7i.", "t4g.", "t3."):
        assert any(x.instance_type.startswith(family) and x.vcpus <= 8 for x in cat.offerings), family
    for family in ("c3-standard-4", "t2a-standard-1"):
        assert any(x.instance_type == family for x in cat.offerings), family


def test_gcp_n2_and_e2_map_to_cpu_slices_and_shared_core_e2_says_its_baseline():
    head = "InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,GpuInfo,Region,AvailabilityZone,Price,SpotPrice\n"
    text = head + (
        "n2-standard-4,4.0,16.0,,,,us-central1,us-central1-a,0.194236,0.0465\n"
        "n2-standard-48,48.0,192.0,,,,us-central1,us-central1-a,2.330832,0.558\n"
        "n2-standard-80,80.0,320.0,,,,us-central1,us-central1-a,3.88472,0.93\n"
        "e2-standard-2,2.0,8.0,,,,us-central1,us-central1-a,0.067006,0.0201\n"
        "e2-micro,2.0,1.0,,,,us-central1,us-central1-a,0.008376,0.0025\n"
    )
    acc: dict = {}
    res = ParseResult()
    parse_vms(
        "gcp", text, source="skypilot-gcp", location="mem", known_regions=read_region_grids(), into=acc, result=res
    )
    rows = {
        r["instance_type"]: r
        for r in finish(
            "gcp", acc, source_url="https://example.org/vms.csv", retrieved="2026-12-06", result=res
        ).rows
    }
    assert (rows["n2-standard-4"]["device_id"], rows["n2-standard-4"]["vcpus"]) == ("xeon-8259cl", "4")
    assert rows["n2-standard-48"]["device_count"] == "1" and "socket" in rows["n2-standard-48"]["note"]
    assert "n2-standard-80" not in rows and res.skipped["CPU size that is not whole sockets"] == 1
    assert rows["e2-standard-2"]["device_id"] == "xeon-8259cl" and "burstable" not in rows["e2-standard-2"]["note"]
    assert "shared-core, sustains 12.5% of each of its 2 vCPUs" in rows["e2-micro"]["note"]


def test_shared_core_e2_caveat_under_a_sustained_load():
    from flopwise.catalog.cpu import burstable_caveat

    assert "12.5% per vCPU at 40% sustained utilization" in burstable_caveat("e2-micro", 0.4)
    assert "fractional share" in burstable_caveat("e2-micro", 0.4)
    assert "stays under the baseline" in burstable_caveat("e2-medium", 0.3)
    # AWS wording unchanged
    assert burstable_caveat("t3.large", 0.5).startswith("t3.large is burstable: CPU credits sustain 30% per vCPU")


def test_shipped_catalog_has_gcp_n2_and_e2_sizes():
    cat = load_catalog()
    for size in ("n2-standard-2", "n2-standard-8", "n2-standard-48", "e2-standard-2", "e2-standard-32"):
        rows = [o for o in cat.offerings if o.instance_type == size]
        assert rows and all(o.device_id == "xeon-8259cl" for o in rows), size


def test_the_gpus_gcp_attaches_to_n1_hosts_resolve_in_the_device_table():
    from flopwise.catalog.resolve import resolve_device

    devices = load_catalog().devices
    names = {
        "T4": "t4",
        "nvidia-tesla-t4": "t4",
        "P100": "p100-pcie-16gb",
        "nvidia-tesla-p100": "p100-pcie-16gb",
        "Tesla P100-PCIE-16GB": "p100-pcie-16gb",
        "P4": "tesla-p4",
        "nvidia-tesla-p4": "tesla-p4",
        "Tesla V100-SXM2-16GB": "v100-sxm2-16gb",
        "K80": "tesla-k80-gk210",  # Azure NC: one GK210, half a K80 board
        "Tesla K80": "tesla-k80-gk210",
    }
    for name, device_id in names.items():
        assert resolve_device(devices, name).id == device_id, name


def test_azure_k80_counts_one_gk210_and_the_unsourced_gpus_stay_skipped():
    # Azure: "1 GPU = one-half K80 card", so Standard_NC6 (AcceleratorCount 1) is one tesla-k80-gk210 and NC24 four
    res = _parse("azure", *_snapshot_files("skypilot-azure"))
    rows = {r["id"]: r for r in res.rows}
    nc6 = rows["azure:Standard_NC6:westus2"]
    assert (nc6["device_id"], nc6["device_count"]) == ("tesla-k80-gk210", "1")
    assert Decimal(nc6["on_demand_usd_per_h"]) == Decimal("0.9") and Decimal(nc6["spot_usd_per_h"]) == Decimal("0.099")
    assert rows["azure:Standard_NC24:westus2"]["device_count"] == "4"
    k80 = [r for r in rows.values() if r["device_id"] == "tesla-k80-gk210"]
    assert len(k80) == 8 and all(r["spot_usd_per_h"] for r in k80)
    assert not any(r["instance_type"].endswith("_Promo") for r in rows.values())
    # M60 (NV, NVv3) counts one GM204 GPU, half a board, as the K80 rows count one GK210: NV6 and NV12s_v3 = 1
    nv6, nv12 = rows["azure:Standard_NV6:northcentralus"], rows["azure:Standard_NV12:northcentralus"]
    assert (nv6["device_id"], nv6["device_count"], nv12["device_count"]) == ("tesla-m60-gm204", "1", "2")
    assert rows["azure:Standard_NV12s_v3:eastus"]["device_count"] == "1"
    m60 = [r for r in rows.values() if r["device_id"] == "tesla-m60-gm204"]
    assert len(m60) == 18 and all(r["spot_usd_per_h"] for r in m60)
    # MI25 (NVv4) has no sourced device row: its lines are skipped and counted, never guessed
    mi25 = ("Standard_NV4as_v4", "Standard_NV8as_v4", "Standard_NV16as_v4", "Standard_NV32as_v4")
    assert not any(r["instance_type"] in mi25 for r in rows.values())
    assert res.skipped["accelerator with no catalog device"] > 0
