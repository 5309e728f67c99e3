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


TRAIN_KEYS = {
    "flops",
    "device_hours",
    "wall_clock_hours",
    "memory_per_device_gb",
    "fits",
    "energy_kwh",
    "co2e_kg",
    "cost_usd",
}
SERVE_KEYS = {
    "memory_gb",
    "fits",
    "ttft_ms",
    "tpot_ms",
    "decode_tokens_per_s",
    "prefill_tokens_per_s",
    "energy_per_1m_tokens_kwh",
    "cost_per_1m_tokens_usd",
}


def test_estimate_train_json_has_the_documented_keys():
    data = invoke_json(
        "estimate",
        "train",
        "--model",
        "meta-llama/Llama-3.1-70B",
        "--tokens",
        "15T",
        "--device",
        "H100",
        "--count",
        "1024",
        "--pricing",
        "on-demand",
    )
    assert data.keys() >= TRAIN_KEYS
    assert data["fits"] is True  # the automatic layout shards 70B over 1024 devices
    assert "layout" in data["assumptions"]
    # 6 N D alone is 6.3e24 for 70.6B params x 15T tokens; attention adds a few percent
    assert 6.3e24 <= data["flops"] <= 7.0e24
    assert float(data["cost_usd"]) > 0  # money is a decimal string
    assert data["device"] == "h100-sxm"


def test_estimate_train_names_resolve_to_the_same_model():
    a = invoke_json(
        "estimate",
        "train",
        "--model",
        "Llama 3.1 8B",
        "--tokens",
        "1T",
        "--device",
        "h100-sxm",
        "--count",
        "8",
    )
    b = invoke_json(
        "estimate", "train", "--model", "llama-3.1-8b", "--tokens", "1T", "--device", "H100", "--count", "8"
    )
    assert a["flops"] == b["flops"] and a["model"] == b["model"] == "llama-3.1-8b"


def test_estimate_serve_json_has_the_documented_keys():
    data = invoke_json("estimate", "serve", "--model", "llama-3.1-8b", "--device", "L4", "--quant", "Q4_K_M")
    assert data.keys() >= SERVE_KEYS
    assert data["fits"] is True
    assert data["tpot_ms"] > 0 and data["ttft_ms"] > 0


@pytest.mark.parametrize(
    ("typed", "bpw"), [("F16", 16.0), ("BF16", 16.0), ("Q4_K_S", 4.58), ("IQ4_XS", 4.25), ("Q5_K_M", 5.68), ("Q8_0", 8.5)]
)
def test_estimate_serve_takes_gguf_names_llama_cpp_users_type(typed, bpw):
    data = invoke_json("estimate", "serve", "--model", "llama-3.1-8b", "--device", "L4", "--quant", typed)
    assert data["memory"]["assumptions"]["bits_per_weight"] == bpw


def test_estimate_serve_apple_and_onprem():
    data = invoke_json(
        "estimate",
        "serve",
        "--model",
        "llama-3.1-8b",
        "--device",
        "Apple M2 Max (38-core GPU)",
        "--quant",
        "Q4_K_M",
        "--pricing",
        "onprem",
    )
    assert data["device"] == "apple-m2-max-38c"
    assert data["price"]["pricing"] == "onprem"


def test_estimate_serve_table():
    result = invoke("estimate", "serve", "--model", "qwen3-32b", "--device", "h100", "--quant", "fp8")
    assert result.exit_code == 0, result.output
    assert "time per output token" in result.stdout


def test_estimate_serve_from_hf_config(tmp_path):
    config = {
        "model_type": "llama",
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": True,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    data = invoke_json("estimate", "serve", "--model", str(path), "--device", "rtx-4090")
    assert data["fits"] is True


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "llama-9000"], "Unknown model"),
        (["--device", "h10-sxm"], "Unknown device"),
        (["--quant", "Q9_K"], "quant"),
        (["--batch", "0"], "batch"),
        (["--quant", "nvfp4", "--device", "a100"], "nvfp4"),
        (["--pricing", "spot", "--device", "rtx-4090"], "spot"),
        (["--region", "mars-1"], "region"),
    ],
)
def test_estimate_serve_bad_input(args, needle):
    base = {"--model": "llama-3.1-8b", "--device": "L4"}
    flags = dict(zip(args[::2], args[1::2], strict=True))
    merged = {**base, **flags}
    result = invoke("estimate", "serve", *[x for kv in merged.items() for x in kv])
    assert result.exit_code == 2, result.output
    assert needle.lower() in result.stderr.lower()
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) <= 3


def test_estimate_config_with_missing_field(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096}))
    result = invoke("estimate", "serve", "--model", str(path), "--device", "L4")
    assert result.exit_code == 2
    assert "config.json" in result.stderr


def test_validate_reports_categories():
    data = invoke_json("validate")
    cats = {c["category"] for c in data["categories"]}
    assert {"train_device_hours", "decode_tokens_per_s"} <= cats
    assert data["within_bounds"] is True
