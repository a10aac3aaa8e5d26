"""Heun (2nd-order) ODE step with per-frame levels (Karras et al. 2022).

Euler predictor, then the average of the two (x0_hat, eps_hat) predictions; a frame
whose step ends at level 0 keeps the Euler result (as k-diffusion does at sigma 0).
Two model calls per step.
"""

from __future__ import annotations

import torch

from fvdm.core.interfaces import ModelFn, NoiseSchedule
from fvdm.core.tensor import append_dims
from fvdm.plugins.samplers.common import ParameterFree, alpha_sigma, check_step, keep_unchanged, predict


class HeunSampler(ParameterFree):
    """Heun ODE step: Euler predictor + trapezoidal corrector."""

    def step(self, model_fn: ModelFn, x: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor, *,
             schedule: NoiseSchedule, generator: torch.Generator | None = None) -> torch.Tensor:
        check_step(x, t_from, t_to)
        a_t, s_t = alpha_sigma(schedule, t_from, x.ndim, x.dtype)
        a_s, s_s = alpha_sigma(schedule, t_to, x.ndim, x.dtype)
        x0_1, eps_1, _ = predict(model_fn, x, t_from, schedule)
        x_euler = keep_unchanged(x + (a_s - a_t) * x0_1 + (s_s - s_t) * eps_1, x, t_from, t_to)
        if not bool((t_to > 0).any()):
            return x_euler
        x0_2, eps_2, _ = predict(model_fn, x_euler, t_to, schedule)
        x_heun = x + (a_s - a_t) * (x0_1 + x0_2) / 2 + (s_s - s_t) * (eps_1 + eps_2) / 2
        x_next = torch.where(append_dims(t_to > 0, x.ndim), x_heun, x_euler)
        return keep_unchanged(x_next, x, t_from, t_to)
