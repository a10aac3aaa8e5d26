"""`keyframes_first`: a sampling schedule that denoises keyframes before the frames between them.

Keyframes (every ``stride``-th generated frame, and the last) walk their K steps in rows
0..K; the other frames stay pure noise for ``delay = ceil(lag * K)`` rows and then walk
theirs, so they are denoised while seeing (partly) clean keyframes — a zero-shot use of
a VTV-trained model that a synchronized-timestep model cannot express.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from fvdm.plugins.sampling_schedules.base import MatrixSchedule, MatrixScheduleConfig, pyramid_progress


class KeyframesFirstConfig(MatrixScheduleConfig):
    stride: int = Field(4, ge=1, description="every stride-th generated frame is a keyframe (the last one too)")
    lag: float = Field(0.5, gt=0.0, le=1.0, description="in-between frames start after lag*K rows")


class KeyframesFirst(MatrixSchedule):
    """Keyframes first, then the frames between them: S of shape (K + ceil(lag*K) + 1, F)."""

    Config = KeyframesFirstConfig

    def progress_matrix(self, num_steps: int, num_generated: int) -> torch.Tensor:
        delay = math.ceil(self.cfg.lag * num_steps)
        is_key = torch.zeros(num_generated, dtype=torch.bool)
        is_key[:: self.cfg.stride] = True
        is_key[-1] = True
        offsets = torch.where(is_key, 0, delay)  # (G,)
        return pyramid_progress(num_steps, offsets)
