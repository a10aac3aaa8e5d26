"""Trapezoid schedule: the pyramid mirrored from both ends (ends first, middle last).

``d_j = min(j, G-1-j)``, ``M[m, j] = clip(K + floor(d_j·u) - m, 0, K)``; rows
m = 0 .. K + floor(max_j d_j · u). Suits interpolation (frames near both given ends
settle first).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from fvdm.plugins.sampling_schedules.base import MatrixSchedule, MatrixScheduleConfig, pyramid_progress


class TrapezoidConfig(MatrixScheduleConfig):
    u: float = Field(1.0, ge=0, description="uncertainty scale per frame of distance from the nearer end")


class TrapezoidSchedule(MatrixSchedule):
    """Pyramid(u) mirrored from both ends: M[m, j] = clip(K + floor(min(j, G-1-j)*u) - m, 0, K)."""

    Config = TrapezoidConfig

    def progress_matrix(self, num_steps: int, num_generated: int) -> torch.Tensor:
        g = num_generated
        offsets = torch.tensor([math.floor(min(j, g - 1 - j) * self.cfg.u + 1e-9) for j in range(g)])
        return pyramid_progress(num_steps, offsets)
