"""DPM-Solver++ 2M and its SDE variant (Lu et al. 2022) with per-frame levels and per-frame history.

In lambda = log(alpha / sigma), with h = lambda_t - lambda_s0 and the frame's data predictions
m0 (this level) and m1 (its previous level, r0 = (lambda_s0 - lambda_s1) / h):

- ODE, first order:  x_t = (sigma_t/sigma_s0)·x - alpha_t·(e^-h - 1)·m0
- ODE, 2M (midpoint): the same with m0 -> m0 + (m0 - m1) / (2 r0)
- SDE, first order:  x_t = (sigma_t/sigma_s0)·e^-h·x + alpha_t·(1 - e^-2h)·m0 + sigma_t·sqrt(1 - e^-2h)·z
- SDE, 2M: the same with m0 -> m0 + (m0 - m1) / (2 r0)

A frame's first step (no history) and its last step (to level 0) are first order, which is
diffusers' ``DPMSolverMultistepScheduler`` with ``solver_order=2``, ``solver_type="midpoint"``,
``lower_order_final=True`` and ``final_sigmas_type="zero"``; with all frames at one level the
trajectories are equal (tests/test_multistep_samplers.py). The SDE variant draws one Gaussian of
x's shape per call, as diffusers does per step.
"""

from __future__ import annotations

import torch
from pydantic import Field

from fvdm.core.interfaces import ModelFn, NoiseSchedule, PluginConfig
from fvdm.core.tensor import append_dims
from fvdm.plugins.samplers.common import check_step, keep_unchanged, predict, randn_like
from fvdm.plugins.samplers.multistep import FrameHistory, coef, half_log_snr


class DPMSolverPP:
    """DPM-Solver++ 2M (multistep, data prediction); ``sde: true`` is the SDE-DPM-Solver++ 2M."""

    class Config(PluginConfig):
        sde: bool = Field(False, description="SDE-DPM-Solver++ 2M: stochastic, fresh noise every step")
        clip_x0: float | None = Field(None, gt=0, description="clamp x0_hat to [-c, c] before it is used or stored")

    name = "dpmpp_2m"

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def init_state(self, x: torch.Tensor) -> FrameHistory:
        """No frame has history yet; each frame's first step will be first order."""
        return FrameHistory.empty(x, depth=1)

    def step(self, model_fn: ModelFn, x: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor, *,
             schedule: NoiseSchedule, generator: torch.Generator | None = None,
             state: FrameHistory) -> tuple[torch.Tensor, FrameHistory]:
        check_step(x, t_from, t_to)
        state.check(x, t_from, self.name)
        m0, _, _ = predict(model_fn, x, t_from, schedule, self.cfg.clip_x0)
        z = randn_like(x, generator) if self.cfg.sde else None  # every call, moving frames or not (diffusers)
        _, s_s0, lam_s0 = half_log_snr(schedule, t_from)  # (B, F) float64
        a_t, s_t, lam_t = half_log_snr(schedule, t_to)
        moving = t_to != t_from
        final = t_to == 0  # lands on data: x_t = m0 exactly (the first-order update's limit)
        h = lam_t - lam_s0
        second = moving & ~final & (state.count >= 1)
        r0 = (lam_s0 - half_log_snr(schedule, state.t[0])[2]) / h
        if self.cfg.sde:
            c_x = s_t / s_s0 * torch.exp(-h)
            c_m = -a_t * torch.expm1(-2.0 * h)  # alpha_t (1 - e^-2h)
        else:
            c_x = s_t / s_s0
            c_m = -a_t * torch.expm1(-h)  # -alpha_t (e^-h - 1)
        c_d = torch.where(second, 0.5 * c_m / r0, torch.zeros_like(c_m))  # weight of (m0 - m1)
        x_next = coef(c_x, x) * x + coef(c_m, x) * m0 + coef(c_d, x) * (m0 - state.x0[0])
        if z is not None:
            x_next = x_next + coef(s_t * torch.sqrt(-torch.expm1(-2.0 * h)), x) * z
        x_next = torch.where(append_dims(final, x.ndim), m0, x_next)
        order = torch.where(second, 2, 1)
        return keep_unchanged(x_next, x, t_from, t_to), state.push(moving, m0, t_from, t_to, order)


class DPMSolverPPSDE(DPMSolverPP):
    """SDE-DPM-Solver++ 2M: DPM-Solver++ 2M with ``sde: true`` by default."""

    class Config(DPMSolverPP.Config):
        sde: bool = Field(True, description="SDE-DPM-Solver++ 2M: stochastic, fresh noise every step")

    name = "dpmpp_2m_sde"
