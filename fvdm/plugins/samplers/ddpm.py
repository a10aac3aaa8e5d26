"""DDPM ancestral sampling with per-frame levels (any skip between levels).

The step draws from the posterior q(x_s | x_t, x0_hat) of a Gaussian process x_t = alpha_t x0 + sigma_t eps
(s < t), the one implementation in ``fvdm.plugins.noise_schedules.posterior``: mean from (x_t, x0_hat),
variance "small" (the posterior's, beta tilde), "large" (beta = sigma_t² - (alpha_t/alpha_s)² sigma_s²,
the respaced beta) or learned (DiT/Latte): log var = f·log(beta) + (1-f)·log(beta tilde), f = (v + 1) / 2
from the model's extra channels. Any schedule works: (alpha, sigma) come from
``fvdm.core.sampling.alpha_sigma`` (a level of exactly 0 is clean data).
No noise is added on a frame's last step (t_to = 0).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fvdm.core.interfaces import ModelFn, NoiseSchedule, PluginConfig
from fvdm.core.tensor import append_dims
from fvdm.plugins.noise_schedules.posterior import gaussian_posterior, learned_log_variance
from fvdm.plugins.samplers.common import alpha_sigma, check_step, keep_unchanged, predict, randn_like


class DDPMSampler:
    """DDPM ancestral step (learned, small or large variance) between per-frame levels."""

    class Config(PluginConfig):
        variance: Literal["auto", "small", "large"] = Field(
            "auto", description="auto = learned when the schedule learns sigma, else small (posterior)")
        clip_x0: float | None = Field(None, gt=0, description="clamp x0_hat to [-c, c]")

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def step(self, model_fn: ModelFn, x: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor, *,
             schedule: NoiseSchedule, generator: torch.Generator | None = None) -> torch.Tensor:
        check_step(x, t_from, t_to)
        x0, eps, var_values = predict(model_fn, x, t_from, schedule, self.cfg.clip_x0)
        f64 = torch.float64  # coefficients in float64: sigma_t^2 - alpha_ts^2 sigma_s^2 cancels
        # (B, F, 1, 1, 1) each; a zero variance (a step onto data) is logged as VARIANCE_FLOOR, never -inf
        post = gaussian_posterior(*alpha_sigma(schedule, t_from, x.ndim, f64),
                                  *alpha_sigma(schedule, t_to, x.ndim, f64))
        mean = post.coef_xt.to(x.dtype) * x + post.coef_x0.to(x.dtype) * x0
        mode = self.cfg.variance
        if mode == "auto":
            mode = "learned" if var_values is not None else "small"
        if mode == "learned":
            log_var = learned_log_variance(var_values, post.log_variance.to(x.dtype), post.log_beta.to(x.dtype))
            std = (0.5 * log_var).exp()
        elif mode == "large":
            std = post.beta.sqrt().to(x.dtype)
        else:
            std = post.variance.sqrt().to(x.dtype)
        noisy = append_dims(t_to > 0, x.ndim)  # no noise on the last step of a frame
        x_next = mean + torch.where(noisy, std, torch.zeros_like(std)) * randn_like(x, generator)
        return keep_unchanged(x_next, x, t_from, t_to)
