"""Engine profiles: the built-in rows, user overrides from a catalog directory, names and support checks."""

import pytest

from flopwise.catalog import load_catalog
from flopwise.catalog.engines import (
    ENGINE_COLUMNS,
    check_engine_supports,
    get_engine,
    load_engines,
    read_engine_devices,
)
from flopwise.catalog.loader import BUILTIN_DATA_DIR
from flopwise.errors import CatalogFileError, InputError, UnsupportedError

REQUIRED = ("generic", "llama.cpp", "ollama", "vllm", "sglang", "trt-llm", "mlc", "exllama")


def test_builtin_profiles_have_sources():
    engines = load_engines()
    assert set(REQUIRED) <= set(engines)
    for engine in engines.values():
        assert engine.provenance["source_url"].startswith("https://")
        assert engine.default_max_seqs <= engine.max_seqs_limit


def test_aliases_and_suggestions():
    assert get_engine("TensorRT-LLM").id == "trt-llm"
    assert get_engine(None).id == "generic"
    with pytest.raises(InputError, match="did you mean 'vllm'"):
        get_engine("vlmm")


def test_unsupported_combinations_name_what_is_supported():
    cat = load_catalog()
    with pytest.raises(UnsupportedError, match="cannot load 'q4_k_m'.*supports bf16"):
        check_engine_supports(get_engine("trt-llm"), cat.device("h100-sxm"), "q4_k_m")
    with pytest.raises(UnsupportedError, match="no 'fp8' KV cache"):
        check_engine_supports(get_engine("llama.cpp"), cat.device("h100-sxm"), "q4_0", "fp8")
    apple = next(d for d in cat.devices.values() if d.kind == "soc")
    with pytest.raises(UnsupportedError, match="does not run on soc"):
        check_engine_supports(get_engine("vllm"), apple, "bf16")


def _write(path, rows):
    path.write_text(",".join(ENGINE_COLUMNS) + "\n" + "\n".join(rows) + "\n", encoding="utf-8")


def test_user_file_overrides_and_adds(tmp_path):
    row = (
        "myengine,,My engine,vllm,gpu,nvidia,bf16|fp8,bf16|fp8,tensor,0.7,0.5,2e-5,no,0.85,total,2,64,128,16,4096,yes,"
        "https://example.org/engine,2026-12-01,measured,"
    )
    override = row.replace("myengine,,My engine", "vllm,,vLLM tuned")
    _write(tmp_path / "engines.csv", [row, override])
    engines = load_engines(tmp_path)
    assert engines["myengine"].max_seqs_limit == 128
    assert engines["vllm"].name == "vLLM tuned" and engines["vllm"].memory_utilization_frac == 0.85
    assert "trt-llm" in engines
    # a replaced engine's own efficiency holds on every vendor: the built-in backend rows were fitted to the old one
    assert engines["vllm"].compute_efficiency_by_vendor == {}
    assert engines["vllm"].compute_efficiency_for("amd") == 0.5


def test_bad_user_row_names_line_and_field(tmp_path):
    row = (
        "bad,,Bad,vllm,gpu,nvidia,bf16|q9_z,bf16,tensor,0.7,0.5,2e-5,no,0.85,total,2,64,128,16,4096,yes,"
        "https://example.org/engine,2026-12-01,measured,"
    )
    _write(tmp_path / "engines.csv", [row])
    with pytest.raises(CatalogFileError, match=r"engines.csv:2: field 'weight_formats'"):
        load_engines(tmp_path)


ENGINE_DEVICE_HEAD = "engine,device_id,runs,reason,source_url,retrieved,basis,note"


def test_builtin_engine_device_rows_name_real_engines_and_devices():
    cat = load_catalog()
    engines = load_engines()
    rules = read_engine_devices(BUILTIN_DATA_DIR / "engine_devices.csv")
    assert rules
    for (engine_id, device_id), (runs, reason, _path, line) in rules.items():
        assert engine_id in engines, line
        assert device_id in cat.devices, line
        engine, device = engines[engine_id], cat.devices[device_id]
        # a row only narrows engines.csv: the engine's kinds and vendors include the device
        assert device.kind in engine.device_kinds, line
        assert "*" in engine.vendors or device.vendor.lower() in engine.vendors, line
        assert runs or reason, line


def test_t4g_arm_host_gets_only_engines_that_run_there():
    """AWS G5g: a Turing T4G on a Graviton2 (Arm) host. TensorRT-LLM (built for Ampere and later) and current
    SGLang (kernels for sm_80 and later) are refused with their reasons; vLLM (compute capability 7.0+, arm64 CUDA
    image) and llama.cpp run."""
    cat = load_catalog()
    t4g = cat.device("t4g")
    with pytest.raises(UnsupportedError, match=r"'trt-llm' does not run on 't4g': .*Turing"):
        check_engine_supports(get_engine("trt-llm"), t4g, "fp16")
    with pytest.raises(UnsupportedError, match=r"'sglang' does not run on 't4g': .*sm_80"):
        check_engine_supports(get_engine("sglang"), t4g, "fp16")
    for engine in ("vllm", "llama.cpp", "generic"):
        check_engine_supports(get_engine(engine), t4g, "fp16")
    # the same rules for the x86 T4, and vLLM's compute-capability floor for Pascal and Kepler
    for engine in ("trt-llm", "sglang"):
        with pytest.raises(UnsupportedError, match="Turing"):
            check_engine_supports(get_engine(engine), cat.device("t4"), "fp16")
    for device_id in ("p100-pcie-16gb", "tesla-p4", "tesla-k80-gk210", "tesla-m60-gm204"):
        with pytest.raises(UnsupportedError, match="compute capability 7.0"):
            check_engine_supports(get_engine("vllm"), cat.device(device_id), "fp16")
    check_engine_supports(get_engine("vllm"), cat.device("v100-sxm2-16gb"), "fp16")
    check_engine_supports(get_engine("sglang"), cat.device("a10g"), "bf16")  # Ampere: no row, runs


def test_user_engine_devices_override_and_add(tmp_path):
    (tmp_path / "engine_devices.csv").write_text(
        ENGINE_DEVICE_HEAD + "\n"
        "trt-llm,t4,yes,,https://example.org/built-it,2026-12-01,measured,built and run on a T4 here\n"
        "llama.cpp,l4,no,not allowed on this site,https://example.org/policy,2026-12-01,datasheet,\n",
        encoding="utf-8",
    )
    engines = load_engines(tmp_path)
    cat = load_catalog()
    check_engine_supports(engines["trt-llm"], cat.device("t4"), "fp16")
    with pytest.raises(UnsupportedError, match="'trt-llm' does not run on 't4g'"):
        check_engine_supports(engines["trt-llm"], cat.device("t4g"), "fp16")  # built-in rows stay
    with pytest.raises(UnsupportedError, match="not allowed on this site"):
        check_engine_supports(engines["llama.cpp"], cat.device("l4"), "q4_0")
    assert "t4" in load_engines()["trt-llm"].unsupported_devices  # the built-in cache is not touched


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("trt-llm,t4,maybe,,https://example.org/x,2026-12-01,datasheet,", "runs"),
        ("trt-llm,t4,no,,https://example.org/x,2026-12-01,datasheet,", "reason"),
        ("trtllm2,t4,no,old,https://example.org/x,2026-12-01,datasheet,", "engine"),
        ("trt-llm,,no,old,https://example.org/x,2026-12-01,datasheet,", "device_id"),
        ("trt-llm,t4,no,old,,2026-12-01,datasheet,", "source_url"),
    ],
)
def test_bad_engine_device_row_names_line_and_field(tmp_path, row, field):
    (tmp_path / "engine_devices.csv").write_text(ENGINE_DEVICE_HEAD + "\n" + row + "\n", encoding="utf-8")
    with pytest.raises(CatalogFileError, match=rf"engine_devices.csv:2: field '{field}'"):
        load_engines(tmp_path)


def test_openvino_runs_on_amd_cpus_not_amd_gpus():
    """engines.csv lists vendor amd for OpenVINO's CPU plugin; its GPU plugin is Intel-only, so every AMD GPU has
    a runs = no row."""
    cat = load_catalog()
    openvino = get_engine("openvino")
    check_engine_supports(openvino, cat.device("epyc-9654"), "int8")
    amd_gpus = [d for d in cat.devices.values() if d.vendor == "amd" and d.kind == "gpu"]
    assert amd_gpus
    for device in amd_gpus:
        with pytest.raises(UnsupportedError, match="Intel GPUs only"):
            check_engine_supports(openvino, device, "int8")


ENGINE_BACKEND_HEAD = "engine,vendor,compute_efficiency_frac,source_url,retrieved,basis,note"


def test_builtin_backend_rows_give_vllm_cuda_and_rocm_their_own_efficiency():
    vllm = load_engines()["vllm"]
    assert set(vllm.compute_efficiency_by_vendor) == {"nvidia", "amd"}
    assert vllm.compute_efficiency_for("AMD") == vllm.compute_efficiency_by_vendor["amd"]
    assert (
        vllm.compute_efficiency_for("intel") == vllm.compute_efficiency_frac
    )  # no fit of its own: the pooled one
    assert vllm.compute_efficiency_by_vendor["amd"] < vllm.compute_efficiency_by_vendor["nvidia"]
    assert load_engines()["trt-llm"].compute_efficiency_by_vendor == {}
    assert vllm.with_compute_efficiency(0.5).compute_efficiency_for("amd") == 0.5


def test_serving_rates_use_the_device_vendors_efficiency():
    from flopwise.estimate.quant import get_quant
    from flopwise.estimate.serve import serving_rates

    cat = load_catalog()
    vllm = get_engine("vllm")
    h100 = serving_rates(get_quant("bf16"), cat.device("h100-sxm"), 32, vllm)
    mi300x = serving_rates(get_quant("bf16"), cat.device("mi300x"), 32, vllm)
    assert h100.compute_efficiency_frac == pytest.approx(vllm.compute_efficiency_by_vendor["nvidia"])
    assert mi300x.compute_efficiency_frac == pytest.approx(vllm.compute_efficiency_by_vendor["amd"])


def test_user_engine_backends_override_and_add(tmp_path):
    (tmp_path / "engine_backends.csv").write_text(
        ENGINE_BACKEND_HEAD + "\n"
        "vllm,amd,0.4,https://example.org/our-rocm-runs,2026-12-01,measured,our MI300X runs\n"
        "sglang,amd,0.3,https://example.org/our-rocm-runs,2026-12-01,measured,\n",
        encoding="utf-8",
    )
    engines = load_engines(tmp_path)
    assert engines["vllm"].compute_efficiency_for("amd") == 0.4
    assert engines["vllm"].compute_efficiency_for("nvidia") == load_engines()["vllm"].compute_efficiency_for(
        "nvidia"
    )
    assert engines["sglang"].compute_efficiency_for("amd") == 0.3
    assert engines["sglang"].compute_efficiency_for("nvidia") == engines["sglang"].compute_efficiency_frac
    assert load_engines()["sglang"].compute_efficiency_by_vendor == {}  # the built-in cache is not touched


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("vllm,amd,1.5,https://example.org/x,2026-12-01,measured,", "compute_efficiency_frac"),
        ("vllm,amd,,https://example.org/x,2026-12-01,measured,", "compute_efficiency_frac"),
        ("vlm,amd,0.3,https://example.org/x,2026-12-01,measured,", "engine"),
        ("vllm,,0.3,https://example.org/x,2026-12-01,measured,", "vendor"),
        ("trt-llm,amd,0.3,https://example.org/x,2026-12-01,measured,", "vendor"),
        ("vllm,amd,0.3,,2026-12-01,measured,", "source_url"),
    ],
)
def test_bad_engine_backend_row_names_line_and_field(tmp_path, row, field):
    (tmp_path / "engine_backends.csv").write_text(ENGINE_BACKEND_HEAD + "\n" + row + "\n", encoding="utf-8")
    with pytest.raises(CatalogFileError, match=rf"engine_backends.csv:2: field '{field}'"):
        load_engines(tmp_path)
