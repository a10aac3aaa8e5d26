"""Helpers every sampler shares: per-frame (alpha, sigma), prediction, bit-identical keep.

Conventions: a level of exactly 0 is clean data, (alpha, sigma) = (1, 0)
(``fvdm.core.sampling.alpha_sigma``). Per-frame values broadcast only via ``append_dims``.
"""

from __future__ import annotations

from typing import Any

import torch

from fvdm.core.interfaces import ModelFn, PluginConfig
from fvdm.core.sampling import alpha_sigma  # noqa: F401  (re-exported for samplers)
from fvdm.core.tensor import append_dims


def predict(
    model_fn: ModelFn, x: torch.Tensor, t: torch.Tensor, schedule: Any, clip_x0: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One model call -> (x0_hat, eps_hat, var_values or None), each (B, F, C, H, W)."""
    out = model_fn(x, t)
    x0, eps = schedule.predict_x0_eps(out, x, t)
    var_values = None
    if getattr(schedule, "learn_sigma", False):
        var_values = schedule.split_output(out)[1]
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
    return x0, eps, var_values


def keep_unchanged(x_new: torch.Tensor, x: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor) -> torch.Tensor:
    """Frames whose level does not change come back bit-identical."""
    return torch.where(append_dims(t_to != t_from, x.ndim), x_new, x)


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def check_step(x: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor) -> None:
    if t_from.shape != x.shape[:2] or t_to.shape != x.shape[:2]:
        raise ValueError(f"levels must be (B, F) = {tuple(x.shape[:2])}; got t_from {tuple(t_from.shape)}, "
                         f"t_to {tuple(t_to.shape)}")
    if bool((t_to > t_from).any()):
        raise ValueError("a sampler step must not raise any frame's level (t_to > t_from); "
                         "sampling-matrix columns must be non-increasing")


class ParameterFree:
    """Base of a sampler without settings (Euler, Heun): an empty Config and the constructor every plugin has."""

    class Config(PluginConfig):
        """No parameters."""

    def __init__(self, cfg: "ParameterFree.Config"):
        self.cfg = cfg
