"""Autoregressive schedule: pyramid with u = K, one frame fully denoised after another."""

from __future__ import annotations

import torch

from fvdm.plugins.sampling_schedules.base import MatrixSchedule, pyramid_progress


class AutoregressiveSchedule(MatrixSchedule):
    """Frame j runs its K steps after frame j-1 finished: M[m, j] = clip(K + j*K - m, 0, K)."""

    def progress_matrix(self, num_steps: int, num_generated: int) -> torch.Tensor:
        return pyramid_progress(num_steps, torch.arange(num_generated) * num_steps)
