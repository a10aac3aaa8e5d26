"""``math``: plain softmax(Q K^T * scale) V, the reference every kernel is tested against."""

from __future__ import annotations

import torch
from einops import rearrange

from fvdm.core.attention import check_qkv, merge_mask


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask=None, causal: bool = False,
              scale: float | None = None) -> torch.Tensor:
    """Reference attention; q (B, Nq, H, D), k/v (B, Nk, H, D) -> (B, Nq, H, D).

    Materialises the (B, H, Nq, Nk) score matrix; softmax runs in float32 for half inputs.
    """
    check_qkv(q, k, v)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    qh, kh, vh = (rearrange(x, "b n h d -> b h n d") for x in (q, k, v))
    scores = torch.matmul(qh, kh.transpose(-2, -1)) * scale  # (B, H, Nq, Nk)
    m = merge_mask(mask, causal, q.shape[1], k.shape[1], device=q.device, dtype=scores.dtype)
    if m is not None:
        scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m
    acc = torch.float32 if scores.dtype in (torch.float16, torch.bfloat16) else scores.dtype  # never downcast fp64
    attn = scores.softmax(dim=-1, dtype=acc).to(q.dtype)
    out = torch.matmul(attn, vh)  # (B, H, Nq, D)
    return rearrange(out, "b h n d -> b n h d")
