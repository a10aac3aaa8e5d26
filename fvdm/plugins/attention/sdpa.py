"""``sdpa``: torch.nn.functional.scaled_dot_product_attention (torch picks the backend:
flash / memory-efficient / cuDNN on CUDA, a fused flash kernel on CPU)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange

from fvdm.core.attention import check_qkv, merge_mask


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask=None, causal: bool = False,
              scale: float | None = None) -> torch.Tensor:
    """q (B, Nq, H, D), k/v (B, Nk, H, D) -> (B, Nq, H, D); SDPA's own layout is (B, H, N, D)."""
    check_qkv(q, k, v)
    qh, kh, vh = (rearrange(x, "b n h d -> b h n d") for x in (q, k, v))
    if mask is None:  # is_causal keeps torch on its fastest (mask-free) path
        out = F.scaled_dot_product_attention(qh, kh, vh, is_causal=causal, scale=scale)
    else:  # SDPA rejects attn_mask together with is_causal: fold causality into the mask
        m = merge_mask(mask, causal, q.shape[1], k.shape[1], device=q.device, dtype=q.dtype)
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=m, scale=scale)
    return rearrange(out, "b h n d -> b n h d")


def available(device: Any = None, dtype: Any = None, **_: Any) -> tuple[bool, str]:
    if not hasattr(F, "scaled_dot_product_attention"):
        return False, "needs torch>=2.0 (scaled_dot_product_attention)"
    return True, ""
