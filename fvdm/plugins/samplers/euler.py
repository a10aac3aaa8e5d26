"""Euler step of the probability-flow ODE with per-frame levels.

With the model's (x0_hat, eps_hat) frozen over the step,
x_s = x_t + (alpha_s - alpha_t)·x0_hat + (sigma_s - sigma_t)·eps_hat.
For rectified flow (alpha = 1-t, sigma = t) this is x_s = x_t + (s - t)·v with
v = eps_hat - x0_hat: the Euler sampler of Pusa / SD3.
"""

from __future__ import annotations

import torch

from fvdm.core.interfaces import ModelFn, NoiseSchedule
from fvdm.plugins.samplers.common import ParameterFree, alpha_sigma, check_step, keep_unchanged, predict


class EulerSampler(ParameterFree):
    """Euler ODE step (rectified flow's sampler; first order for any schedule)."""

    def step(self, model_fn: ModelFn, x: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor, *,
             schedule: NoiseSchedule, generator: torch.Generator | None = None) -> torch.Tensor:
        check_step(x, t_from, t_to)
        x0, eps, _ = predict(model_fn, x, t_from, schedule)
        a_t, s_t = alpha_sigma(schedule, t_from, x.ndim, x.dtype)
        a_s, s_s = alpha_sigma(schedule, t_to, x.ndim, x.dtype)
        x_next = x + (a_s - a_t) * x0 + (s_s - s_t) * eps
        return keep_unchanged(x_next, x, t_from, t_to)
