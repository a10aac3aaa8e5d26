"""``flex``: torch FlexAttention, with a sparse block-causal-over-frames mask.

``causal=True`` and :class:`~fvdm.core.attention.BlockCausalMask` become a
``BlockMask`` (cached per shape), so fully masked blocks are skipped on CUDA, which
is what temporal attention that sees only past frames wants. Dense tensor masks go
through ``score_mod``. On CUDA the kernel is ``torch.compile``d (fused); on CPU torch
2.13 runs it eagerly (unfused, materialising the scores) and has no backward, so
the kernel reports itself unavailable on CPU when gradients are needed and the
selector falls back.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
from einops import rearrange

from fvdm.core.attention import BlockCausalMask, check_qkv, merge_mask

_probe_cache: dict[tuple[str, torch.dtype], tuple[bool, str]] = {}


def _flex_module() -> Any:
    import torch.nn.attention.flex_attention as fa  # torch >= 2.5

    return fa


def _probe(device: torch.device, dtype: torch.dtype) -> tuple[bool, str]:
    """Run one tiny forward per (device type, dtype), once; report the error if it fails."""
    key = (device.type, dtype)
    if key not in _probe_cache:
        try:
            q = torch.randn(1, 1, 4, 16, device=device, dtype=dtype)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _flex_module().flex_attention(q, q, q)
            _probe_cache[key] = (True, "")
        except Exception as exc:
            _probe_cache[key] = (False, f"FlexAttention failed on {device.type} {dtype}: {type(exc).__name__}: {exc}")
    return _probe_cache[key]


def available(device: Any = None, dtype: Any = None, requires_grad: bool = False, **_: Any) -> tuple[bool, str]:
    try:
        _flex_module()
    except ImportError:
        return False, "needs torch>=2.5 (torch.nn.attention.flex_attention)"
    if device is None:  # `fvdm plugins`: report for this machine's best device
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    dtype = dtype if dtype is not None else torch.float32
    if device.type == "cpu" and requires_grad:
        return False, f"no CPU backward in torch {torch.__version__.split('+')[0]} (forward only); needs CUDA for training"
    ok, reason = _probe(device, dtype)
    if not ok:
        return ok, reason
    if device.type == "cpu":
        return True, "CPU: forward only, unfused eager (slow); fused and trainable on CUDA"
    return True, ""


@functools.lru_cache(maxsize=64)
def _block_causal(tokens_per_frame: int, nq: int, nk: int, device: str) -> Any:
    def mask_mod(b, h, q_idx, kv_idx):
        return kv_idx // tokens_per_frame <= q_idx // tokens_per_frame

    return _flex_module().create_block_mask(mask_mod, None, None, nq, nk, device=device)


@functools.lru_cache(maxsize=1)
def _compiled() -> Any:
    return torch.compile(_flex_module().flex_attention, dynamic=False)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask=None, causal: bool = False,
              scale: float | None = None) -> torch.Tensor:
    """q (B, Nq, H, D), k/v (B, Nk, H, D) -> (B, Nq, H, D); Flex's own layout is (B, H, N, D)."""
    check_qkv(q, k, v)
    nq, nk = q.shape[1], k.shape[1]
    qh, kh, vh = (rearrange(x, "b n h d -> b h n d") for x in (q, k, v))
    block_mask = score_mod = None
    if isinstance(mask, BlockCausalMask) or (mask is None and causal):
        # causal is block-causal with one token per frame, and it is the finer of the two when both are set
        tpf = 1 if causal or mask is None else mask.tokens_per_frame
        block_mask = _block_causal(int(tpf), nq, nk, str(q.device))
    elif mask is not None:
        m = merge_mask(mask, causal, nq, nk, device=q.device, dtype=q.dtype)
        m = m.expand(q.shape[0], q.shape[2], nq, nk)  # (B, H, Nq, Nk), indexed per score below
        if m.dtype == torch.bool:
            def score_mod(score, b, h, i, j):
                return torch.where(m[b, h, i, j], score, float("-inf"))
        else:
            def score_mod(score, b, h, i, j):
                return score + m[b, h, i, j]
    fn = _compiled() if q.device.type == "cuda" else _flex_module().flex_attention
    with warnings.catch_warnings():  # the eager-CPU "use torch.compile" notice: documented above
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        out = fn(qh, kh, vh, score_mod=score_mod, block_mask=block_mask, scale=scale)
    return rearrange(out, "b h n d -> b n h d")
