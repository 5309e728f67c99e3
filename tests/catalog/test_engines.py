"""Engine profiles: the built-in rows, user overrides from a catalog directory, names and support checks."""

import pytest

from flopwise.catalog import load_catalog
from flopwise.catalog.engines import ENGINE_COLUMNS, check_engine_supports, get_engine, load_engines
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


def test_bad_user_row_names_line_and_field(tmp_path):
    row = (
        "bad,,Bad,vllm,gpu,nvidia,bf16|q9_z,bf16,tensor,0.7,0.5,2e-5,no,0.85,total,2,64,128,16,4096,yes,"
        "https://example.org/engine,2026-12-01,measured,"
    )
    _write(tmp_path / "engines.csv", [row])
    with pytest.raises(CatalogFileError, match=r"engines.csv:2: field 'weight_formats'"):
        load_engines(tmp_path)
