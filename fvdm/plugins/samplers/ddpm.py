"""DDPM ancestral sampling with per-frame levels (any skip between levels).

Posterior q(x_s | x_t, x0) of a Gaussian process x_t = alpha_t x0 + sigma_t eps (s < t):
  alpha_ts = alpha_t / alpha_s,  sigma_ts² = sigma_t² - alpha_ts² sigma_s²
  mean = alpha_ts sigma_s² / sigma_t² · x_t + alpha_s sigma_ts² / sigma_t² · x0_hat
  var  = sigma_ts² sigma_s² / sigma_t²              ("small", DDPM's posterior)
Learned variance (DiT/Latte): log var = f·log(sigma_ts²) + (1-f)·log(var_small),
f = (v + 1) / 2 from the model's extra channels (respaced betas = 1 - alpha_ts²).
No noise is added on a frame's last step (t_to = 0).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fvdm.core.interfaces import ModelFn, NoiseSchedule, PluginConfig
from fvdm.core.tensor import append_dims
from fvdm.plugins.samplers.common import alpha_sigma, check_step, keep_unchanged, predict, randn_like


class DDPMSampler:
    """DDPM ancestral step (learned, small or large variance) between per-frame levels."""

    class Config(PluginConfig):
        variance: Literal["auto", "small", "large"] = Field(
            "auto", description="auto = learned when the schedule learns sigma, else small (posterior)")
        clip_x0: float | None = Field(None, gt=0, description="clamp x0_hat to [-c, c]")

    stochastic = True

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def step(self, model_fn: ModelFn, x: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor, *,
             schedule: NoiseSchedule, generator: torch.Generator | None = None) -> torch.Tensor:
        check_step(x, t_from, t_to)
        x0, eps, var_values = predict(model_fn, x, t_from, schedule, self.cfg.clip_x0)
        f64 = torch.float64  # coefficients in float64: sigma_t^2 - alpha_ts^2 sigma_s^2 cancels
        a_t, s_t = alpha_sigma(schedule, t_from, x.ndim, f64)
        a_s, s_s = alpha_sigma(schedule, t_to, x.ndim, f64)
        s_t2 = (s_t**2).clamp_min(1e-20)
        a_ts = a_t / a_s.clamp_min(1e-12)
        s_ts2 = (s_t**2 - a_ts**2 * s_s**2).clamp_min(0)
        coef_xt = (a_ts * s_s**2 / s_t2).to(x.dtype)
        coef_x0 = (a_s * s_ts2 / s_t2).to(x.dtype)
        mean = coef_xt * x + coef_x0 * x0
        small = s_ts2 * s_s**2 / s_t2
        mode = self.cfg.variance
        if mode == "auto":
            mode = "learned" if var_values is not None else "small"
        if mode == "learned":
            min_log = small.clamp_min(1e-20).log().to(x.dtype)
            max_log = s_ts2.clamp_min(1e-20).log().to(x.dtype)
            frac = (var_values + 1) / 2
            std = (0.5 * (frac * max_log + (1 - frac) * min_log)).exp()
        elif mode == "large":
            std = s_ts2.sqrt().to(x.dtype)
        else:
            std = small.sqrt().to(x.dtype)
        noisy = append_dims(t_to > 0, x.ndim)  # no noise on the last step of a frame
        x_next = mean + torch.where(noisy, std, torch.zeros_like(std)) * randn_like(x, generator)
        return keep_unchanged(x_next, x, t_from, t_to)
