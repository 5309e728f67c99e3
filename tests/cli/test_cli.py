"""The CLI end to end through Typer's runner: tables for people, one JSON object with --json, exit codes."""

import json

import pytest
from typer.testing import CliRunner

from flopwise.cli.main import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def invoke_json(*args: str) -> dict:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_help_lists_groups():
    result = invoke("--help")
    assert result.exit_code == 0
    for group in ("estimate", "catalog", "models", "validate"):
        assert group in result.stdout


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("flopwise ")


def test_catalog_devices_json_and_filter():
    data = invoke_json("catalog", "devices", "--kind", "tpu")
    ids = {d["id"] for d in data["devices"]}
    assert {"tpu-v5e", "tpu-v5p"} <= ids
    assert all(d["kind"] == "tpu" for d in data["devices"])


def test_catalog_devices_table():
    result = invoke("catalog", "devices", "--vendor", "nvidia")
    assert result.exit_code == 0
    assert "h100-sxm" in result.stdout


def test_catalog_offerings_by_forgiving_device_name():
    data = invoke_json("catalog", "offerings", "--device", "NVIDIA H100 80GB HBM3")
    assert data["offerings"]
    assert {o["device_id"] for o in data["offerings"]} == {"h100-sxm"}


def test_catalog_regions_json():
    data = invoke_json("catalog", "regions", "--provider", "gcp")
    assert any(r["id"] == "gcp:europe-west4" for r in data["regions"])


def test_unknown_device_is_one_line_exit_2():
    result = invoke("catalog", "offerings", "--device", "h10-sxm")
    assert result.exit_code == 2
    assert "Did you mean" in result.stderr and "h100-sxm" in result.stderr
    assert "Traceback" not in result.output


def test_user_catalog_dir_overrides(tmp_path):
    from flopwise.catalog.loader import BUILTIN_DATA_DIR

    (tmp_path / "devices").mkdir()
    header = (BUILTIN_DATA_DIR / "devices" / "nvidia.csv").read_text().splitlines()[0]
    row = next(
        line
        for line in (BUILTIN_DATA_DIR / "devices" / "nvidia.csv").read_text().splitlines()
        if line.startswith("l4,")
    )
    (tmp_path / "devices" / "mine.csv").write_text(header + "\n" + row.replace("l4,", "my-l4,", 1) + "\n")
    data = invoke_json("catalog", "devices", "--catalog", str(tmp_path))
    assert "my-l4" in {d["id"] for d in data["devices"]}


def test_broken_user_catalog_names_file_and_line(tmp_path):
    (tmp_path / "regions.csv").write_text("id,provider\nx,y\n")
    result = invoke("catalog", "regions", "--catalog", str(tmp_path))
    assert result.exit_code == 1
    assert "regions.csv" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--tokens", "-5"], "--tokens"),
        (["--tokens", "1e40"], "--tokens"),
        (["--tokens", "abc"], "--tokens"),
        (["--tokens", "1T", "--count", "0"], "--count"),
    ],
)
def test_train_bad_numbers(args, field):
    base = ["estimate", "train", "--model", "llama-3.1-8b", "--device", "h100"]
    if "--tokens" not in args:
        base += ["--tokens", "1T"]
    result = invoke(*base, *args)
    assert result.exit_code == 2, result.output
    assert field in result.stderr
    assert "Traceback" not in result.output
