"""Issue 11: every input checked where it enters, honest exit codes, readable output. One regression test per
case that used to give a silent wrong answer, a traceback or a misleading exit code."""

from __future__ import annotations

import csv
import io
import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flopwise.cli._common import EXIT_CODES
from flopwise.cli.main import app

runner = CliRunner()
SERVE = ["estimate", "serve", "-m", "llama-3.1-8b", "-d", "h100-sxm"]
TOY_CONFIG = {
    "model_type": "llama",
    "hidden_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 512,
    "vocab_size": 1000,
    "max_position_embeddings": 4096,
}


def run(*args: str, env: dict[str, str] | None = None):
    result = runner.invoke(app, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


# ------------------------------------------------------------------------------------------ names resolve


def test_misspelled_provider_is_an_error_with_a_suggestion_not_onprem_prices():
    for mode in ([], ["--json"]):
        result = run(*SERVE, "--provider", "awz", *mode)
        assert result.exit_code == 2 and result.stdout == ""
        line = one_error_line(result)
        assert "--provider" in line and "'aws'" in line
    good = json.loads(run(*SERVE, "--provider", "aws", "--pricing", "on-demand", "--json").stdout)
    assert good["price"]["provider"] == "aws"


def test_generic_device_names_list_candidates_instead_of_picking_one():
    result = run(*SERVE[:4], "-d", "cpu")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "Ambiguous device 'cpu'" in line and "'xeon-8480plus'" in line and "'epyc-9654'" in line
    assert "tpu-v5e" in one_error_line(run(*SERVE[:4], "-d", "tpu"))
    # a specific name still resolves: Grace by its own name, the SXM board of a family
    assert json.loads(run(*SERVE[:4], "-d", "Grace CPU", "--json").stdout)["device"] == "grace"
    assert json.loads(run(*SERVE[:4], "-d", "H100", "--json").stdout)["device"] == "h100-sxm"


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [
        (["catalog", "devices", "--kind", "gpux"], "'gpu'"),
        (["catalog", "devices", "--vendor", "nvdia"], "'nvidia'"),
        (["catalog", "devices", "--segment", "datacentre"], "'datacenter'"),
        (["catalog", "offerings", "--provider", "awz"], "'aws'"),
        (["catalog", "regions", "--provider", "awz"], "'aws'"),
        (["models", "list", "--family", "lama"], "'llama'"),
    ],
)
def test_misspelled_filters_are_errors_not_empty_lists(args: list[str], suggestion: str):
    result = run(*args, "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert suggestion in one_error_line(result)
    assert run(*args[:-1], suggestion.strip("'").upper()).exit_code == 0  # case does not matter


# ------------------------------------------------------------------------------------ units and bounds


def test_a_bare_deadline_needs_a_unit():
    result = run("plan", "train", "-m", "llama-3.1-8b", "--tokens", "1B", "--deadline", "30")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "'30d'" in line and "'30h'" in line


def test_tensor_parallel_must_divide_the_attention_heads():
    line = one_error_line(run(*SERVE, "--count", "3"))
    assert "--count" in line and "32 attention heads" in line
    assert run(*SERVE, "--count", "2", "--json").exit_code == 0
    train = ["estimate", "train", "-m", "llama-3.1-8b", "-d", "h100", "--tokens", "1B", "--count", "6"]
    assert "--tp" in one_error_line(run(*train, "--tp", "3"))
    assert run(*train, "--tp", "2", "--json").exit_code == 0


def test_a_batch_beyond_memory_is_an_error_naming_the_largest_that_fits():
    result = run(*SERVE, "--batch", "100000", "--json")
    assert result.exit_code == 2 and result.stdout == ""
    line = one_error_line(result)
    assert "--batch" in line and "at most" in line
    largest = int(line.split("at most ")[1].split()[0])
    fits = json.loads(run(*SERVE, "--batch", str(largest), "--json").stdout)
    assert fits["fits"] is True
    assert run(*SERVE, "--batch", str(largest + 1)).exit_code == 2


def test_a_model_that_does_not_fit_even_at_batch_1_exits_4_in_both_modes():
    args = ["estimate", "serve", "-m", "llama-3.1-70b", "-d", "rtx-4090"]
    table, as_json = run(*args), run(*args, "--json")
    assert table.exit_code == as_json.exit_code == 4
    assert json.loads(as_json.stdout)["fits"] is False and "does not fit" in table.stderr


def test_prompt_and_output_beyond_the_context_window_is_an_error():
    line = one_error_line(run(*SERVE, "--input-tokens", "200000"))
    assert "context window" in line and "131,072" in line


def test_config_with_zero_heads_is_one_line(tmp_path: Path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TOY_CONFIG, "num_attention_heads": 0}))
    result = run("estimate", "serve", "-m", str(path), "-d", "h100-sxm")
    assert result.exit_code == 2 and "'n_heads' is 0" in one_error_line(result)


def test_binary_config_and_fleet_yaml_are_one_line(tmp_path: Path):
    blob = bytes(range(256)) * 4
    (tmp_path / "config.json").write_bytes(blob)
    (tmp_path / "fleet.yaml").write_bytes(blob)
    result = run("estimate", "serve", "-m", str(tmp_path / "config.json"), "-d", "h100-sxm")
    assert result.exit_code == 2 and "not a text file" in one_error_line(result)
    result = run("plan", "fleet", str(tmp_path / "fleet.yaml"))
    assert result.exit_code == 2 and "not a text file" in one_error_line(result)


# ------------------------------------------------------------------------------------------- databases


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_database_is_one_line_and_exit_1(tmp_path: Path):
    url = f"postgresql+psycopg://nobody@127.0.0.1:{_closed_port()}/x?connect_timeout=2"
    (tmp_path / "focus.csv").write_text(
        "BilledCost,BillingCurrency,ChargePeriodStart,ChargePeriodEnd,ProviderName\n"
    )
    for args in (
        ["ingest", "focus", str(tmp_path / "focus.csv"), "--database-url", url],
        ["report", "usage", "--database-url", url, "--json"],
    ):
        result = run(*args)
        assert result.exit_code == 1, result.output
        assert "database error" in one_error_line(result)


def test_sqlite_urls_create_no_directories_and_reads_create_no_file(tmp_path: Path):
    missing_dir = tmp_path / "nonexistent" / "dir"
    result = run("report", "usage", "--database-url", f"sqlite:///{missing_dir / 'x.db'}")
    assert result.exit_code == 2 and not (tmp_path / "nonexistent").exists()
    (tmp_path / "f.csv").write_text("BilledCost\n")
    result = run(
        "ingest", "focus", str(tmp_path / "f.csv"), "--database-url", f"sqlite:///{missing_dir / 'x.db'}"
    )
    assert result.exit_code == 2 and "does not exist" in one_error_line(result)
    assert not (tmp_path / "nonexistent").exists()
    typo = tmp_path / "flopwsie.db"
    result = run("report", "usage", "--database-url", f"sqlite:///{typo}")
    assert result.exit_code == 2 and "no database file" in one_error_line(result)
    assert not typo.exists()


def test_serve_on_a_busy_port_is_one_line_and_exit_1_before_claiming_to_be_up(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("serve", "--port", str(port), "--database-url", f"sqlite:///{tmp_path / 's.db'}")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "in use" in line and str(port) in line
    assert "flopwise API on" not in result.output


# ------------------------------------------------------------------------------------------ meter bounds

SACCT = """JobID|Cluster|User|Account|Submit|Start|End|State|AllocTRES|Elapsed
1|c|u|a|2024-05-01T09:00:00|2024-05-01T10:00:00|2024-05-01T11:00:00|COMPLETED|billing=8,cpu=8,gres/gpu:h100=99999999,gres/gpu=99999999|01:00:00
2|c|u|a|2024-05-01T09:00:00|2024-05-01T10:00:00|2024-05-01T11:00:00|COMPLETED|billing=8,cpu=8,gres/gpu:h100=8,gres/gpu=8|01:00:00
"""  # noqa: E501
SMI = """timestamp, name, index, utilization.gpu [%], power.draw [W]
2024/05/01 12:00:00.000, NVIDIA H100 80GB HBM3, 0, 50 %, 300.00 W
2024/05/01 12:00:10.000, NVIDIA H100 80GB HBM3, 0, 150 %, 300.00 W
2024/05/01 12:00:20.000, NVIDIA H100 80GB HBM3, 0, 50 %, 1e400 W
2024/05/01 12:00:30.000, NVIDIA H100 80GB HBM3, 0, 50 %, 1500 W
2024/05/01 12:00:40.000, NVIDIA H100 80GB HBM3, 0, 60 %, 310.00 W
"""
FOCUS = """BilledCost,BillingCurrency,ChargePeriodStart,ChargePeriodEnd,ProviderName
12.50,USD,2024-09-18T22:00:00Z,2024-09-18T23:00:00Z,AWS
10000000000000,USD,2024-09-18T22:00:00Z,2024-09-18T23:00:00Z,AWS
"""


def _ingest(tmp_path: Path, source: str, text: str, *extra: str):
    path = tmp_path / f"{source}.txt"
    path.write_text(text)
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    return run("ingest", source, str(path), "--database-url", db, "--no-burn", "--json", *extra)


def test_gpu_count_beyond_any_cluster_is_a_rejected_row(tmp_path: Path):
    result = _ingest(tmp_path, "slurm", SACCT, "--assume-tz", "UTC")
    assert result.exit_code == 5  # partial
    body = json.loads(result.stdout)
    assert body["records_inserted"] == 1 and Decimal_(body["cost_usd"]) < 1000
    (reject,) = body["rejects"]
    assert reject["line"] == 2 and "more than any cluster holds" in reject["reason"]


def test_nvidia_smi_utilization_and_power_out_of_bounds_are_rejected(tmp_path: Path):
    result = _ingest(tmp_path, "nvidia-smi", SMI, "--assume-tz", "UTC")
    assert result.exit_code == 5
    reasons = {r["line"]: r["reason"] for r in json.loads(result.stdout)["rejects"]}
    assert "150 % is outside 0-100 %" in reasons[3]
    assert "inf" in reasons[4]
    assert "2x the 700 W TDP of h100-sxm" in reasons[5]


def test_focus_cost_beyond_what_the_store_holds_is_a_rejected_row_not_a_traceback(tmp_path: Path):
    result = _ingest(tmp_path, "focus", FOCUS)
    assert result.exit_code == 5
    (reject,) = json.loads(result.stdout)["rejects"]
    assert reject["line"] == 3 and "BilledCost" in reject["reason"]


def test_every_row_rejected_exits_2(tmp_path: Path):
    result = _ingest(tmp_path, "focus", FOCUS.splitlines()[0] + "\n" + FOCUS.splitlines()[2] + "\n")
    assert result.exit_code == 2


def test_report_without_region_uses_the_stated_default_grid(tmp_path: Path):
    assert _ingest(tmp_path, "nvidia-smi", SMI, "--assume-tz", "UTC").exit_code == 5
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    result = run("report", "usage", "--database-url", db, "--json")
    body = json.loads(result.stdout)
    total = body["total"]
    assert total["energy_kwh"] > 0 and total["records_without_region"] == 1
    from flopwise.catalog import load_catalog

    us = load_catalog().regions["country:US"]
    assert total["co2e_kg"] == pytest.approx(total["energy_kwh"] * us.grid_gco2e_per_kwh / 1000, rel=0.01)
    # the three boundaries: the record has no region, so its facility energy takes the default region's PUE
    from flopwise.estimate.energy import HOST_POWER_FRAC

    node = 1 + HOST_POWER_FRAC["datacenter"]
    assert total["device_co2e_kg"] == pytest.approx(total["co2e_kg"], rel=1e-9)
    assert total["node_energy_kwh"] == pytest.approx(total["energy_kwh"] * node)
    assert total["facility_energy_kwh"] == pytest.approx(total["energy_kwh"] * node * us.pue)
    assert total["facility_co2e_kg"] == pytest.approx(total["device_co2e_kg"] * node * us.pue)
    assert body["energy_boundaries"]["energy_default_pue_kwh"] == pytest.approx(total["energy_kwh"])
    assert f"country:US ({us.grid_gco2e_per_kwh:g} gCO2e/kWh)" in body["warnings"][0]
    assert "country:US" in run("report", "usage", "--database-url", db).stderr


def Decimal_(text: str):  # noqa: N802 - reads like the constructor it wraps
    from decimal import Decimal

    return Decimal(text)


# ------------------------------------------------------------------------------------- exit-code table


def test_exit_code_table_is_complete_and_in_the_docs():
    assert [code for code, _, _ in EXIT_CODES] == [0, 1, 2, 3, 4, 5, 130]
    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    for code, name, _ in EXIT_CODES:
        assert f"| {code} | `{name}` |" in docs


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["catalog", "devices", "--kind", "tpu"], 0),
        (["models", "show", "llama-3.1-8b"], 0),
        (["estimate", "train", "-m", "llama-3.1-8b", "-d", "h100", "--count", "8", "--tokens", "1B"], 0),
        (["estimate", "train", "-m", "llama-3.1-8b", "-d", "h100", "--count", "1", "--tokens", "1B"], 4),  # 139 GB on 80
        (["estimate", "train", "-m", "llama-3.1-8b", "-d", "h100", "--tokens", "1B"], 0),  # picks a count that fits
        (["estimate", "train", "-m", "llama-3.1-8b", "-d", "h100", "--tokens", "-5"], 2),
        (["estimate", "serve", "-m", "llama-3.1-8b", "-d", "hopper-9000"], 2),
        (["plan", "train", "-m", "llama-3.1-8b", "--tokens", "1B", "--top", "1"], 0),
        (
            [
                "plan",
                "train",
                "-m",
                "llama-3.1-405b",
                "--tokens",
                "15T",
                "--deadline",
                "1h",
                "--max-devices",
                "8",
            ],
            4,
        ),
        (["plan", "size", "--budget-flops", "1e21"], 0),
        (["plan", "size"], 2),
        (["models", "show", "llama-9"], 2),
    ],
)
def test_exit_codes_are_the_same_in_table_and_json_mode(args: list[str], code: int):
    table = run(*args)
    as_json = run(*args, "--json")
    assert table.exit_code == as_json.exit_code == code, (table.output, as_json.output)
    if code in (0, 4):
        json.loads(as_json.stdout)  # one JSON object, also when nothing is feasible


# ------------------------------------------------------------------------------------ readable when piped


def test_piped_tables_never_cut_an_id_or_a_number():
    result = run("models", "list", env={"COLUMNS": "80"})
    ids = [m["id"] for m in json.loads(run("models", "list", "--json").stdout)["models"]]
    assert "…" not in result.stdout
    for model_id in ids:
        assert model_id in result.stdout, model_id
    devices = run("catalog", "devices", env={"COLUMNS": "80"}).stdout
    assert "…" not in devices and "mi355x" in devices


def test_csv_on_every_table_command():
    import typer

    from flopwise.cli.reference import _walk

    root = typer.main.get_command(app)
    for path, cmd in _walk(root, ("flopwise",)):
        options = {o for p in cmd.params for o in getattr(p, "opts", [])}
        if "--json" in options:
            assert "--csv" in options, " ".join(path)
    out = run("catalog", "devices", "--kind", "tpu", "--csv").stdout
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][0] == "id" and {r[0] for r in rows[1:]} >= {"tpu-v5e", "tpu-v5p"}
    assert all(len(r) == len(rows[0]) for r in rows)
    both = run("catalog", "devices", "--csv", "--json")
    assert both.exit_code == 2 and "give one of them" in one_error_line(both)


def test_what_the_fuzzer_found_stays_fixed(tmp_path: Path):
    """Inputs the generated bad-input test (test_fuzz_cli.py) turned up, each once a traceback."""
    env = {"FLOPWISE_URL": "http://127.0.0.1:9", "FLOPWISE_DATABASE_URL": f"sqlite:///{tmp_path / 'f.db'}"}
    cases = [
        (["token", "create", "--token", "\x80"], 2),  # httpx cannot encode the header
        (["request", "create", "--workload", "serve", "--device", "h100", "--idempotency-key", "Åx"], 2),
        (["catalog", "regions", "--catalog", "x" * 300], 1),  # a name too long for the file system
        (["report", "export-focus", ""], 2),
        (["report", "export-focus", str(tmp_path / "no" / "such" / "dir.csv")], 2),
    ]
    for args, code in cases:
        result = run(*args, env=env)
        assert result.exit_code == code, (args, result.output)
        one_error_line(result)


def test_catalog_refresh_into_a_file_is_bad_input_not_a_traceback(tmp_path: Path):
    """Found by the fuzz test: ``--catalog`` naming an existing file raised FileExistsError from mkdir."""
    target = tmp_path / "not-a-dir"
    target.write_text("x", encoding="utf-8")
    result = run("catalog", "refresh", "--catalog", str(target))
    assert result.exit_code == 2
    assert "is a file; give a catalog directory" in result.stderr


def test_batch_beyond_the_engines_sequence_limit_is_bad_input():
    """llama.cpp's server runs at most 512 slots (engines.csv max_seqs_limit): a bigger batch is refused."""
    result = run("estimate", "serve", "-m", "llama-3.2-1b", "-d", "h100", "--engine", "llama.cpp",
                 "--quant", "Q4_K_M", "--batch", "600")  # fmt: skip
    assert result.exit_code == 2
    assert "runs at most 512 concurrent sequences" in result.stderr


def test_serve_under_load_options():
    """estimate serve --rps / --concurrency: TPOT under load; bad combinations are bad input (exit 2)."""
    ok = run(*SERVE, "--engine", "vllm", "--rps", "8", "--json")
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert data["arrival_rps"] == pytest.approx(8.0) and data["running_batch"] > 1
    assert data["tpot_ms"] > json.loads(run(*SERVE, "--engine", "vllm", "--json").stdout)["tpot_ms"]
    closed = run(*SERVE, "--concurrency", "16", "--json")
    assert closed.exit_code == 0 and json.loads(closed.stdout)["concurrency"] == 16
    for args, field in (
        (("--rps", "4", "--concurrency", "4"), "--concurrency"),
        (("--rps", "0"), "--rps"),
        (("--concurrency", "0"), "--concurrency"),
        (("--rps", "4", "--batch", "8"), "--batch"),
    ):
        bad = run(*SERVE, *args)
        assert bad.exit_code == 2, (args, bad.output)
        assert field in one_error_line(bad), bad.stderr
