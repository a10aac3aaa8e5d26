"""Synchronized levels: one draw per clip, shared by all its frames (standard video diffusion)."""

from __future__ import annotations

import torch

from fvdm.core.interfaces import PluginConfig
from fvdm.plugins.vtv._common import check_size, rand


class Synchronized:
    """One u per clip, repeated over frames: u (B, F) with equal columns."""

    class Config(PluginConfig):
        pass

    def __init__(self, cfg: "Synchronized.Config"):
        self.cfg = cfg

    def __call__(self, batch_size: int, num_frames: int, *, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
        check_size(batch_size, num_frames)
        u = rand(batch_size, 1, generator=generator, device=device)  # (B, 1)
        return u.expand(batch_size, num_frames).contiguous()  # (B, F)
