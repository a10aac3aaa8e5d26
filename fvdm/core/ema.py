"""Exponential moving average of model weights (DiT/Latte keep one, decay 0.9999)."""

from __future__ import annotations

import copy

import torch


def make_ema(model: torch.nn.Module, *, share_frozen: bool = False) -> torch.nn.Module:
    """A frozen copy of ``model`` in eval mode, fp32 (fp64 if the model is fp64).

    ``share_frozen``: parameters that do not train (a LoRA run's base) are the model's own tensors, not
    copies: their average is themselves, and a second copy of a 14B base would double its memory.
    """
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    target = torch.float64 if dtype == torch.float64 else torch.float32
    # The frozen parameters are handed to deepcopy as already copied (its memo), so they are never copied
    # at all: set-up holds one base, not a copy freed later (at 14B, on the device, that was 57 GB more).
    # A frozen tensor of another dtype (a bf16 base under an fp32 EMA) is still converted, as before.
    shared = [p for p in model.parameters() if share_frozen and not p.requires_grad and p.dtype == target]
    ema = copy.deepcopy(model, memo={id(p): p for p in shared})
    ema = (ema.double() if target == torch.float64 else ema.float()).eval()
    for p in shared:
        p.fvdm_shared = True  # ema_update skips it: the model's own tensor, in the model and in the EMA
    ema.requires_grad_(False)
    return ema


def ema_decay_at(step: int, decay: float, warmup: bool) -> float:
    """Decay used after optimizer step ``step`` (0-based); with warmup min(decay, (1+s)/(10+s))."""
    return min(decay, (1.0 + step) / (10.0 + step)) if warmup else decay


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers are copied."""
    pairs = list(zip(ema.parameters(), model.parameters()))
    if len(pairs) != len(list(model.parameters())):
        raise RuntimeError("EMA and model have different parameter lists")
    pairs = [(e, m) for e, m in pairs if not getattr(e, "fvdm_shared", False)]  # shared frozen tensors: no average
    e_params = [e for e, _ in pairs]
    m_params = [m.detach().to(e.dtype) for e, m in pairs]
    if e_params:  # every parameter shared: nothing trains
        torch._foreach_lerp_(e_params, m_params, 1.0 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)
