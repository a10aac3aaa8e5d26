"""bf16 autocast on CPU: the ``attention: auto`` route the engine's train.bf16 path takes, and the
speed suite's bf16-vs-fp32 figures (machinery only; no timing is asserted)."""

from __future__ import annotations

import pytest
import torch

from fvdm.core.attention import CPU_HALF_MATH_MAX_KEYS, select_attention_kernel
from fvdm.core.plugins import load_plugins


@pytest.fixture(scope="module")
def P():
    return load_plugins()


def _qkv(n: int, dtype=torch.bfloat16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, n, 2, 16, generator=g).to(dtype).requires_grad_() for _ in range(3)]


@pytest.mark.parametrize("n, route", [(CPU_HALF_MATH_MAX_KEYS, "math"), (CPU_HALF_MATH_MAX_KEYS + 1, "sdpa(fp32)")])
@pytest.mark.parametrize("causal", [False, True])
def test_auto_cpu_bf16_routes_by_length_and_matches_fp32(P, n, route, causal):
    kern = select_attention_kernel(P, "auto", device="cpu", dtype=torch.bfloat16)
    q, k, v = _qkv(n)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = kern(q, k, v, causal=causal)
    assert kern.last_used == route and out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    ref_in = [t.detach().float().requires_grad_() for t in (q, k, v)]
    ref = P["attention_kernels"].get("math").obj(*ref_in, causal=causal)
    ref.square().sum().backward()
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    for a, b in zip((q, k, v), ref_in):
        assert (a.grad.float() - b.grad).abs().max() <= 0.05 * b.grad.abs().max() + 0.05


def test_explicit_sdpa_and_fp32_are_left_alone(P):
    kern = select_attention_kernel(P, "sdpa", device="cpu", dtype=torch.bfloat16)
    kern(*_qkv(8))
    assert kern.last_used == "sdpa"  # only `auto` picks per length; a named kernel runs as named
    auto = select_attention_kernel(P, "auto", device="cpu", dtype=torch.float32)
    auto(*_qkv(8, torch.float32))
    assert auto.last_used == "sdpa"


def test_overhead_benchmark_reports_bf16_vs_fp32():
    from benchmarks.train_step_overhead import run

    res = run(quick=True, threads=1, reps=1, model="latte_tiny")
    b = res["bf16"]
    assert set(res["median_s"]) == {"scalar", "per_frame", "per_token"}  # fp32 overhead figures unchanged
    assert {"ratio_bf16_vs_fp32", "paired_ratio_bf16_vs_fp32", "ratio_bf16_vs_public_style_fp32",
            "bf16_matmul_peak_flops", "mfu_vs_bf16_peak", "cpu_flags", "attention"} <= set(b)
    assert b["ratio_bf16_vs_fp32"] > 0 and b["attention"]["requested"] == "auto"
    assert isinstance(b["cpu_flags"]["avx512_bf16"], bool)
    assert "bf16" not in run(quick=True, threads=1, reps=1, model="latte_tiny", bf16=False)
