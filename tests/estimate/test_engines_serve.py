"""estimate_serve with engine profiles: layer split, memory budgets, batch caps, FP8 KV, FP4, roofline."""

import numpy as np
import pytest

from flopwise.catalog import load_catalog
from flopwise.errors import UnsupportedError
from flopwise.estimate import estimate_serve
from flopwise.models import load_models, resolve_model


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def model(name):
    return resolve_model(name, load_models())[0]


def test_generic_is_the_default(cat):
    m, d = model("llama-3.1-8b"), cat.device("h100-sxm")
    a = estimate_serve(m, d, batch=4)
    b = estimate_serve(m, d, batch=4, engine="generic")
    assert a.tpot_ms == b.tpot_ms and a.memory_gb == b.memory_gb
    assert a.assumptions["engine"] == "generic"


def test_llama_cpp_layer_split_is_not_tensor_parallel(cat):
    m, d = model("llama-3.1-70b"), cat.device("rtx-4090")
    one = estimate_serve(m, cat.device("a100-sxm-80gb"), quant="q4_k_m", engine="llama.cpp")
    split = estimate_serve(m, d, device_count=2, quant="q4_k_m", engine="llama.cpp")
    tp = estimate_serve(m, d, device_count=2, quant="q4_k_m")  # generic: tensor parallel
    # the two GPUs of a layer split work in turn: each step reads all weights at one GPU's bandwidth
    assert split.tpot_ms > 1.4 * tp.tpot_ms
    assert split.memory.weights_bytes == pytest.approx(tp.memory.weights_bytes)
    assert split.assumptions["engine_multi_device"] == "layer" and one.fits


def test_trt_llm_budgets_free_memory_so_70b_fp8_batches_on_one_h100(cat):
    m, d = model("llama-3.3-70b"), cat.device("h200")
    vllm = estimate_serve(m, d, quant="fp8", kv_dtype="fp8", engine="vllm", input_tokens=128, output_tokens=128)
    trt = estimate_serve(m, d, quant="fp8", kv_dtype="fp8", engine="trt-llm", input_tokens=128, output_tokens=128)
    assert trt.max_batch > vllm.max_batch >= 1
    assert trt.saturation_tokens_per_s > trt.output_tokens_per_s  # batch 1 is far from saturation


def test_fp8_kv_doubles_the_batch_memory_holds(cat):
    m, d = model("llama-3.1-8b"), cat.device("h100-sxm")
    kw = dict(engine="vllm", input_tokens=4096, output_tokens=4096)
    bf16 = estimate_serve(m, d, kv_dtype="bf16", **kw)
    fp8 = estimate_serve(m, d, kv_dtype="fp8", **kw)
    assert fp8.max_batch == pytest.approx(2 * bf16.max_batch, rel=0.05)
    assert fp8.memory.kv_cache_bytes == pytest.approx(bf16.memory.kv_cache_bytes / 2)


def test_batch_cap_comes_from_the_engine(cat):
    m, d = model("llama-3.2-1b"), cat.device("b200")
    assert estimate_serve(m, d, engine="vllm", input_tokens=128, output_tokens=128).max_batch == 1024
    assert estimate_serve(m, d, engine="trt-llm", input_tokens=128, output_tokens=128).max_batch == 4096


def test_decode_crosses_the_roofline_with_batch(cat):
    m, d = model("llama-3.1-8b"), cat.device("h100-sxm")
    est = estimate_serve(m, d, quant="fp8", engine="trt-llm", batch=np.array([1, 2048]), input_tokens=128,
                         output_tokens=128)  # fmt: skip
    bound = est.assumptions["decode_is_memory_bound"]
    assert bool(bound[0]) and not bool(bound[1])


def test_nvfp4_needs_blackwell(cat):
    m = model("llama-3.3-70b")
    est = estimate_serve(m, cat.device("b200"), quant="nvfp4", engine="trt-llm")
    assert est.assumptions["compute_dtype"] == "fp4"
    with pytest.raises(UnsupportedError, match="fp4"):
        estimate_serve(m, cat.device("h100-sxm"), quant="nvfp4", engine="trt-llm")


def test_gguf_on_trt_llm_is_an_error(cat):
    with pytest.raises(UnsupportedError, match="engine 'trt-llm' cannot load 'q4_k_m' weights; it supports"):
        estimate_serve(model("llama-3.1-8b"), cat.device("h100-sxm"), quant="q4_k_m", engine="trt-llm")


def test_engine_without_cases_warns(cat):
    est = estimate_serve(model("llama-3.1-8b"), cat.device("h100-sxm"), quant="fp16", engine="mlc")
    assert any("no published case covers engine 'mlc'" in w for w in est.warnings)


def test_low_precision_compute_scale_is_amdahl_from_the_fp8_scale():
    from flopwise.estimate import timing as tm

    assert tm.low_precision_compute_scale("fp8") == pytest.approx(tm.FP8_MFU_SCALE, rel=1e-12)
    fp4 = tm.low_precision_compute_scale("fp4")
    # only the GEMM share of the step speeds up: 4x peak gives well under 4x throughput, but more than fp8's 2x share
    assert 0.3 < fp4 < tm.FP8_MFU_SCALE
    assert 4 * fp4 > 2 * tm.FP8_MFU_SCALE  # fp4 still beats fp8
    assert tm.low_precision_compute_scale("bf16") == 1.0 and tm.low_precision_compute_scale("int8") == 1.0


def test_nvfp4_compute_share_on_b200(cat):
    from flopwise.estimate import timing as tm

    m, d = model("llama-3.3-70b"), cat.device("b200")
    est = estimate_serve(m, d, engine="trt-llm", quant="nvfp4", kv_dtype="fp8", batch=64, input_tokens=2048)
    a = est.assumptions
    assert a["compute_dtype"] == "fp4"
    eta = float(a["compute_efficiency_frac"])
    from flopwise.catalog.engines import get_engine

    fitted = get_engine("trt-llm").compute_efficiency_frac
    assert eta == pytest.approx(fitted * tm.low_precision_compute_scale("fp4"), rel=1e-9)


def test_prefill_steps_pay_the_eager_launch_time_where_decode_uses_graphs(cat):
    from flopwise.estimate import timing as tm

    m, d = model("llama-3.1-8b"), cat.device("h100-sxm")
    est = estimate_serve(m, d, engine="trt-llm", quant="fp8", kv_dtype="fp8", input_tokens=128, output_tokens=1)
    a = est.assumptions
    assert a["prefill_step_overhead_s"] == pytest.approx(m.n_layers * tm.DECODE_LAYER_OVERHEAD_S["gpu"])
    assert a["step_overhead_s"] < a["prefill_step_overhead_s"]  # decode: CUDA graphs (1e-5 s per layer)
    # llama.cpp's own per-layer time is the eager value already: nothing changes for it
    cpp = estimate_serve(m, d, engine="llama.cpp", quant="q4_0", input_tokens=128, output_tokens=1)
    assert cpp.assumptions["prefill_step_overhead_s"] == pytest.approx(cpp.assumptions["step_overhead_s"])


def test_vllm_and_sglang_on_gpus_are_covered_by_published_cases(cat):
    m, d = model("llama-3.1-8b"), cat.device("h100-sxm")
    for eng in ("vllm", "sglang", "trt-llm"):
        est = estimate_serve(m, d, engine=eng)
        assert not any("no published case covers" in w for w in est.warnings), eng
    est = estimate_serve(m, d, engine="mlc")
    assert any("no published case covers engine 'mlc'" in w for w in est.warnings)
