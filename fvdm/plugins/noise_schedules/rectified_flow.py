"""Rectified flow with per-frame levels (Pusa / SD3 style): x_t = (1 - t) x0 + t eps, target v = eps - x0.

Continuous: ``t`` is used as is. ``snap`` only reshapes the training density of the
levels: an optional logit-normal warp (SD3) and the timestep shift
t' = s t / (1 + (s - 1) t), both monotone elementwise maps of u, so equal draws stay
equal (synchronized frames stay synchronized).

The model sees ``1000 t`` (``model_timesteps: continuous``) or ``floor(1000 t)``
(``integer``): Wan's own sampler and diffusers' flow UniPC (``use_flow_sigmas``, what
``WanPipeline`` ships) keep their timesteps as int64, so the transformer is conditioned on
the truncated ``int(1000 sigma)`` while the solver steps on the exact sigma; ``integer``
reproduces that (tests/test_wan_pipeline_oracle.py). The level itself, and so every
(alpha, sigma) the samplers use, stays exact either way.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fvdm.core.interfaces import PluginConfig
from fvdm.core.tensor import append_dims, check_timesteps
from fvdm.plugins.noise_schedules._common import as_float32, check_inputs, frame_mean, high_precision


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3 timestep shift: s t / (1 + (s - 1) t); s > 1 moves mass towards noise, s = 1 is the identity."""
    if shift == 1.0:
        return t
    return shift * t / (1.0 + (shift - 1.0) * t)


class RectifiedFlowSchedule:
    """Rectified flow, velocity (eps - x0) prediction, per-frame t; SD3 timestep shift applied in snap."""

    class Config(PluginConfig):
        shift: float = Field(1.0, gt=0, description="SD3 timestep shift s applied to training levels (1 = none)")
        density: Literal["uniform", "logit_normal"] = Field(
            "uniform", description="training density of t before the shift; logit_normal as SD3"
        )
        logit_mean: float = Field(0.0, description="logit_normal location")
        logit_std: float = Field(1.0, gt=0, description="logit_normal scale")
        model_timesteps: Literal["continuous", "integer"] = Field(
            "continuous", description="what the model is conditioned on: 1000 t, or floor(1000 t) as Wan's "
                                      "UniPC / diffusers' WanPipeline feed it (int64 timesteps)")

    prediction = "flow"
    learn_sigma = False
    continuous = True
    num_timesteps = None

    def __init__(self, cfg: "RectifiedFlowSchedule.Config"):
        self.cfg = cfg

    def __repr__(self) -> str:
        return f"RectifiedFlowSchedule(shift={self.cfg.shift}, density={self.cfg.density})"

    def out_channels(self, c: int) -> int:
        return c

    def split_output(self, out: torch.Tensor) -> tuple[torch.Tensor, None]:
        return out, None

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 - t, t), each (B, F)."""
        check_timesteps(t)
        return 1.0 - t, t

    def snap(self, u: torch.Tensor) -> torch.Tensor:
        """u ~ U[0, 1] (B, F) -> training levels: optional logit-normal warp, then the timestep shift."""
        check_timesteps(u, name="u")
        t = u
        if self.cfg.density == "logit_normal":
            # inverse-CDF of the logit-normal: u = 0 / 1 map to t = 0 / 1 exactly
            t = torch.sigmoid(self.cfg.logit_mean + self.cfg.logit_std * torch.special.ndtri(high_precision(u))).to(u.dtype)
        return shift_timesteps(t, self.cfg.shift).clamp(0.0, 1.0)

    def timestep_input(self, t: torch.Tensor) -> torch.Tensor:
        """1000 t, or floor(1000 t) with ``model_timesteps: integer`` (B, F): the range DiT-style embedders expect.

        The floor is taken of the product in float64 (a float32 product can round 999.9999 up to 1000).
        """
        check_timesteps(t)
        if self.cfg.model_timesteps == "integer":
            return torch.floor(t.to(torch.float64) * 1000.0).to(t.dtype)
        return t * 1000.0

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_inputs(t, x0=x0, noise=noise)
        tt = append_dims(t, x0.ndim).to(x0.dtype)
        return (1.0 - tt) * x0 + tt * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Velocity eps - x0 (independent of t)."""
        check_inputs(t, x0=x0, noise=noise)
        return noise - x0

    def predict_x0_eps(self, model_out: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x0 = x_t - t v, eps = x_t + (1 - t) v."""
        check_inputs(t, xt=xt, model_out=model_out)
        tt = append_dims(t, xt.ndim).to(xt.dtype)
        return xt - tt * model_out, xt + (1.0 - tt) * model_out

    def loss(self, model_out: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-frame MSE to eps - x0 (mean over C, H, W), uniform weighting, (B, F)."""
        check_inputs(t, x0=x0, xt=xt, noise=noise, model_out=model_out)
        pred, x0, noise = as_float32(model_out), as_float32(x0), as_float32(noise)
        return frame_mean((noise - x0 - pred) ** 2)
