"""`correlated_frames`: per-frame training timesteps from a smooth random walk across frames.

Neighbouring frames get nearby noise levels: u_0 ~ U[0, 1], u_{f+1} = u_f + step_std * N(0, 1),
reflected into [0, 1]. With ``step_std -> 0`` it becomes the synchronized (vanilla) strategy.
"""

from __future__ import annotations

import torch
from pydantic import Field

from fvdm.core import PluginConfig


class CorrelatedFrames:
    """Per-frame timesteps from a reflected Gaussian random walk over frames."""

    class Config(PluginConfig):
        step_std: float = Field(0.1, gt=0.0, le=1.0, description="std of the per-frame step of the walk")

    def __init__(self, cfg: "CorrelatedFrames.Config"):
        self.cfg = cfg

    def __call__(self, batch_size: int, num_frames: int, *, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
        start = torch.rand(batch_size, 1, generator=generator)  # (B, 1)
        steps = torch.randn(batch_size, num_frames - 1, generator=generator) * self.cfg.step_std  # (B, F-1)
        walk = torch.cat([start, start + steps.cumsum(dim=1)], dim=1)  # (B, F)
        # reflect into [0, 1]: fold the real line with period 2
        folded = torch.remainder(walk, 2.0)
        u = torch.where(folded > 1.0, 2.0 - folded, folded)
        return u.to(device=device, dtype=torch.float32)
