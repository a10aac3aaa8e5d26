"""UniPC (Zhao et al. 2023), order 2, data prediction, with per-frame levels and per-frame history.

Each step first *corrects* the sample the frame's previous step produced (UniC), using the
prediction just made at it, then *predicts* the next level (UniP) from the corrected sample;
the corrected sample is not evaluated again, so the corrector costs no model call. With
hh = -h, h = lambda_t - lambda_s0, B(h) = e^hh - 1 (``bh2``) or hh (``bh1``), a frame's
data predictions m0 (its current level), m1 (its previous level):

- UniP order 1:  x_t = (sigma_t/sigma_s0)·x - alpha_t·(e^hh - 1)·m0
- UniP order 2:  the same minus alpha_t·B(h)·(1/2)·(m1 - m0)/r1,  r1 = (lambda_s1 - lambda_s0)/h
- UniC of order p (p = the order of the step being corrected) adds the new prediction m_t:
  x_t^c = (sigma_t/sigma_s0)·x_s0 - alpha_t·(e^hh - 1)·m0 - alpha_t·B(h)·(sum_k rho_k D_k + rho_p (m_t - m0)),
  rho solving the order conditions R rho = b (closed form below; rho = 1/2 for p = 1).

A frame's first step and its last step (to level 0) are order 1 (diffusers' ``lower_order_final``);
with all frames at one level this is diffusers' ``UniPCMultistepScheduler`` (``solver_order=2``,
``predict_x0=True``) step for step (tests/test_multistep_samplers.py).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fvdm.core.interfaces import ModelFn, NoiseSchedule, PluginConfig
from fvdm.core.tensor import append_dims
from fvdm.plugins.samplers.common import check_step, keep_unchanged, predict
from fvdm.plugins.samplers.multistep import FrameHistory, coef, half_log_snr


def _b_coefficients(h: torch.Tensor, variant: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(e^hh - 1, B(h), b1, b2) for hh = -h: the right-hand side of UniPC's order conditions."""
    hh = -h
    h_phi_1 = torch.expm1(hh)
    b_h = h_phi_1 if variant == "bh2" else hh
    phi_1 = h_phi_1 / hh - 1  # h_phi_k for k = 1
    phi_2 = phi_1 / hh - 0.5
    return h_phi_1, b_h, phi_1 / b_h, 2.0 * phi_2 / b_h


class UniPC:
    """UniPC multistep predictor-corrector, order 2 (bh2 by default)."""

    class Config(PluginConfig):
        variant: Literal["bh1", "bh2"] = Field("bh2", description="B(h) of the update: bh2 = e^-h - 1 (diffusers' "
                                                                 "default), bh1 = -h (for few steps, unconditional)")
        corrector: bool = Field(True, description="apply UniC (free: reuses the next model call); false = UniP only")
        clip_x0: float | None = Field(None, gt=0, description="clamp x0_hat to [-c, c] before it is used or stored")

    name = "unipc"

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def init_state(self, x: torch.Tensor) -> FrameHistory:
        """No frame has history yet: no correction before its second step, first order at its first."""
        return FrameHistory.empty(x, depth=2, keep_sample=True)

    def step(self, model_fn: ModelFn, x: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor, *,
             schedule: NoiseSchedule, generator: torch.Generator | None = None,
             state: FrameHistory) -> tuple[torch.Tensor, FrameHistory]:
        check_step(x, t_from, t_to)
        state.check(x, t_from, self.name)
        m_t, _, _ = predict(model_fn, x, t_from, schedule, self.cfg.clip_x0)  # (B, F, C, H, W)
        a_s0, s_s0, lam_s0 = half_log_snr(schedule, t_from)  # the frame's current level, (B, F) float64
        a_t, s_t, lam_t = half_log_snr(schedule, t_to)
        moving = t_to != t_from
        x_in = x
        if self.cfg.corrector:
            x = self._correct(x, m_t, a_s0, s_s0, lam_s0, moving & (state.count >= 1), state, schedule)
        final = t_to == 0
        second = moving & ~final & (state.count >= 1)
        h = lam_t - lam_s0
        h_phi_1, b_h, _, _ = _b_coefficients(h, self.cfg.variant)
        r1 = (half_log_snr(schedule, state.t[0])[2] - lam_s0) / h
        c_d = torch.where(second, -a_t * b_h * 0.5 / r1, torch.zeros_like(h))  # weight of (m1 - m0)
        x_next = coef(s_t / s_s0, x) * x + coef(-a_t * h_phi_1, x) * m_t + coef(c_d, x) * (state.x0[0] - m_t)
        x_next = torch.where(append_dims(final, x.ndim), m_t, x_next)  # the order-1 update's limit at sigma = 0
        order = torch.where(second, 2, 1)
        new_state = state.push(moving, m_t, t_from, t_to, order, x_last=x)
        return keep_unchanged(x_next, x_in, t_from, t_to), new_state

    def _correct(self, x: torch.Tensor, m_t: torch.Tensor, a_t: torch.Tensor, s_t: torch.Tensor,
                 lam_t: torch.Tensor, which: torch.Tensor, state: FrameHistory, schedule: NoiseSchedule
                 ) -> torch.Tensor:
        """UniC: redo each frame's previous step (from ``state.x_last`` at its previous level) with ``m_t``."""
        if not bool(which.any()):
            return x
        _, s_s0, lam_s0 = half_log_snr(schedule, state.t[0])  # the frame's previous level
        h = lam_t - lam_s0
        h_phi_1, b_h, b1, b2 = _b_coefficients(h, self.cfg.variant)
        rk = (half_log_snr(schedule, state.t[1])[2] - lam_s0) / h
        second = which & (state.order >= 2)
        # order conditions [[1, 1], [rk, 1]] (rho_1, rho_t) = (b1, b2) in closed form; order 1: rho_t = 1/2
        rho_1 = torch.where(second, (b1 - b2) / (1 - rk), torch.zeros_like(h))
        rho_t = torch.where(second, b1 - rho_1, torch.full_like(h, 0.5))
        c_d1 = torch.where(second, rho_1 / rk, torch.zeros_like(h))  # D1 = (m1 - m0) / rk
        m0, m1 = state.x0
        x_c = (coef(s_t / s_s0, x) * state.x_last - coef(a_t * h_phi_1, x) * m0
               - coef(a_t * b_h, x) * (coef(c_d1, x) * (m1 - m0) + coef(rho_t, x) * (m_t - m0)))
        return torch.where(append_dims(which, x.ndim), x_c, x)
