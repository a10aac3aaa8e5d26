"""Exponential moving average of model weights (DiT/Latte keep one, decay 0.9999)."""

from __future__ import annotations

import copy

import torch


def make_ema(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of ``model`` in eval mode, fp32 (fp64 if the model is fp64)."""
    ema = copy.deepcopy(model)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    ema = (ema.double() if dtype == torch.float64 else ema.float()).eval()
    ema.requires_grad_(False)
    return ema


def ema_decay_at(step: int, decay: float, warmup: bool) -> float:
    """Decay used after optimizer step ``step`` (0-based); with warmup min(decay, (1+s)/(10+s))."""
    return min(decay, (1.0 + step) / (10.0 + step)) if warmup else decay


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers are copied."""
    e_params = [p for p in ema.parameters()]
    m_params = [p.detach().to(e.dtype) for p, e in zip(model.parameters(), e_params)]
    if len(e_params) != len(list(model.parameters())):
        raise RuntimeError("EMA and model have different parameter lists")
    torch._foreach_lerp_(e_params, m_params, 1.0 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)
