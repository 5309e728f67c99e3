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
