"""PTSS (FVDM): with probability p a clip gets independent per-frame levels, otherwise one shared level.

The public FVDM code flips one coin per batch (``coin: per_batch``); the default
flips one per clip, so every batch mixes both modes and the gradient sees both in
every step rather than alternating between whole batches.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fvdm.core.interfaces import PluginConfig
from fvdm.plugins.vtv._common import check_size, rand


class PTSS:
    """Probabilistic timestep sampling: independent per frame with probability p, else synchronized."""

    class Config(PluginConfig):
        p: float = Field(0.2, ge=0.0, le=1.0, description="probability of independent per-frame levels (paper: 0.2)")
        coin: Literal["per_sample", "per_batch"] = Field(
            "per_sample", description="one coin per clip, or one per batch as the public FVDM code"
        )

    def __init__(self, cfg: "PTSS.Config"):
        self.cfg = cfg

    def __call__(self, batch_size: int, num_frames: int, *, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
        check_size(batch_size, num_frames)
        # Fixed draw order (coins, shared, per-frame) keeps results a function of the seed only.
        coins = rand(1 if self.cfg.coin == "per_batch" else batch_size, generator=generator, device=device)
        independent = (coins < self.cfg.p).expand(batch_size)  # (B,); rand in [0, 1): p=0 never, p=1 always
        shared = rand(batch_size, 1, generator=generator, device=device).expand(batch_size, num_frames)  # (B, F)
        per_frame = rand(batch_size, num_frames, generator=generator, device=device)  # (B, F)
        return torch.where(independent[:, None], per_frame, shared)
