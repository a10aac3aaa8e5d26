"""benchmarks/gpu_check.py on CPU (--smoke): the JSON it writes and the math-vs-sdpa parity it measures.

The CUDA paths (fp16, xformers, compiled flex, H200 MFU, the digits suite on the GPU) cannot run here;
the smoke run checks the machinery and the report's keys.
"""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from benchmarks.gpu_check import run

    out = tmp_path_factory.mktemp("gpu_check")
    res = run(device="cpu", out=out, smoke=True, threads=1)
    return out, res


def test_smoke_writes_json_and_markdown_with_the_expected_keys(smoke):
    out, res = smoke
    doc = json.loads((out / "gpu_check.json").read_text())
    assert {"attention_parity", "train_step", "digits_quick", "peak_tflops", "peak_source", "device", "torch",
            "threads", "wall_s", "budget_s", "dtypes"} <= set(doc)
    assert doc["device"] == "cpu" and doc["smoke"] is True and doc["threads"] == 1
    assert doc["digits_quick"] == {"status": "skipped", "reason": "--smoke"}
    assert {"math", "sdpa", "xformers", "flex"} <= set(doc["attention_parity"])
    (step,) = doc["train_step"]
    assert step["loss_finite"] and step["flops_per_step"] > 0 and step["steps_per_s"] > 0 and 0 < step["mfu"]
    md = (out / "gpu_check.md").read_text()
    assert "Attention parity" in md and "bf16 train step" in md and "skipped: --smoke" in md


def test_smoke_parity_math_vs_sdpa_on_cpu(smoke):
    _, res = smoke
    par = res["attention_parity"]
    for shape in ("spatial", "temporal_causal"):
        f32 = par["sdpa"]["float32"][shape]
        assert f32["status"] == "ok"
        for key in ("fwd", "dq", "dk", "dv"):
            assert f32[f"max_abs_err_{key}_vs_math"] < 1e-5
        bf = par["sdpa"]["bfloat16"][shape]
        for key in ("fwd", "dq", "dk", "dv"):
            assert bf[f"max_abs_err_{key}_vs_math"] < 0.1  # bf16 has 8 mantissa bits; values are O(1)
        assert par["math"]["float32"][shape]["max_abs_err_fwd_vs_math"] == 0.0


def test_unavailable_kernels_are_skipped_with_the_reason(smoke):
    _, res = smoke
    xf = res["attention_parity"]["xformers"]["float32"]
    assert xf["status"] == "skipped" and xf["reason"]  # not installed, or no CPU operator
    flex = res["attention_parity"]["flex"]["float32"]
    for cell in flex.values() if "status" not in flex else []:
        assert "backward" in cell and "CUDA" in cell["backward"]  # forward only on CPU


def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path, monkeypatch):
    import torch

    from benchmarks.gpu_check import run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="--device cpu --smoke"):
        run(device="cuda", out=tmp_path)
