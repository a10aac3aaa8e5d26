"""Context mix: PTSS plus draws shaped like the sampling-time tasks (some frames clean, the rest one level).

PTSS (p = 0.2) rarely shows the model the configuration image-to-video, interpolation and extension
sample from: a few frames at level 0 next to frames at a high shared level. Under independent
uniform levels, one frame below 0.05 while the other seven are above 0.9 has probability about
0.05 * 8 * 0.9^7 ~ 0.2 of a clip's draws at best, and PTSS makes only a fifth of its clips
independent. Reading the given digits and carrying them forward is learned from exactly those
draws, so a model trained on PTSS alone keeps the given digits poorly (identity F1 near chance after
a short fine-tune). This strategy spends a share ``p_context`` of the clips on task-shaped draws:
a context mask (first frame, first + last, a prefix of 1..F-1 frames, or a random subset, chosen
uniformly among ``masks``) gets level ``context_level`` and the other frames one shared level; the
remaining clips follow PTSS with ``p``. Every draw is still a per-frame timestep vector, so one
model keeps unconditional generation (the shared rows) and every context task at once.

Pair it with ``train.clean_frame_loss: false``: a quarter to a half of its frames sit at level 0, where
the loss target cannot be read from the input; averaging over the other frames gave higher identity at
every budget measured on digits (benchmarks/results/digits_context_study).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

from fvdm.core.interfaces import PluginConfig
from fvdm.plugins.vtv._common import check_size, rand

Mask = Literal["first", "ends", "prefix", "random"]


class ContextMix:
    """u (B, F): with probability p_context a task-shaped clean context, else PTSS(p)."""

    class Config(PluginConfig):
        p_context: float = Field(0.5, ge=0.0, le=1.0, description="share of clips with a task-shaped clean context")
        p: float = Field(0.2, ge=0.0, le=1.0, description="PTSS's p for the other clips: independent levels")
        masks: list[Mask] = Field(default_factory=lambda: ["first", "ends", "prefix", "random"], min_length=1,
                                  description="context shapes, drawn uniformly: first frame (image-to-video), "
                                              "first + last (interpolation), a prefix (extension), a random subset "
                                              "(infill)")
        context_level: float = Field(0.0, ge=0.0, lt=1.0, description="the context frames' level (0 = clean)")

        @field_validator("masks")
        @classmethod
        def _distinct(cls, v: list[str]) -> list[str]:
            if len(set(v)) != len(v):
                raise ValueError(f"masks repeats a shape ({v}); list each at most once")
            return v

    def __init__(self, cfg: "ContextMix.Config"):
        self.cfg = cfg

    def context_masks(self, coins: torch.Tensor, kinds: torch.Tensor, cut: torch.Tensor,
                      subset: torch.Tensor) -> torch.Tensor:
        """(B,) coin, kind index, prefix draw in [0, 1), (B, F) subset draws -> (B, F) bool context frames."""
        b, f = subset.shape
        idx = torch.arange(f, device=subset.device)  # (F,)
        shapes = {
            "first": idx[None] == 0,  # (1, F)
            "ends": (idx[None] == 0) | (idx[None] == f - 1),
            # 1..F-1 given frames (F = 1: the one frame), so at least one frame is always generated
            "prefix": idx[None] < (1 + (cut * max(f - 1, 1)).floor().long().clamp(max=max(f - 2, 0)))[:, None],
            # each frame given with probability 1/2, never all of them
            "random": subset < 0.5,
        }
        ctx = torch.zeros(b, f, dtype=torch.bool, device=subset.device)
        for i, name in enumerate(self.cfg.masks):
            ctx |= (kinds == i)[:, None] & shapes[name].expand(b, f)
        ctx &= ~ctx.all(dim=1, keepdim=True)  # an all-given draw (F = 1) teaches nothing: keep it all-noisy
        return ctx & (coins < self.cfg.p_context)[:, None]

    def __call__(self, batch_size: int, num_frames: int, *, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
        check_size(batch_size, num_frames)
        # Fixed draw order (context coin, shape, prefix, subset, PTSS coin, shared, per-frame): a function of the seed.
        coins = rand(batch_size, generator=generator, device=device)  # (B,)
        kinds = (rand(batch_size, generator=generator, device=device) * len(self.cfg.masks)).long()  # (B,)
        kinds = kinds.clamp(max=len(self.cfg.masks) - 1)
        cut = rand(batch_size, generator=generator, device=device)  # (B,)
        subset = rand(batch_size, num_frames, generator=generator, device=device)  # (B, F)
        ptss_coin = rand(batch_size, generator=generator, device=device)  # (B,)
        shared = rand(batch_size, 1, generator=generator, device=device).expand(batch_size, num_frames)  # (B, F)
        per_frame = rand(batch_size, num_frames, generator=generator, device=device)  # (B, F)
        ctx = self.context_masks(coins, kinds, cut, subset)  # (B, F)
        # context clips: the generated frames share one level, as every task samples them
        independent = (ptss_coin < self.cfg.p)[:, None] & ~(coins < self.cfg.p_context)[:, None]  # (B, 1)
        u = torch.where(independent, per_frame, shared)  # (B, F)
        return torch.where(ctx, torch.full_like(u, self.cfg.context_level), u)
