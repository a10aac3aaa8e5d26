"""Independent levels: one draw per frame (FVDM's fully vectorized timestep)."""

from __future__ import annotations

import torch

from fvdm.core.interfaces import PluginConfig
from fvdm.plugins.vtv._common import check_size, rand


class Independent:
    """One u per frame, i.i.d. U[0, 1): u (B, F)."""

    class Config(PluginConfig):
        pass

    def __init__(self, cfg: "Independent.Config"):
        self.cfg = cfg

    def __call__(self, batch_size: int, num_frames: int, *, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
        check_size(batch_size, num_frames)
        return rand(batch_size, num_frames, generator=generator, device=device)  # (B, F)
