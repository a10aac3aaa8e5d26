"""Diffusion Forcing training levels: independent per frame, optionally biased so later frames are noisier.

mode
  uniform  i.i.d. U[0, 1) per frame (Diffusion Forcing's training noise; same law as ``independent``).
  causal   F i.i.d. draws sorted ascending along frames: every clip is non-decreasing in frame index
           (later frames noisier, as in causal/autoregressive rollout), frame f has the Beta(f+1, F-f)
           law, and the levels pooled over frames are still exactly U[0, 1).
  pyramid  a linear ramp clip(c + slope * f / (F - 1), 0, 1) with c ~ U[-slope, 1): the rows of
           Diffusion Forcing's pyramid scheduling matrix, from all-clean to all-noisy, each shifted
           at random; ``slope`` is the level gap between the first and last frame before clipping.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fvdm.core.interfaces import PluginConfig
from fvdm.plugins.vtv._common import check_size, rand


class DiffusionForcing:
    """Per-frame levels, uniform i.i.d. or biased towards noisier later frames (causal, pyramid)."""

    class Config(PluginConfig):
        mode: Literal["uniform", "causal", "pyramid"] = "uniform"
        slope: float = Field(1.0, gt=0.0, description="pyramid: level gap from first to last frame")

    def __init__(self, cfg: "DiffusionForcing.Config"):
        self.cfg = cfg

    def __call__(self, batch_size: int, num_frames: int, *, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
        check_size(batch_size, num_frames)
        B, F = batch_size, num_frames
        if self.cfg.mode == "uniform":
            return rand(B, F, generator=generator, device=device)  # (B, F)
        if self.cfg.mode == "causal":
            return rand(B, F, generator=generator, device=device).sort(dim=1).values  # (B, F) non-decreasing
        s = self.cfg.slope
        ramp = torch.arange(F, dtype=torch.float32, device=device) / max(F - 1, 1)  # (F,) 0..1
        c = rand(B, 1, generator=generator, device=device) * (1.0 + s) - s  # (B, 1) in [-s, 1)
        return (c + s * ramp).clamp(0.0, 1.0)  # (B, F)
