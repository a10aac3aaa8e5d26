"""``xformers``: xformers.ops.memory_efficient_attention (CUDA only).

xformers' layout is (B, M, H, K), the interface's own, so no transpose is needed.
Causal without a mask uses ``LowerTriangularMask`` (no dense bias); any other mask
becomes an additive float bias (B, H, Nq, Nk) whose rows are padded to a multiple
of 8 elements, the alignment xformers requires of bias tensors.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import torch

from fvdm.core.attention import check_qkv, merge_mask

INSTALL = "pip install 'fvdm[xformers]'"


def _installed() -> bool:
    if "xformers" in sys.modules:  # tests put a stand-in (or None) there
        return sys.modules["xformers"] is not None
    try:
        return importlib.util.find_spec("xformers") is not None
    except (ValueError, ImportError):
        return False


def available(device: Any = None, dtype: Any = None, **_: Any) -> tuple[bool, str]:
    """Decided per call: installed? a CUDA tensor? does ``xformers.ops`` import?"""
    if not _installed():
        return False, f"not installed; {INSTALL}"
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type != "cuda":
        return False, "installed, no CPU operator; needs CUDA"
    try:
        import xformers.ops  # noqa: F401
    except Exception as exc:  # e.g. built against another torch
        return False, f"installed but `import xformers.ops` failed ({type(exc).__name__}: {exc}); reinstall with {INSTALL}"
    if dtype is not None and dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return False, f"no operator for {dtype}; use float32, float16 or bfloat16"
    return True, ""


def _bias(m: torch.Tensor, shape: tuple[int, int, int, int], dtype: torch.dtype) -> torch.Tensor:
    """Dense (B, H, Nq, Nk) additive bias in a row-padded (multiple of 8) buffer."""
    b, h, nq, nk = shape
    if m.dtype == torch.bool:
        m = torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(~m, float("-inf"))
    pad = -nk % 8
    buf = torch.zeros(b, h, nq, nk + pad, dtype=dtype, device=m.device)
    buf[..., :nk] = m.to(dtype)
    return buf[..., :nk]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask=None, causal: bool = False,
              scale: float | None = None) -> torch.Tensor:
    """q (B, Nq, H, D), k/v (B, Nk, H, D) -> (B, Nq, H, D)."""
    import xformers.ops as xops

    check_qkv(q, k, v)
    if mask is None:
        bias = xops.LowerTriangularMask() if causal else None
    else:
        m = merge_mask(mask, causal, q.shape[1], k.shape[1], device=q.device, dtype=q.dtype)
        bias = _bias(m, (q.shape[0], q.shape[2], q.shape[1], k.shape[1]), q.dtype)
    return xops.memory_efficient_attention(q, k, v, attn_bias=bias, scale=scale)
