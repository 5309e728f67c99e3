"""flopwise.estimate_training: the automatic device count and layout, and the recompute the caller gives."""

import json

import pytest
from typer.testing import CliRunner

import flopwise
from flopwise.cli.main import app


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_given_recompute_is_kept_on_one_device(recompute):
    # regression: recompute="none" with no ZeRO/TP/PP raised "cannot unpack non-iterable NoneType"
    report = flopwise.estimate_training("llama-3.2-1b", "h100-sxm", tokens=1e9, device_count=1, recompute=recompute)
    data = report.to_dict()
    assert data["assumptions"]["recompute"] == recompute
    assert f"recompute {recompute}" in data["assumptions"]["layout"]


def test_given_recompute_none_on_several_devices():
    data = flopwise.estimate_training(
        "llama-3.1-8b", "h100-sxm", tokens=1e9, device_count=8, recompute="none"
    ).to_dict()
    assert data["fits"] is True and data["assumptions"]["recompute"] == "none"


def test_no_count_picks_the_fewest_devices_that_fit_and_says_so():
    data = flopwise.estimate_training("llama-3.1-70b", "h100-sxm", tokens=1e9).to_dict()
    n = int(data["assumptions"]["device_count"])
    assert data["fits"] is True
    assert n > 1 and n & (n - 1) == 0  # a power of two
    assert f"{n} x h100-sxm" in data["assumptions"]["device_count_choice"]
    half = flopwise.estimate_training("llama-3.1-70b", "h100-sxm", tokens=1e9, device_count=n // 2).to_dict()
    assert half["fits"] is False  # n is the fewest


def test_no_silent_switch_to_full_recompute():
    # one device that holds 8B only with full recomputation: chosen, but the layout note says why and what it costs
    data = flopwise.estimate_training("llama-3.1-8b", "h200", tokens=1e9, device_count=1, seq_len=8192).to_dict()
    layout = data["assumptions"]["layout"]
    if data["assumptions"]["recompute"] == "full":
        assert "no layout with selective recomputation fits" in layout
    else:
        assert "full recomputation" not in layout
    # with no count, selective recomputation fits on more devices and is preferred
    auto = flopwise.estimate_training("llama-3.1-8b", "h100-sxm", tokens=1e9, seq_len=8192).to_dict()
    assert auto["fits"] is True and auto["assumptions"]["recompute"] == "selective"


def test_cli_train_without_count_names_the_choice():
    result = CliRunner().invoke(
        app,
        ["estimate", "train", "--model", "llama-3.1-70b", "--tokens", "1B", "--device", "h100-sxm", "--json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert "device_count_choice" in data["assumptions"] and data["fits"] is True


def test_steady_state_and_goodput_are_reported():
    base = flopwise.estimate_training("llama-3.1-70b", "h100-sxm", tokens=15e12, device_count=1024).to_dict()
    assert 0.38 <= base["steady_state_mfu_frac"] <= 0.46  # MosaicML / Llama 3 steady-state range on H100
    assert base["steady_state_tflop_per_s_per_device"] > 350
    assert 0 < base["goodput_frac"] < 1 and base["mfu_frac"] < base["steady_state_mfu_frac"]
    good = flopwise.estimate_training(
        "llama-3.1-70b", "h100-sxm", tokens=15e12, device_count=1024, goodput_frac=0.9
    ).to_dict()
    assert good["goodput_frac"] == pytest.approx(0.9, rel=1e-3)
    assert good["steady_state_tokens_per_s_per_device"] == base["steady_state_tokens_per_s_per_device"]
    assert good["device_hours"] < base["device_hours"]


def test_goodput_and_mfu_together_is_an_error():
    with pytest.raises(flopwise.errors.InputError, match="goodput_frac"):
        flopwise.estimate_training(
            "llama-3.1-8b", "h100-sxm", tokens=1e9, device_count=8, mfu_frac=0.4, goodput_frac=0.9
        )
