"""Attention kernels: parity with the math reference, masks, selection and fallback."""

from __future__ import annotations

import importlib.machinery
import sys
import types
import warnings

import numpy as np
import pytest
import torch

from fvdm.core.attention import (
    BlockCausalMask, block_causal_mask, causal_mask, check_qkv, merge_mask, select_attention_kernel,
)
from fvdm.core.errors import PluginUnavailableError, UnknownPluginError
from fvdm.core.hookspecs import hookimpl
from fvdm.core.plugins import load_plugins

XF_MISSING = "not installed; pip install 'fvdm[xformers]'"
XF_NO_CPU = "installed, no CPU operator; needs CUDA"


@pytest.fixture(scope="module")
def P():
    return load_plugins(entry_points=False)


def K(P, name):
    return P["attention_kernels"].get(name).obj


def qkv(b=2, nq=7, h=3, d=8, nk=None, dtype=torch.float32, grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    nk = nq if nk is None else nk
    ts = [torch.randn(b, n, h, d, generator=g, dtype=dtype) for n in (nq, nk, nk)]
    return [t.requires_grad_(grad) for t in ts]


# -- a stand-in xformers (the real one is GPU-only and not installed in CI) ------------------
class _FakeXformers:
    """sys.modules entries for ``xformers`` / ``xformers.ops`` with an independent einsum
    implementation in xformers' (B, M, H, K) layout; records calls and bias alignment."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        pkg = types.ModuleType("xformers")
        pkg.__spec__ = importlib.machinery.ModuleSpec("xformers", None, is_package=True)
        pkg.__path__ = []
        ops = types.ModuleType("xformers.ops")

        class LowerTriangularMask:
            pass

        def memory_efficient_attention(q, k, v, attn_bias=None, p=0.0, scale=None):
            self.calls.append({"bias": type(attn_bias).__name__,
                               "aligned": not isinstance(attn_bias, torch.Tensor) or attn_bias.stride(-2) % 8 == 0})
            scale = q.shape[-1] ** -0.5 if scale is None else scale
            s = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
            if isinstance(attn_bias, LowerTriangularMask):
                s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool).tril(), float("-inf"))
            elif attn_bias is not None:
                s = s + attn_bias
            return torch.einsum("bhqk,bkhd->bqhd", s.softmax(-1), v)

        ops.LowerTriangularMask = LowerTriangularMask
        ops.memory_efficient_attention = memory_efficient_attention
        pkg.ops = ops
        self.pkg, self.ops = pkg, ops


@pytest.fixture
def fake_xformers(monkeypatch):
    fake = _FakeXformers()
    monkeypatch.setitem(sys.modules, "xformers", fake.pkg)
    monkeypatch.setitem(sys.modules, "xformers.ops", fake.ops)
    return fake


@pytest.fixture
def no_xformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "xformers", None)  # import fails, find_spec -> None


# -- the reference itself -------------------------------------------------------------------
def test_registered_kernels(P):
    assert {"math", "sdpa", "xformers", "flex"} <= set(P["attention_kernels"].names())
    assert P["attention_kernels"].build("math") is K(P, "math")


def test_math_matches_numpy_oracle(P):
    q, k, v = (t.double() for t in qkv(b=1, nq=5, h=2, d=3, nk=6))
    bias = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    out = K(P, "math")(q, k, v, mask=bias, scale=0.7).numpy()
    qn, kn, vn, bn = (t.numpy() for t in (q, k, v, bias))
    for h in range(2):
        for i in range(5):
            s = 0.7 * kn[0, :, h] @ qn[0, i, h] + bn[0, h, i]
            w = np.exp(s - s.max())
            np.testing.assert_allclose(out[0, i, h], (w / w.sum()) @ vn[0, :, h], rtol=1e-12, atol=1e-12)


def test_block_causal_mask_helper():
    m = block_causal_mask(3, 2)
    frame = torch.arange(6) // 2
    assert torch.equal(m, frame[None, :] <= frame[:, None])
    assert torch.equal(BlockCausalMask(1).dense(5), causal_mask(5))
    assert m[0, 1] and not m[1, 2] and m[5, 0]


def test_merge_mask_and_qkv_errors():
    with pytest.raises(ValueError, match=r"\(Nq, Nk\) = \(4, 4\)"):
        merge_mask(torch.ones(3, 3, dtype=torch.bool), False, 4, 4, device="cpu", dtype=torch.float32)
    with pytest.raises(TypeError, match="bool"):
        merge_mask(torch.ones(4, 4, dtype=torch.long), False, 4, 4, device="cpu", dtype=torch.float32)
    with pytest.raises(ValueError, match=r"\(B, N, H, D\)"):
        check_qkv(torch.zeros(2, 4, 8), torch.zeros(2, 4, 8), torch.zeros(2, 4, 8))
    bias = torch.zeros(4, 4)
    m = merge_mask(bias, True, 4, 4, device="cpu", dtype=torch.float32)
    assert torch.isinf(m[0, 1]) and m[1, 0] == 0


# -- parity with math -------------------------------------------------------------------------
def _mask(case, b, h, nq, nk):
    g = torch.Generator().manual_seed(1)
    if case == "bool2d":
        return (torch.rand(nq, nk, generator=g) > 0.4) | torch.eye(nq, nk, dtype=torch.bool)
    if case == "bool4d":
        return (torch.rand(b, 1, nq, nk, generator=g) > 0.4) | torch.eye(nq, nk, dtype=torch.bool)
    if case == "additive":
        return torch.randn(b, h, nq, nk, generator=g)
    if case == "block_causal":
        return BlockCausalMask(3)
    return None


CASES = [  # (mask case, causal)
    ("none", False), ("none", True), ("bool2d", False), ("bool4d", True),
    ("additive", False), ("additive", True), ("block_causal", False), ("block_causal", True),
]


def _run(fn, q, k, v, **kw):
    out = fn(q, k, v, **kw)
    if not q.requires_grad:
        return out, ()
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    grads = tuple(t.grad.clone() for t in (q, k, v))
    for t in (q, k, v):
        t.grad = None
    return out.detach(), grads


def _check_parity(P, fn, name, case, causal, grad, n=(13, 13)):
    b, h = 2, 3
    q, k, v = qkv(b=b, nq=n[0], nk=n[1], h=h, d=8, grad=grad)
    kw = {"mask": _mask(case, b, h, *n), "causal": causal, "scale": 0.3 if case == "additive" else None}
    ref, ref_g = _run(K(P, "math"), q, k, v, **kw)
    out, out_g = _run(fn, q, k, v, **kw)
    assert out.shape == (b, n[0], h, 8)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name} forward: {m}")
    for gname, a, r in zip("qkv", out_g, ref_g):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name} d{gname}: {m}")


@pytest.mark.parametrize("grad", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("case,causal", CASES, ids=[f"{c}-{'causal' if z else 'full'}" for c, z in CASES])
@pytest.mark.parametrize("name", ["sdpa", "flex"])
def test_kernel_parity_with_math(P, name, case, causal, grad):
    av = P["attention_kernels"].get(name).availability(device="cpu", dtype=torch.float32, requires_grad=grad)
    if not av:
        pytest.skip(f"{name} not available here: {av.reason}")
    _check_parity(P, K(P, name), name, case, causal, grad)


@pytest.mark.parametrize("name", ["sdpa", "flex"])
@pytest.mark.parametrize("n", [(1, 1), (31, 31), (5, 17)], ids=["n1", "n31", "cross5x17"])
def test_kernel_parity_odd_lengths(P, name, n):
    grad = name == "sdpa"
    av = P["attention_kernels"].get(name).availability(device="cpu", dtype=torch.float32, requires_grad=grad)
    if not av:
        pytest.skip(f"{name} not available here: {av.reason}")
    _check_parity(P, K(P, name), name, "additive" if n[0] != n[1] else "none", n[0] == n[1], grad, n=n)


@pytest.mark.parametrize("case,causal", CASES, ids=[f"{c}-{'causal' if z else 'full'}" for c, z in CASES])
def test_xformers_kernel_plumbing_with_stand_in(P, fake_xformers, case, causal):
    """Layout, LowerTriangularMask and the padded additive bias, against math (fake operator)."""
    _check_parity(P, K(P, "xformers"), "xformers", case, causal, grad=True, n=(13, 13))
    call = fake_xformers.calls[-1]
    assert call["aligned"]
    assert call["bias"] == ("LowerTriangularMask" if case == "none" and causal else
                            "NoneType" if case == "none" else "Tensor")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["sdpa", "xformers", "flex"])
def test_kernel_parity_cuda(P, name):
    av = P["attention_kernels"].get(name).availability(device="cuda", dtype=torch.float32, requires_grad=True)
    if not av:
        pytest.skip(f"{name}: {av.reason}")
    for case, causal in CASES:
        q, k, v = (t.cuda().detach().requires_grad_() for t in qkv(nq=33, d=16))
        m = _mask(case, 2, 3, 33, 33)
        m = m.cuda() if isinstance(m, torch.Tensor) else m
        ref, ref_g = _run(K(P, "math"), q, k, v, mask=m, causal=causal)
        out, out_g = _run(K(P, name), q, k, v, mask=m, causal=causal)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)  # TF32/fused accumulation on GPU
        for a, r in zip(out_g, ref_g):
            torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)


# -- availability, selection and fallback ---------------------------------------------------
def _warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]


def test_xformers_missing_falls_back_to_sdpa_once(P, no_xformers):
    entry = P["attention_kernels"].get("xformers")
    assert entry.availability(device="cuda", dtype=torch.float16).reason == XF_MISSING
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        kern = select_attention_kernel(P, "xformers", device="cpu", dtype=torch.float32)
        q, k, v = qkv(grad=True)
        out = kern(q, k, v, causal=True)
        out.sum().backward()
        kern(*qkv(), causal=True)
    msgs = _warnings(rec)
    assert len(msgs) == 1 and XF_MISSING in msgs[0] and "falling back to 'sdpa'" in msgs[0]
    assert kern.last_used == "sdpa"
    torch.testing.assert_close(out, K(P, "sdpa")(*qkv(), causal=True))


def test_xformers_present_on_cpu_reports_no_operator(P, fake_xformers):
    entry = P["attention_kernels"].get("xformers")
    assert entry.availability(device="cpu", dtype=torch.float32).reason == XF_NO_CPU
    assert entry.availability(device="cuda", dtype=torch.float16).ok  # the stand-in imports
    with pytest.warns(RuntimeWarning, match="no CPU operator; needs CUDA; falling back to 'sdpa'"):
        kern = select_attention_kernel(P, "xformers", device="cpu", dtype="float32")
    kern(*qkv())
    assert kern.last_used == "sdpa" and fake_xformers.calls == []


def test_availability_is_decided_per_call(P, fake_xformers):
    """Selected for CUDA (available), then called with CPU tensors: falls back, warns once."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        kern = select_attention_kernel(P, "xformers", device="cuda", dtype=torch.float32)
        assert _warnings(rec) == []
        out = kern(*qkv())
        kern(*qkv(seed=1))
    msgs = _warnings(rec)
    assert len(msgs) == 1 and XF_NO_CPU in msgs[0]
    assert fake_xformers.calls == [] and kern.last_used == "sdpa"
    torch.testing.assert_close(out, K(P, "math")(*qkv()), rtol=1e-5, atol=1e-5)


def test_flex_needs_cuda_for_gradients_on_cpu(P):
    entry = P["attention_kernels"].get("flex")
    if not entry.availability(device="cpu", dtype=torch.float32):
        pytest.skip(entry.availability(device="cpu", dtype=torch.float32).reason)
    assert not entry.availability(device="cpu", dtype=torch.float32, requires_grad=True)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        kern = select_attention_kernel(P, "flex", device="cpu", dtype=torch.float32)
        with torch.no_grad():
            kern(*qkv(), mask=BlockCausalMask(2))
        assert kern.last_used == "flex" and _warnings(rec) == []
        q, k, v = qkv(grad=True)
        kern(q, k, v, mask=BlockCausalMask(2)).sum().backward()
    assert kern.last_used == "sdpa" and len(_warnings(rec)) == 1
    assert q.grad is not None


def test_strict_and_unknown(P, no_xformers):
    with pytest.raises(PluginUnavailableError, match="xformers"):
        select_attention_kernel(P, "xformers", device="cpu", dtype=torch.float32, strict=True)
    with pytest.raises(UnknownPluginError, match="Did you mean 'sdpa'"):
        select_attention_kernel(P, "spda", device="cpu", dtype=torch.float32)
    with pytest.raises(ValueError, match="unknown dtype"):
        select_attention_kernel(P, "math", device="cpu", dtype="float33")


class _PickMathForDouble:
    @hookimpl
    def fvdm_choose_attention_kernel(self, device, dtype, registry):
        return "math" if dtype == torch.float64 else None


def test_auto_uses_firstresult_hook():
    P2 = load_plugins(entry_points=False, extra_plugins=[("pick-math", _PickMathForDouble())])
    assert select_attention_kernel(P2, "auto", device="cpu", dtype=torch.float64).name == "math"
    assert select_attention_kernel(P2, "auto", device="cpu", dtype=torch.float32).name == "sdpa"
    kern = select_attention_kernel(P2, device="cpu", dtype=torch.float32)
    assert kern.requested == "auto"
    assert select_attention_kernel(P2.registries, device="cpu", dtype=torch.float64).name == "sdpa"  # no hook


def test_plugins_report_shows_reasons(P, fake_xformers):
    from fvdm.commands.plugins import plugins_report

    rows = {r["name"]: r for r in plugins_report(P, ["attention_kernels"])["kinds"]["attention_kernels"]}
    assert rows["math"]["available"] and rows["sdpa"]["available"]
    if not torch.cuda.is_available():
        assert rows["xformers"]["reason"] == XF_NO_CPU and not rows["xformers"]["available"]


# -- the backbone under math and sdpa ------------------------------------------------------------
def _latte_tiny(temporal_attention):
    P = load_plugins(entry_points=False)
    if "latte_tiny" not in P["backbones"]:
        pytest.skip("backbone latte_tiny is not registered yet (fvdm/plugins/backbones/latte.py)")
    torch.manual_seed(0)
    model = P["backbones"].build({"name": "latte_tiny", "in_channels": 3, "input_size": 8, "num_frames": 4,
                                  "temporal_attention": temporal_attention})
    with torch.no_grad():  # adaLN-Zero makes the output exactly 0 at init: randomise so parity means something
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return P, model.eval()


@pytest.mark.parametrize("temporal_attention", ["full", "causal"])
def test_backbone_identical_under_math_and_sdpa(temporal_attention):
    P, model = _latte_tiny(temporal_attention)
    x = torch.randn(2, 4, 3, 8, 8)
    t_in = torch.rand(2, 4) * 999
    outs = {}
    for name in ("math", "sdpa"):
        model.set_attention_kernel(select_attention_kernel(P, name, device="cpu", dtype=torch.float32))
        with torch.no_grad():
            outs[name] = model(x, t_in)
    assert outs["math"].abs().max() > 1e-3
    torch.testing.assert_close(outs["sdpa"], outs["math"], rtol=1e-5, atol=1e-5)


def test_backbone_gradients_agree_under_math_and_sdpa():
    P, model = _latte_tiny("causal")
    x = torch.randn(2, 4, 3, 8, 8)
    t_in = torch.rand(2, 4) * 999
    grads = {}
    for name in ("math", "sdpa"):
        model.set_attention_kernel(select_attention_kernel(P, name, device="cpu", dtype=torch.float32))
        model.zero_grad()
        out = model(x, t_in)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads[name] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert len(grads["math"]) == len(grads["sdpa"]) > 0
    for a, b in zip(grads["sdpa"], grads["math"]):  # grads reach ~50 here: fp32 rounding through 4 blocks
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_backbone_causal_temporal_attention_ignores_future_frames():
    P, model = _latte_tiny("causal")
    x = torch.randn(1, 4, 3, 8, 8)
    t_in = torch.rand(1, 4) * 999
    x2 = x.clone()
    x2[:, -1] += 1.0  # change only the last frame
    with torch.no_grad():
        a, b = model(x, t_in), model(x2, t_in)
    torch.testing.assert_close(a[:, :-1], b[:, :-1], rtol=1e-5, atol=1e-5)
    assert (a[:, -1] - b[:, -1]).abs().max() > 1e-4


def test_attention_benchmark_smoke():
    from benchmarks.attention import format_table, run

    shape = {"config": "tiny", "kind": "spatial", "batch": 2, "n": 8, "heads": 2, "dim": 8, "causal": True}
    res = run(quick=True, threads=1, device="cpu", reps=1, shapes=[shape])
    ks = res["results"]["tiny.spatial"]["kernels"]
    assert res["threads"] == 1 and ks["math"]["fwd_bwd_ratio_to_math"] == 1.0
    assert ks["sdpa"]["fwd_bwd_ms"] > 0 and "unavailable" in ks["xformers"] or "fwd_ms" in ks["xformers"]
    assert "threads=1" in format_table(res)


def test_fvdm_plugins_cli_prints_kernel_reasons(no_xformers, capsys):
    from fvdm.cli import main

    assert main(["plugins", "--kind", "attention_kernels"]) == 0
    out = capsys.readouterr().out
    assert f"unavailable: {XF_MISSING}\n" in out  # the install hint is not repeated
    for name in ("math", "sdpa", "flex"):
        assert f"[ok ] {name}" in out or f"[n/a] {name}" in out


def test_set_attention_names_the_cpu_bf16_route():
    """The training log says that auto runs short sequences through math on a CPU in bf16, not just "sdpa"."""
    from fvdm.core.build import set_attention
    from fvdm.core.config import parse_config
    from fvdm.plugins.backbones.unet import UNetVideo, UNetVideoConfig

    P = load_plugins(entry_points=False)
    cfg = parse_config({"data": {"name": "moving_digits"}, "backbone": {"name": "unet_video"}}, "test")
    model = UNetVideo(UNetVideoConfig(num_frames=4, input_size=16, base_channels=16))
    assert set_attention(model, cfg, P, torch.device("cpu"), torch.bfloat16).startswith("auto (math for <= 64 keys")
    assert set_attention(model, cfg, P, torch.device("cpu"), torch.float32) == "sdpa"
