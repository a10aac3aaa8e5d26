"""Pyramid schedule (Diffusion Forcing): later frames start later.

``M[m, j] = clip(K + floor(j·u) - m, 0, K)`` over the generated frames j = 0..G-1
(context frames are skipped, so the first unknown frame starts at once); rows
m = 0 .. K + floor((G-1)·u). ``u = 0`` is the standard schedule.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from fvdm.plugins.sampling_schedules.base import MatrixSchedule, MatrixScheduleConfig, pyramid_progress


class PyramidConfig(MatrixScheduleConfig):
    u: float = Field(1.0, ge=0, description="uncertainty scale: frame j starts floor(j*u) rows after frame 0")


class PyramidSchedule(MatrixSchedule):
    """Diffusion Forcing pyramid(u): M[m, j] = clip(K + floor(j*u) - m, 0, K)."""

    Config = PyramidConfig

    def progress_matrix(self, num_steps: int, num_generated: int) -> torch.Tensor:
        offsets = torch.tensor([math.floor(j * self.cfg.u + 1e-9) for j in range(num_generated)])
        return pyramid_progress(num_steps, offsets)
