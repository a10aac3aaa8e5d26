"""Shared machinery of the matrix builders: integer progress matrix -> levels.

Every builder computes an integer matrix ``M`` (rows, G) over the G generated
(non-context) frames with entries in 0..K (K = the frame has not started, 0 = done),
Diffusion-Forcing style. Levels come from the spacing: ``S = s[K - M]``, context
columns are 0. With uniform spacing this is exactly ``S = M / K``.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from pydantic import Field

from fvdm.core.interfaces import PluginConfig
from fvdm.plugins.sampling_schedules.spacing import spacing_levels


class MatrixScheduleConfig(PluginConfig):
    spacing: Literal["uniform", "leading", "leading_multistep", "trailing", "flow"] = Field(
        "uniform", description="leading = diffusers DDIM/DDPM's; leading_multistep = DPMSolverMultistep/UniPC's; "
                               "flow = diffusers' use_flow_sigmas grid (Wan's UniPC)")
    shift: float = Field(1.0, gt=0, description="rectified-flow timestep shift s t / (1 + (s-1) t) on every level "
                                                "(Wan's flow_shift); 1 = none")
    steps_offset: int = Field(1, ge=0, description="offset of the leading spacings (diffusers steps_offset)")


def context_mask(context: torch.Tensor | Sequence[bool] | None, num_frames: int) -> torch.Tensor:
    """(F,) bool mask of context frames; clear errors for a wrong length or all-context."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1 (got {num_frames})")
    if context is None:
        return torch.zeros(num_frames, dtype=torch.bool)
    ctx = torch.as_tensor(context, dtype=torch.bool).cpu()
    if ctx.ndim == 2:
        if not bool((ctx == ctx[:1]).all()):
            raise ValueError("a sampling matrix is shared by the batch: context masks must be equal across the "
                             "batch; build one matrix per sample for per-sample masks")
        ctx = ctx[0]
    if ctx.ndim != 1 or ctx.numel() != num_frames:
        raise ValueError(f"context mask has shape {tuple(ctx.shape)} but the matrix has F={num_frames} frames; "
                         f"pass a ({num_frames},) bool mask (frame count mismatch)")
    if bool(ctx.all()):
        raise ValueError(f"context covers all {num_frames} frames: nothing left to generate; "
                         "leave at least one frame unknown")
    return ctx


class MatrixSchedule:
    """Base class: ``builder(num_steps, num_frames, *, context=None, num_timesteps=None) -> S (rows, F)``."""

    Config = MatrixScheduleConfig

    def __init__(self, cfg: MatrixScheduleConfig):
        self.cfg = cfg

    def progress_matrix(self, num_steps: int, num_generated: int) -> torch.Tensor:
        """Integer matrix (rows, G) with entries 0..K; row 0 all K, last row all 0."""
        raise NotImplementedError

    def __call__(
        self, num_steps: int, num_frames: int, *, context: torch.Tensor | Sequence[bool] | None = None,
        num_timesteps: int | None = None,
    ) -> torch.Tensor:
        if int(num_steps) != num_steps or num_steps < 1:
            raise ValueError(f"num_steps K must be an integer >= 1 (got {num_steps}); use e.g. --steps 50")
        ctx = context_mask(context, int(num_frames))
        gen = (~ctx).nonzero().flatten()
        m = self.progress_matrix(int(num_steps), int(gen.numel()))  # (rows, G)
        levels = spacing_levels(int(num_steps), spacing=self.cfg.spacing, num_timesteps=num_timesteps,
                                shift=self.cfg.shift, steps_offset=self.cfg.steps_offset)
        s = torch.zeros(m.shape[0], int(num_frames), dtype=torch.float64)
        s[:, gen] = levels[int(num_steps) - m]
        return s.to(torch.float32)


def pyramid_progress(num_steps: int, offsets: torch.Tensor) -> torch.Tensor:
    """``M[m, j] = clip(K + offsets[j] - m, 0, K)`` for m = 0 .. K + max(offsets)."""
    rows = num_steps + int(offsets.max()) + 1
    m = torch.arange(rows).unsqueeze(1)
    return (num_steps + offsets.unsqueeze(0) - m).clamp(0, num_steps)
