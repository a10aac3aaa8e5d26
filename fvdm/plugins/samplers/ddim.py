"""DDIM (Song et al. 2021) with per-frame levels.

x_s = alpha_s·x0_hat + sqrt(sigma_s² - c²)·eps_hat + c·z,
c = eta · (sigma_s / sigma_t) · sqrt(1 - (alpha_t / alpha_s)²).
With one level for all frames this is diffusers' ``DDIMScheduler.step`` (set_alpha_to_one).
"""

from __future__ import annotations

import torch
from pydantic import Field

from fvdm.core.interfaces import ModelFn, NoiseSchedule, PluginConfig
from fvdm.plugins.samplers.common import alpha_sigma, check_step, keep_unchanged, predict, randn_like


class DDIMSampler:
    """DDIM step from per-frame levels t_from to t_to (eta configurable)."""

    class Config(PluginConfig):
        eta: float = Field(0.0, ge=0, le=1, description="0 = deterministic DDIM, 1 = DDPM-like noise")
        clip_x0: float | None = Field(None, gt=0, description="clamp x0_hat to [-c, c] (diffusers clip_sample)")

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def step(self, model_fn: ModelFn, x: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor, *,
             schedule: NoiseSchedule, generator: torch.Generator | None = None) -> torch.Tensor:
        check_step(x, t_from, t_to)
        x0, eps, _ = predict(model_fn, x, t_from, schedule, self.cfg.clip_x0)
        a_t, s_t = alpha_sigma(schedule, t_from, x.ndim, x.dtype)
        a_s, s_s = alpha_sigma(schedule, t_to, x.ndim, x.dtype)
        x_next = a_s * x0
        if self.cfg.eta > 0:
            ratio = (a_t / a_s.clamp_min(1e-12)).clamp(max=1.0)
            c = self.cfg.eta * (s_s / s_t.clamp_min(1e-12)) * (1 - ratio**2).clamp_min(0).sqrt()
            x_next = x_next + (s_s**2 - c**2).clamp_min(0).sqrt() * eps + c * randn_like(x, generator)
        else:
            x_next = x_next + s_s * eps
        return keep_unchanged(x_next, x, t_from, t_to)
