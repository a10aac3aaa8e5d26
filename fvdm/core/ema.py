"""Exponential moving average of model weights (DiT/Latte keep one, decay 0.9999)."""

from __future__ import annotations

import copy

import torch


def make_ema(model: torch.nn.Module, *, share_frozen: bool = False) -> torch.nn.Module:
    """A frozen copy of ``model`` in eval mode, fp32 (fp64 if the model is fp64).

    ``share_frozen``: parameters that do not train (a LoRA run's base) are the model's own tensors, not
    copies: their average is themselves, and a second copy of a 14B base would double its memory.
    """
    ema = copy.deepcopy(model)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    ema = (ema.double() if dtype == torch.float64 else ema.float()).eval()
    if share_frozen:
        frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad and p.dtype == dtype}
        for name, p in ema.named_parameters():
            if name in frozen:
                p.data = frozen[name].data
                p.fvdm_shared = True  # ema_update skips it: the model's own tensor
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
